"""`edgefusion demo`: the README's main job, on the bundled phantom with the bundled weights."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from EdgeFusionLib.cli import main
from EdgeFusionLib.demo import SAMPLE_DIR


def test_demo_fuses_the_phantom_and_draws_the_comparison(tmp_path):
    assert main(["demo", "--out-dir", str(tmp_path)]) == 0
    mri = sitk.ReadImage(str(SAMPLE_DIR / "EdgeFusionPhantom-MRI.nrrd"))
    ct_fused = sitk.ReadImage(str(tmp_path / "phantom-mri-ct-fused.nrrd"))
    spect_fused = sitk.ReadImage(str(tmp_path / "phantom-mri-spect-fused.nrrd"))
    for fused in (ct_fused, spect_fused):
        assert fused.GetSize() == mri.GetSize()
        assert np.allclose(fused.GetSpacing(), mri.GetSpacing()) and np.allclose(fused.GetOrigin(), mri.GetOrigin())
        assert np.allclose(fused.GetDirection(), mri.GetDirection())
    assert ct_fused.GetNumberOfComponentsPerPixel() == 1
    assert spect_fused.GetNumberOfComponentsPerPixel() == 3
    ct = sitk.GetArrayFromImage(ct_fused)
    assert 0 <= ct.min() and ct.max() <= 1 and ct.std() > 0.05  # a real image, not a constant
    # The phantom's skull is bright on CT and dark on the T1 MRI: where it is, the fusion must be bright.
    mri01, ct01 = windowed_sources("ct")
    skull = (ct01 > 0.9) & (mri01 < 0.3)
    assert skull.sum() > 1000  # the comparison below is over the skull, not over a few voxels
    assert np.median(ct[skull]) > 0.8 > np.median(mri01[skull]) + 0.5  # the MRI alone would fail this
    # Soft tissue is the MRI's: where the CT is flat mid-grey brain, the MRI's grey/white contrast stays.
    brain = (ct01 > 0.3) & (ct01 < 0.6)
    # 0.89 since the MRI window is learnt from its tissue (gamma, brain median at 0.6) and the default keeps
    # the CT's bright structures; it was 0.9+ with the linear window. Still: the MRI's soft tissue, not the CT's.
    assert np.corrcoef(ct[brain], mri01[brain])[0, 1] > 0.85
    spect = sitk.GetArrayFromImage(spect_fused)
    assert (spect[..., 0].astype(int) - spect[..., 2]).max() > 50  # hot colour map: red-dominant voxels
    figure = Image.open(tmp_path / "comparison.png")
    assert figure.size[0] > 600 and figure.size[1] > 400
    assert np.asarray(figure.convert("L")).std() > 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "comparison.png", "mridir-mr-ct-fused.nrrd", "mridir-mr-ct.tfm", "phantom-mri-ct-fused.nrrd",
        "phantom-mri-spect-fused.nrrd", "registration.png"]
    check_the_real_pair(tmp_path)


def check_the_real_pair(folder):
    """The MRI-DIR CT, registered by the demo's transform, puts its bone where the fusion is bright."""
    from EdgeFusionLib.demo import MRIDIR_DIR
    from EdgeFusionLib.registration import read_transform

    mri = sitk.ReadImage(str(MRIDIR_DIR / "MRIDIR-Porcine-MR-T2.nrrd"))
    ct = sitk.ReadImage(str(MRIDIR_DIR / "MRIDIR-Porcine-CT.nrrd"))
    fused = sitk.ReadImage(str(folder / "mridir-mr-ct-fused.nrrd"))
    assert fused.GetSize() == mri.GetSize() and np.allclose(fused.GetOrigin(), mri.GetOrigin())
    transform = read_transform(folder / "mridir-mr-ct.tfm")
    assert np.degrees(np.arccos((np.trace(np.reshape(transform.GetMatrix(), (3, 3))) - 1) / 2)) > 170  # turned
    on_mri = sitk.GetArrayFromImage(sitk.Resample(ct, mri, transform, sitk.sitkLinear, -1024.0, sitk.sitkFloat32))
    bone = on_mri > 400  # HU
    assert bone.sum() > 300
    values = sitk.GetArrayFromImage(fused)
    assert np.median(values[bone]) > 0.8 > np.median(values[~bone & (on_mri > -200)])
    # by its header alone the CT's bone would land in soft tissue, where the fusion is not bright
    unregistered = sitk.GetArrayFromImage(sitk.Resample(ct, mri, sitk.Transform(), sitk.sitkLinear, -1024.0,
                                                        sitk.sitkFloat32))
    assert np.median(values[unregistered > 400]) < 0.8
    assert Image.open(folder / "registration.png").size[0] > 800


def windowed_sources(modality):
    """The phantom MRI and the other volume on the MRI grid, each through its fusion window, in [0, 1]."""
    from EdgeFusionLib.fusion.intensity import window_for
    from EdgeFusionLib.fusion.pipeline import prepare_inputs
    from EdgeFusionLib.io.images import read_image

    names = {"ct": "EdgeFusionPhantom-CT.nrrd", "spect": "EdgeFusionPhantom-SPECT.nrrd"}
    mri, other = prepare_inputs(read_image(SAMPLE_DIR / "EdgeFusionPhantom-MRI.nrrd"),
                                read_image(SAMPLE_DIR / names[modality]), modality)
    mri_values, other_values = sitk.GetArrayFromImage(mri), sitk.GetArrayFromImage(other)
    return window_for(mri_values, "mri").apply(mri_values), window_for(other_values, modality).apply(other_values)


def test_demo_refuses_unusable_output_paths_before_fusing(tmp_path, capsys, monkeypatch):
    import EdgeFusionLib.fusion.pipeline as fusion

    monkeypatch.setattr(fusion, "fuse_images", lambda *a, **k: pytest.fail("fusion started"))
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    assert main(["demo", "--out-dir", str(tmp_path / "a-file")]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err
    (tmp_path / "out" / "comparison.png").mkdir(parents=True)  # the figure's path is taken by a folder
    assert main(["demo", "--out-dir", str(tmp_path / "out")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["comparison.png"]
