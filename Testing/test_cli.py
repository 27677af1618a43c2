"""The edgefusion command line: outputs, the batch contract, and one-line errors that write nothing."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from EdgeFusionLib.cli import main

from conftest import phantom_slice


def png(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def pair(tmp_path):
    mri = png(tmp_path / "mri.png", (phantom_slice(32, 32, 0) * 255).astype(np.uint8))
    ct = png(tmp_path / "ct.png", (phantom_slice(32, 32, 1) ** 2 * 255).astype(np.uint8))
    return mri, ct


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fuse_png_pair_with_a_baseline(tmp_path, pair, capsys):
    out = tmp_path / "fused.png"
    code, _, err = run(capsys, "fuse", *pair, "-o", out, "--modality", "ct", "--method", "pixel-max")
    assert code == 0, err
    fused = np.asarray(Image.open(out))
    expected = np.maximum(np.asarray(Image.open(pair[0])), np.asarray(Image.open(pair[1])))
    assert fused.shape == (32, 32) and np.array_equal(fused, expected)


def test_fuse_volume_keeps_the_mri_geometry(tmp_path, capsys):
    mri = sitk.GetImageFromArray(np.stack([phantom_slice(20, 24, s) for s in range(5)]) * 500)
    mri.SetSpacing((0.9, 0.9, 3.0))
    mri.SetOrigin((10.0, -5.0, 2.0))
    ct = sitk.GetImageFromArray(np.full((6, 22, 26), 40.0, np.float32) + np.arange(26, dtype=np.float32) * 40 - 1000)
    ct.SetSpacing((1.0, 1.0, 2.6))
    ct.SetOrigin((9.0, -6.0, 1.0))
    sitk.WriteImage(mri, str(tmp_path / "mri.nrrd"))
    sitk.WriteImage(ct, str(tmp_path / "patient_ct.nii.gz"))
    code, _, err = run(capsys, "fuse", tmp_path / "mri.nrrd", tmp_path / "patient_ct.nii.gz",
                       "-o", tmp_path / "out.nii.gz", "--method", "pixel-average",  # modality from the file name
                       "--register", "none")  # placed by the headers, as they say
    assert code == 0, err
    out = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert out.GetSize() == mri.GetSize()
    assert np.allclose(out.GetSpacing(), mri.GetSpacing()) and np.allclose(out.GetOrigin(), mri.GetOrigin(), atol=1e-4)


def write_bad_inputs(tmp_path):
    """name -> (mri path, other path, expected words in the message)."""
    good = (phantom_slice(16, 16) * 255).astype(np.uint8)
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((2, 3, 4, 5)).astype(np.float32),
                                           isVector=False), str(tmp_path / "four_d.nii.gz"))
    nan = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(tmp_path / "nan.nrrd"))
    far = sitk.GetImageFromArray(np.random.default_rng(1).random((3, 8, 8)).astype(np.float32))
    far.SetOrigin((900.0, 900.0, 900.0))
    sitk.WriteImage(far, str(tmp_path / "far.nii.gz"))
    rgb = np.random.default_rng(2).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    return {
        "missing file": (tmp_path / "nope.png", png(tmp_path / "good.png", good), "not found"),
        "unreadable file": (tmp_path / "garbage.png", tmp_path / "good.png", "cannot read"),
        "4D image": (tmp_path / "four_d.nii.gz", tmp_path / "good.png", "4D"),
        "vector MRI": (png(tmp_path / "rgb.png", rgb), tmp_path / "good.png", "single-channel"),
        "constant image": (png(tmp_path / "flat.png", np.zeros((16, 16), np.uint8)), tmp_path / "good.png", "constant"),
        "NaN": (tmp_path / "nan.nrrd", tmp_path / "nan.nrrd", "NaN"),
        "mismatched 2D sizes": (tmp_path / "good.png", png(tmp_path / "big.png", np.pad(good, 2)), "different sizes"),
    }


@pytest.mark.parametrize("problem", ["missing file", "unreadable file", "4D image", "vector MRI", "constant image",
                                     "NaN", "mismatched 2D sizes"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, problem):
    mri, other, words = write_bad_inputs(tmp_path)[problem]
    out = tmp_path / "out" / "fused.nii.gz"
    out.parent.mkdir()
    code, stdout, err = run(capsys, "fuse", mri, other, "-o", out, "--modality", "ct", "--method", "pixel-max")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("edgefusion: error:") and words in err
    assert list(out.parent.iterdir()) == []


def test_non_overlapping_volumes_and_unknown_modality_and_unwritable_output(tmp_path, capsys):
    write_bad_inputs(tmp_path)
    ok = tmp_path / "far.nii.gz"
    code, _, err = run(capsys, "fuse", tmp_path / "far.nii.gz", ok, "-o", tmp_path / "o.nii.gz",
                       "--modality", "ct", "--method", "pixel-max", "--register", "none")
    assert code == 0, err  # same grid: fine
    far_mri = sitk.GetImageFromArray(np.random.default_rng(3).random((3, 8, 8)).astype(np.float32))
    sitk.WriteImage(far_mri, str(tmp_path / "near.nii.gz"))
    code, _, err = run(capsys, "fuse", tmp_path / "near.nii.gz", ok, "-o", tmp_path / "o2.nii.gz", "--modality", "ct",
                       "--method", "pixel-max", "--register", "none")
    assert code == 2 and "do not overlap" in err and not (tmp_path / "o2.nii.gz").exists()
    code, _, err = run(capsys, "fuse", ok, ok, "-o", tmp_path / "o3.nii.gz", "--modality", "xray")
    assert code == 2 and "unknown modality 'xray'" in err and err.count("\n") == 1
    code, _, err = run(capsys, "fuse", ok, ok, "-o", tmp_path / "no" / "such" / "dir.nii.gz", "--modality", "ct")
    assert code == 2 and "output folder does not exist" in err
    code, _, err = run(capsys, "fuse", ok, ok, "-o", tmp_path / "o4.nii.gz")
    assert code == 2 and "--modality" in err


def test_ct_window_is_applied_and_checked(tmp_path, pair, capsys):
    ct_values = np.asarray(Image.open(pair[1]))
    code, _, err = run(capsys, "fuse", *pair, "-o", tmp_path / "w.png", "--modality", "ct", "--method", "pixel-max",
                       "--ct-window", 0, 127.5)
    assert code == 0, err
    expected = np.maximum(np.asarray(Image.open(pair[0])), np.clip(ct_values * 2.0, 0, 255).round())
    assert np.abs(np.asarray(Image.open(tmp_path / "w.png")).astype(float) - expected).max() <= 1
    code, _, err = run(capsys, "fuse", *pair, "-o", tmp_path / "x.png", "--modality", "ct", "--ct-window", 200, -100)
    assert code == 2 and "low < high" in err and not (tmp_path / "x.png").exists()
    code, _, err = run(capsys, "fuse", *pair, "-o", tmp_path / "y.png", "--modality", "spect", "--ct-window", -100, 200)
    assert code == 2 and "CT window applies to a CT" in err and not (tmp_path / "y.png").exists()


def test_missing_weights_is_a_clear_error(tmp_path, pair, capsys, models_dir_empty):
    code, _, err = run(capsys, "fuse", *pair, "-o", tmp_path / "f.png", "--modality", "spect", "--method", "sfnn")
    assert code == 2 and "no weights for task MRI-SPECT" in err
    assert not (tmp_path / "f.png").exists()


def atlas_like_folders(root, task_folder, other_mode):
    mri_dir, other_dir = root / "MRI", root / task_folder
    mri_dir.mkdir(parents=True)
    other_dir.mkdir()
    for index, name in enumerate(["12001", "12002", "13001"]):
        png(mri_dir / f"{name}.png", (phantom_slice(24, 24, index) * 255).astype(np.uint8))
        grey = (phantom_slice(24, 24, 10 + index) * 255).astype(np.uint8)
        png(other_dir / f"{name}.png", grey if other_mode == "L" else np.stack([grey, grey // 2, grey // 4], -1))
    png(mri_dir / "99001.png", np.zeros((24, 24), np.uint8) + 5)  # no partner: skipped
    return mri_dir, other_dir


@pytest.mark.parametrize("task, folder, mode", [("MRI-CT", "CT", "L"), ("MRI-SPECT", "SPECT", "RGB")])
def test_batch_writes_name_png_grey_for_ct_rgb_for_spect(tmp_path, capsys, task, folder, mode):
    mri_dir, other_dir = atlas_like_folders(tmp_path / "data", folder, mode)
    out_dir = tmp_path / "fused"
    code, _, err = run(capsys, "batch", "--task", task, "--mri-dir", mri_dir, "--other-dir", other_dir,
                       "--out-dir", out_dir, "--method", "pixel-average")
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["12001.png", "12002.png", "13001.png"]
    image = Image.open(out_dir / "12002.png")
    assert image.mode == mode and image.size == (24, 24)


def test_batch_makes_a_missing_out_dir_with_its_parents(tmp_path, capsys):
    mri_dir, other_dir = atlas_like_folders(tmp_path / "data", "CT", "L")
    written = {}
    for out_dir in (tmp_path / "flat", tmp_path / "a" / "b" / "fused"):  # a and b do not exist
        code, _, err = run(capsys, "batch", "--task", "MRI-CT", "--mri-dir", mri_dir, "--other-dir", other_dir,
                           "--out-dir", out_dir, "--method", "pixel-average")
        assert code == 0, err
        written[out_dir.name] = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert written["fused"] == written["flat"] and len(written["flat"]) == 3
    (tmp_path / "a-file").write_text("not a folder")
    code, _, err = run(capsys, "batch", "--task", "MRI-CT", "--mri-dir", mri_dir, "--other-dir", other_dir,
                       "--out-dir", tmp_path / "a-file" / "fused", "--method", "pixel-average")
    assert code == 2 and "a-file is a file" in err and err.count("\n") == 1


def test_batch_checks_every_pair_before_writing_anything(tmp_path, capsys):
    mri_dir, other_dir = atlas_like_folders(tmp_path / "data", "CT", "L")
    (other_dir / "13001.png").write_bytes(b"broken")
    out_dir = tmp_path / "fused"
    code, _, err = run(capsys, "batch", "--task", "MRI-CT", "--mri-dir", mri_dir, "--other-dir", other_dir,
                       "--out-dir", out_dir, "--method", "pixel-average")
    assert code == 2 and "13001.png" in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_inputs_are_never_overwritten_and_folder_errors_are_one_line(tmp_path, pair, capsys):
    mri_bytes = pair[0].read_bytes()
    code, _, err = run(capsys, "fuse", *pair, "-o", pair[0], "--modality", "ct", "--method", "pixel-max")
    assert code == 2 and "is the MRI input" in err and pair[0].read_bytes() == mri_bytes
    mri_dir, other_dir = atlas_like_folders(tmp_path / "data", "CT", "L")
    before = {p.name: p.read_bytes() for p in mri_dir.iterdir()}
    code, _, err = run(capsys, "batch", "--task", "MRI-CT", "--mri-dir", mri_dir, "--other-dir", other_dir,
                       "--out-dir", mri_dir, "--method", "pixel-average")
    assert code == 2 and "is the --mri-dir input" in err
    assert {p.name: p.read_bytes() for p in mri_dir.iterdir()} == before
    for missing in (["--mri-dir", tmp_path / "nowhere", "--other-dir", other_dir],
                    ["--mri-dir", mri_dir, "--other-dir", tmp_path / "data"]):  # no such folder / no shared names
        code, _, err = run(capsys, "batch", "--task", "MRI-CT", *missing, "--out-dir", tmp_path / "o")
        assert code == 2 and err.count("\n") == 1 and ("folder not found" in err or "no same-named" in err)


def test_volume_to_png_is_refused_before_fusing_and_outputs_get_the_usual_mode(tmp_path, capsys, monkeypatch):
    import os

    import EdgeFusionLib.fusion.pipeline as fusion

    monkeypatch.setattr(fusion, "fuse_images", lambda *a, **k: pytest.fail("fusion started"))
    volume = sitk.GetImageFromArray(np.stack([phantom_slice(16, 16, s) for s in range(3)]) * 500)
    sitk.WriteImage(volume, str(tmp_path / "mri.nrrd"))
    sitk.WriteImage(volume, str(tmp_path / "ct.nrrd"))
    code, _, err = run(capsys, "fuse", tmp_path / "mri.nrrd", tmp_path / "ct.nrrd", "-o", tmp_path / "f.png",
                       "--modality", "ct")
    assert code == 2 and "cannot write a 3D volume as .png" in err
    monkeypatch.undo()
    umask = os.umask(0o022)
    try:
        code, _, err = run(capsys, "fuse", tmp_path / "mri.nrrd", tmp_path / "ct.nrrd", "-o", tmp_path / "f.nrrd",
                           "--modality", "ct", "--method", "pixel-max", "--register", "none")
    finally:
        os.umask(umask)
    assert code == 0, err
    assert (tmp_path / "f.nrrd").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_info_json_through_the_installed_command():
    result = subprocess.run([sys.executable, "-m", "EdgeFusionLib.cli", "info", "--json"], capture_output=True,
                            text=True, check=True)
    info = json.loads(result.stdout)
    assert info["parameters"] == 414_081
    assert info["devices"][0]["device"] == "cpu"
    assert "pixel-max" in info["methods"] and "sfnn" in info["methods"]
    for task, entry in info["tasks"].items():
        assert len(entry["sha256"]) == 64


def test_cancelled_batch_leaves_no_file(tmp_path, capsys, monkeypatch):
    import EdgeFusionLib.fusion.pipeline as fusion

    mri_dir, other_dir = atlas_like_folders(tmp_path / "data", "CT", "L")
    real, calls = fusion.fuse_prepared, []

    def interrupted_on_the_second_pair(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C
        return real(*args, **kwargs)

    monkeypatch.setattr(fusion, "fuse_prepared", interrupted_on_the_second_pair)
    out_dir = tmp_path / "fused"
    code, _, err = run(capsys, "batch", "--task", "MRI-CT", "--mri-dir", mri_dir, "--other-dir", other_dir,
                       "--out-dir", out_dir, "--method", "pixel-average")
    assert code == 130 and "cancelled" in err
    assert list(out_dir.iterdir()) == []  # neither the first result nor the staging folder


def test_cancelled_fuse_writes_nothing(tmp_path, pair, capsys, monkeypatch):
    import EdgeFusionLib.fusion.pipeline as fusion
    from EdgeFusionLib.errors import FusionCancelled

    def cancelled(*args, **kwargs):
        raise FusionCancelled("fusion cancelled")

    monkeypatch.setattr(fusion, "fuse_images", cancelled)
    code, _, err = run(capsys, "fuse", *pair, "-o", tmp_path / "f.png", "--modality", "ct")
    assert code == 130 and not (tmp_path / "f.png").exists()


def test_colormap_shows_a_scalar_spect_in_colour_and_fuses_its_luma(tmp_path, capsys):
    import matplotlib

    from EdgeFusionLib.fusion.colour import apply_colour_table, delivered_8bit, luma
    from EdgeFusionLib.fusion.intensity import window_for

    mri_values = np.stack([phantom_slice(20, 24, s) for s in range(3)]).astype(np.float32) * 600
    counts = np.stack([phantom_slice(20, 24, 7 + s) ** 3 for s in range(3)]).astype(np.float32) * 4000
    for name, values in (("mri.nrrd", mri_values), ("perfusion.nrrd", counts)):
        sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / name))
    code, _, err = run(capsys, "fuse", tmp_path / "mri.nrrd", tmp_path / "perfusion.nrrd", "-o", tmp_path / "out.nrrd",
                       "--modality", "spect", "--colormap", "hot", "--method", "pixel-average", "--register", "none")
    assert code == 0, err
    fused = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nrrd")))
    hot = matplotlib.colormaps["hot"](np.linspace(0, 1, 256))[:, :3]
    rgb = apply_colour_table(window_for(counts, "spect").apply(counts), hot)
    expected = delivered_8bit((window_for(mri_values, "mri").apply(mri_values) + luma(rgb)) / 2, rgb)
    assert fused.shape == counts.shape + (3,)
    np.testing.assert_array_equal(fused, expected)
    assert (fused[..., 0].astype(int) - fused[..., 2]).max() > 100  # "hot": red-dominant where uptake is

    code, _, err = run(capsys, "fuse", tmp_path / "mri.nrrd", tmp_path / "perfusion.nrrd", "-o", tmp_path / "x.nrrd",
                       "--modality", "spect", "--colormap", "no-such-map")
    assert code == 2 and "unknown colour map 'no-such-map'" in err
    code, _, err = run(capsys, "fuse", tmp_path / "mri.nrrd", tmp_path / "perfusion.nrrd", "-o", tmp_path / "x.nrrd",
                       "--modality", "ct", "--colormap", "hot")
    assert code == 2 and "colour table applies to SPECT or PET, not CT" in err
    assert not (tmp_path / "x.nrrd").exists()


def test_app_refuses_a_non_loopback_address_without_allow_remote(capsys):
    assert main(["app", "--host", "0.0.0.0"]) == 2
    assert "add --allow-remote" in capsys.readouterr().err


def test_the_command_line_loads_no_web_or_slicer_package():
    """`edgefusion --help` and every command but `app` stay free of trame, Slicer, VTK and aiohttp."""
    from pathlib import Path

    code = ("import json, sys; from EdgeFusionLib.cli import build_parser; build_parser(); "
            "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, check=True)
    assert not {"trame", "trame_slicer", "slicer", "vtk", "vtkmodules", "aiohttp"} & set(json.loads(result.stdout))
