"""``edgefusion demo``: fuse the bundled phantom (MRI + CT, MRI + SPECT) and draw a comparison.

Uses the bundled weights and the default method of each task. Writes, in the output
folder: ``phantom-mri-ct-fused.nrrd`` (scalar), ``phantom-mri-spect-fused.nrrd``
(RGB; the scalar SPECT is shown through the "hot" colour map, as a viewer would) and
``comparison.png`` (middle axial slice: inputs on the MRI grid and the fusions).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from . import RESOURCES_DIR

SAMPLE_DIR = RESOURCES_DIR / "SampleData"
SPECT_COLOUR_MAP = "hot"


def sample_path(name: str, folder: Path = SAMPLE_DIR) -> Path:
    """A sample file of ``folder``, after checking its sha256 against the folder's ``sampledata.json``."""
    from .errors import InputError
    from .model.weights import sha256_of

    registry = json.loads((folder / "sampledata.json").read_text(encoding="utf-8"))
    path = folder / name
    if not path.is_file() or sha256_of(path) != registry["files"][name]["sha256"]:
        raise InputError(f"sample file {path} is missing or does not match its sha256 in sampledata.json; "
                         "regenerate it (make_phantom.py, or scripts/make_mridir_sample.py for MRIDIR/)")
    return path


def run_demo(out_dir: Path, device: str = "auto") -> int:
    import matplotlib

    from .cli import _colormap
    from .errors import InputError
    from .fusion.pipeline import fuse_images, prepare_inputs
    from .io.images import check_writable, read_image, write_image

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the output folder {out_dir}: {error.strerror}") from None
    outputs = {"ct": out_dir / "phantom-mri-ct-fused.nrrd", "spect": out_dir / "phantom-mri-spect-fused.nrrd"}
    figure_path = out_dir / "comparison.png"
    for path in (*outputs.values(), figure_path):
        check_writable(path)
    mri = read_image(sample_path("EdgeFusionPhantom-MRI.nrrd"), "MRI")
    others = {"ct": read_image(sample_path("EdgeFusionPhantom-CT.nrrd"), "CT"),
              "spect": read_image(sample_path("EdgeFusionPhantom-SPECT.nrrd"), "SPECT")}
    tables = {"ct": None, "spect": _colormap(SPECT_COLOUR_MAP)}
    fused = {}
    for modality, other in others.items():
        started = time.perf_counter()
        fused[modality] = fuse_images(mri, other, modality, device=device, colour_table=tables[modality])
        print(f"fused phantom MRI + {modality.upper()} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    for modality, image in fused.items():
        write_image(image, outputs[modality])

    matplotlib.use("Agg")
    _draw(mri, {m: prepare_inputs(mri, o, m, tables[m])[1] for m, o in others.items()}, fused, tables, figure_path)
    for path in (*outputs.values(), figure_path):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _draw(mri, resampled: dict, fused: dict, tables: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from .fusion.colour import apply_colour_table
    from .io.files import atomic_path
    from .fusion.intensity import window_for

    middle = mri.GetSize()[2] // 2
    mri_slice = sitk.GetArrayViewFromImage(mri)[middle]
    mri01 = window_for(sitk.GetArrayViewFromImage(mri), "mri").apply(mri_slice)
    figure, axes = plt.subplots(2, 3, figsize=(9, 6.4), constrained_layout=True)
    for row, modality in enumerate(("ct", "spect")):
        volume = sitk.GetArrayViewFromImage(resampled[modality])
        other01 = window_for(volume, modality).apply(volume[middle])
        if tables[modality] is not None:
            other01 = apply_colour_table(other01, tables[modality])
        result = sitk.GetArrayViewFromImage(fused[modality])[middle]
        panels = [(mri01, "MRI"), (other01, f"{modality.upper()} on the MRI grid"), (result, "EH-DRAN fusion")]
        for axis, (image, title) in zip(axes[row], panels):
            axis.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
            axis.set_title(title)
            axis.axis("off")
    figure.suptitle("EdgeFusion demo: synthetic phantom (CC0), middle axial slice")
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=100)
    finally:
        plt.close(figure)
