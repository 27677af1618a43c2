"""The bundled EH-DRAN weights: manifest sha256, size, loading, and reconstruction quality.

The reconstruction check reads a validation-case image of the development data
(``../shared/data/harvard``, never copied into the repository) at test time; the
training never saw that case. It is skipped only when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from EdgeFusionLib.evaluation import metrics
from EdgeFusionLib.model import weights
from EdgeFusionLib.io.atlas import VALIDATION_CASES, read_grey01, task_pairs
from EdgeFusionLib.modality import TASKS
from EdgeFusionLib.model.network import EHDRAN

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "harvard"
MAX_BYTES = 3 * 1024 * 1024

#: Minimum reconstruction PSNR (dB) of the held-back image, both modalities: the value
#: measured for the bundled weights (Resources/Models/README.md) minus a 3 dB margin.
MIN_PSNR = {
    "MRI-CT": 43.0,  # measured: MRI 48.10 dB, CT 46.17 dB (16012.png)
    "MRI-SPECT": 45.0,  # measured: MRI 48.88 dB, SPECT-Y 54.44 dB (21013.png)
    "MRI-PET": 33.0,  # measured: MRI 36.36 dB, PET-Y 48.04 dB (25064.png)
}


def bundled_tasks():
    return sorted(weights.read_manifest()["models"])


def test_all_three_tasks_are_bundled():
    assert bundled_tasks() == sorted(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_weights_match_manifest(task):
    folder = weights.models_dir()
    entry = weights.read_manifest()["models"][task]
    path = folder / entry["file"]
    assert path.suffix == ".safetensors" and path.stat().st_size == entry["bytes"] < MAX_BYTES
    assert weights.sha256_of(path) == entry["sha256"]
    config = folder / entry["training_config_file"]
    assert config.is_file(), "the committed config that produced the weights"
    model = weights.load_model(task)
    assert isinstance(model, EHDRAN) and not model.training


def test_a_changed_weights_file_or_a_broken_manifest_is_refused(tmp_path):
    import json
    import shutil

    from EdgeFusionLib.errors import InputError

    entry = weights.read_manifest()["models"]["MRI-CT"]
    data = bytearray((weights.models_dir() / entry["file"]).read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    (tmp_path / entry["file"]).write_bytes(bytes(data))
    shutil.copy(weights.models_dir() / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(InputError, match="corrupt or was replaced"):
        weights.load_model("MRI-CT", folder=tmp_path)
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="cannot read the weights manifest"):
        weights.load_model("MRI-CT", folder=tmp_path)
    unchecked = {key: value for key, value in entry.items() if key != "sha256"}
    (tmp_path / "manifest.json").write_text(json.dumps({"models": {"MRI-CT": unchecked}}), encoding="utf-8")
    with pytest.raises(InputError, match="needs a \"file\" and a \"sha256\""):
        weights.load_model("MRI-CT", folder=tmp_path)


def held_back_pair(task):
    """The middle slice of the first validation case of ``task``."""
    pairs = [pair for pair in task_pairs(DATA, task) if pair.case == VALIDATION_CASES[task][0]]
    return pairs[len(pairs) // 2]


@pytest.mark.skipif(not DATA.is_dir(), reason=f"development data not present at {DATA}")
@pytest.mark.parametrize("task", sorted(TASKS))
def test_reconstructs_held_back_image(task):
    model = weights.load_model(task)
    pair = held_back_pair(task)
    for path in (pair.mri_path, pair.other_path):
        image, _ = read_grey01(path)
        with torch.no_grad():
            recon = model(torch.from_numpy(image)[None, None]).clamp(0, 1)[0, 0].numpy()
        score = metrics.psnr(recon, image, image)
        assert score > MIN_PSNR[task], f"{task} {path.name}: PSNR {score:.2f} dB"
        assert np.isfinite(recon).all()


def test_default_mri_ct_fusion_keeps_a_small_finding_only_the_ct_shows():
    """The bundled phantom's 4 mm calcification is white in the CT (420 HU, above the window) and
    grey in the MRI. The default MRI-CT fusion must show it as the CT does: with 5x5 or 7x7 activity
    boxes the MRI's surroundings outvoted it and it vanished (rules.LOCAL_ACTIVITY_WINDOW)."""
    import importlib.util

    import SimpleITK as sitk

    from EdgeFusionLib.demo import SAMPLE_DIR, sample_path
    from EdgeFusionLib.fusion.pipeline import fuse_images, prepare_inputs
    from EdgeFusionLib.fusion.intensity import window_for
    from EdgeFusionLib.io.images import read_image

    spec = importlib.util.spec_from_file_location("make_phantom", SAMPLE_DIR / "make_phantom.py")
    phantom = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(phantom)
    mri = read_image(sample_path("EdgeFusionPhantom-MRI.nrrd"), "MRI")
    ct = read_image(sample_path("EdgeFusionPhantom-CT.nrrd"), "CT")
    mri_on_grid, ct_on_grid = prepare_inputs(mri, ct, "ct")
    fused = fuse_images(mri, ct, "ct", device="cpu")
    index = mri.TransformPhysicalPointToIndex([float(v) for v in phantom.CALCIFICATION_CENTRE])
    at_finding = {}
    for name, image in (("mri", mri_on_grid), ("ct", ct_on_grid)):
        values = sitk.GetArrayFromImage(image)
        at_finding[name] = float(window_for(values, name).apply(np.array([image.GetPixel(index)], np.float32))[0])
    assert at_finding["ct"] > 0.9 and at_finding["mri"] < 0.6  # the finding: bright in the CT only
    assert fused.GetPixel(index) > 0.9 * at_finding["ct"]
