"""The sample phantoms: checksums, regeneration, licence, SampleData registration, loading in Slicer."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgefusion_slicer_support import REPO

from EdgeFusionMRML import sampledata

FOLDER = REPO / "Resources" / "SampleData"
MAX_TOTAL_BYTES = 1024 * 1024


def load_generator():
    spec = importlib.util.spec_from_file_location("make_phantom", FOLDER / "make_phantom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def registry():
    return sampledata.read_registry(FOLDER)


def test_registry_checksums_match_the_files(registry):
    for file_name, entry in registry["files"].items():
        assert hashlib.sha256((FOLDER / file_name).read_bytes()).hexdigest() == entry["sha256"], file_name


def test_licence_provenance_and_size_are_stated(registry):
    assert registry["licence"] == "CC0-1.0"
    assert "make_phantom.py" in registry["provenance"] and "not patient data" in registry["provenance"]
    files = [FOLDER / name for name in registry["files"]] + [FOLDER / sample["thumbnail"] for sample in registry["samples"]]
    assert sum(path.stat().st_size for path in files) < MAX_TOTAL_BYTES
    for path in files:  # everything lives in this folder: never the atlas images of ../shared
        assert path.resolve().parent == FOLDER.resolve()


def test_phantom_regenerates_to_the_stored_volumes(registry):
    import SimpleITK as sitk

    generator = load_generator()
    images = generator.make_images()
    for modality, file_name in generator.FILE_NAMES.items():
        stored = sitk.ReadImage(str(FOLDER / file_name))
        regenerated = images[modality]
        np.testing.assert_array_equal(sitk.GetArrayFromImage(stored), sitk.GetArrayFromImage(regenerated))
        assert stored.GetPixelID() == regenerated.GetPixelID()
        np.testing.assert_allclose(stored.GetSpacing(), regenerated.GetSpacing())
        np.testing.assert_allclose(stored.GetOrigin(), regenerated.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(stored.GetDirection(), regenerated.GetDirection(), atol=1e-12)
        assert file_name in registry["files"]


def test_ct_and_spect_grids_differ_from_the_mri_grid():
    """The examples must exercise resampling: other size, spacing, origin and direction."""
    import SimpleITK as sitk

    mri = sitk.ReadImage(str(FOLDER / "EdgeFusionPhantom-MRI.nrrd"))
    for name in ("EdgeFusionPhantom-CT.nrrd", "EdgeFusionPhantom-SPECT.nrrd"):
        other = sitk.ReadImage(str(FOLDER / name))
        assert other.GetSize() != mri.GetSize()
        assert not np.allclose(other.GetSpacing(), mri.GetSpacing())
        assert not np.allclose(other.GetOrigin(), mri.GetOrigin())
        assert not np.allclose(other.GetDirection(), mri.GetDirection())
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(FOLDER / "EdgeFusionPhantom-CT.nrrd")))
    assert ct.min() <= -1000 and ct.max() >= 1000, "CT in Hounsfield units with air and bone"


def test_sample_data_sources_for_the_sample_data_module(registry):
    sources = sampledata.sample_data_sources(FOLDER)
    assert [source["sampleName"] for source in sources] == ["EdgeFusionPhantomMRCT", "EdgeFusionPhantomMRSPECT"]
    for source in sources:
        assert source["category"] == "EdgeFusion"
        assert Path(source["thumbnailFileName"]).is_file()
        assert len(source["uris"]) == len(source["fileNames"]) == len(source["nodeNames"]) == len(source["checksums"]) == 2
        for uri, file_name, checksum in zip(source["uris"], source["fileNames"], source["checksums"]):
            assert uri.startswith("file://") and uri.endswith(file_name)
            assert checksum == "SHA256:" + registry["files"][file_name]["sha256"]
    assert sources[0]["nodeNames"] == ["EdgeFusionPhantom-MRI", "EdgeFusionPhantom-CT"]


def test_the_real_mridir_pair_is_registered_with_its_licence_and_source(monkeypatch):
    """The MRI-DIR sample (CC BY 4.0) lives in its own folder with its own registry, README and licence."""
    folder = FOLDER / "MRIDIR"
    registry = sampledata.read_registry(folder)
    assert registry["licence"] == "CC-BY-4.0" and "MRI-DIR" in registry["provenance"]
    for file_name, entry in registry["files"].items():
        assert hashlib.sha256((folder / file_name).read_bytes()).hexdigest() == entry["sha256"], file_name
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in readme and "Ger RB" in readme and "BinShrink" in readme
    files = [folder / name for name in registry["files"]] + [folder / registry["samples"][0]["thumbnail"]]
    assert sum(path.stat().st_size for path in files) < 4 * 1024 * 1024  # a few MB
    monkeypatch.setattr(sampledata, "sample_data_folder", lambda: FOLDER)
    names = [source["sampleName"] for source in sampledata.sample_data_sources()]
    assert names == ["EdgeFusionPhantomMRCT", "EdgeFusionPhantomMRSPECT", "EdgeFusionMRIDIRPorcineMRCT"]
    assert sampledata.sample_file("MRIDIR-Porcine-CT") == folder / "MRIDIR-Porcine-CT.nrrd"


def test_the_mridir_sample_regenerates_from_the_shared_volumes():
    import SimpleITK as sitk

    source = REPO.parent / "shared" / "data" / "mridir"
    if not (source / "MRIDIR-porcine-head-CT.nrrd").is_file():
        pytest.skip("../shared/data/mridir is not here")
    spec = importlib.util.spec_from_file_location("make_mridir_sample", REPO / "scripts" / "make_mridir_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, image in module.make_images(source).items():
        stored = sitk.ReadImage(str(FOLDER / "MRIDIR" / name))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(stored), sitk.GetArrayFromImage(image))
        np.testing.assert_allclose(stored.GetOrigin(), image.GetOrigin())
        np.testing.assert_allclose(stored.GetDirection(), image.GetDirection())


def test_sample_file_refuses_a_corrupted_file(tmp_path, registry):
    import json
    import shutil

    for name in registry["files"]:
        shutil.copy(FOLDER / name, tmp_path / name)
    (tmp_path / sampledata.REGISTRY_NAME).write_text(json.dumps(registry), encoding="utf-8")
    (tmp_path / "EdgeFusionPhantom-CT.nrrd").write_bytes(b"not a volume")
    assert sampledata.sample_file("EdgeFusionPhantom-MRI", tmp_path).is_file()
    with pytest.raises(ValueError, match="sha256"):
        sampledata.sample_file("EdgeFusionPhantom-CT", tmp_path)


def test_samples_load_in_slicer_with_a_recognisable_modality():
    pytest.importorskip("slicer", reason="Slicer's MRML libraries (pip install slicer-core) are not installed")
    from edgefusion_slicer_support import make_slicer_scene

    from EdgeFusionMRML.logic import VolumeFusionLogic

    app = make_slicer_scene()
    logic = VolumeFusionLogic(app.scene)
    guesses = {}
    for name in ("EdgeFusionPhantom-MRI", "EdgeFusionPhantom-CT", "EdgeFusionPhantom-SPECT"):
        node = sampledata.load_sample_volume(name, app.volumes_logic)
        assert node.GetName() == name and node.GetImageData() is not None
        guess = logic.guess_modality(node).modality
        guesses[name] = guess.name if guess else None
    assert guesses == {"EdgeFusionPhantom-MRI": None, "EdgeFusionPhantom-CT": "ct", "EdgeFusionPhantom-SPECT": "spect"}
