"""Registration of a CT/SPECT/PET onto the MRI: accuracy, determinism, the choices, and refusals that write nothing.

Synthetic volumes (an asymmetric head sampled on two grids, MR-like and CT-like intensities) keep
most tests self-contained; the real MRI-DIR sample pair of Resources/SampleData/MRIDIR checks a
real CT and MR in different frames of reference.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from EdgeFusionLib.cli import main
from EdgeFusionLib.errors import FusionCancelled
from EdgeFusionLib.fusion.options import FusionOptions
from EdgeFusionLib.fusion.pipeline import fuse_images
from EdgeFusionLib.io.images import read_image
from EdgeFusionLib.registration import (
    REGISTRATION_CHOICES,
    Registration,
    RegistrationError,
    homogeneous_matrix,
    read_transform,
    register,
    resolve_registration,
    transform_path_for,
    write_transform,
)
from EdgeFusionLib.registration.plausibility import (
    check_affine_gain,
    check_progress,
    check_transform,
)

SAMPLE = Path(__file__).resolve().parent.parent / "Resources" / "SampleData" / "MRIDIR"

# Asymmetric head (LPS mm about the origin): (centre, radii, MR value, CT value) of nested ellipsoids and blobs.
TISSUES = [
    ((0.0, 0.0, 0.0), (70.0, 85.0, 62.0), 300.0, 40.0),  # scalp and brain
    ((0.0, 0.0, 0.0), (64.0, 79.0, 56.0), 80.0, 1200.0),  # skull (a shell: the brain is drawn over it)
    ((0.0, 2.0, 2.0), (58.0, 72.0, 50.0), 600.0, 35.0),  # brain
    ((-12.0, -5.0, 10.0), (7.0, 22.0, 9.0), 150.0, 8.0),  # ventricle (left only: asymmetric)
    ((25.0, 30.0, -10.0), (12.0, 10.0, 14.0), 900.0, 60.0),  # lesion
    ((-20.0, 40.0, -20.0), (9.0, 9.0, 6.0), 450.0, 300.0),  # calcified blob
    ((0.0, -70.0, -35.0), (20.0, 16.0, 12.0), 200.0, 900.0),  # jaw-like bone in front, low
]


def head(size, spacing, origin, transform=None, modality: str = "mr", seed: int = 0):
    """The head sampled at the voxel centres of a grid; ``transform`` moves the head (a point p of the
    head is drawn at transform(p)). MR: arbitrary units; CT: Hounsfield units (air -1000)."""
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetOrigin(origin)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3).astype(float)
    points = np.asarray(origin) + index * np.asarray(spacing)
    if transform is not None:
        inverse = transform.GetInverse()
        points = np.array([inverse.TransformPoint(point) for point in points.tolist()])
    values = np.full(len(points), 0.0 if modality == "mr" else -1000.0)
    for centre, radii, mr_value, ct_value in TISSUES:
        inside = (((points - centre) / radii) ** 2).sum(axis=1) < 1
        values[inside] = mr_value if modality == "mr" else ct_value
    rng = np.random.default_rng(seed)
    values = values + rng.normal(0, 10.0 if modality == "mr" else 5.0, len(values))
    image = sitk.GetImageFromArray(values.reshape(size).transpose(2, 1, 0).astype(np.float32))
    image.CopyInformation(grid)
    return sitk.SmoothingRecursiveGaussian(image, 1.5)


def mr_volume():
    return head((60, 72, 50), (3.0, 3.0, 3.0), (-90.0, -108.0, -75.0))


def ct_volume(transform=None, seed: int = 1):
    return head((64, 76, 44), (2.8, 2.8, 3.4), (-93.0, -104.0, -70.0), transform, "ct", seed)


def rigid(degrees, axis, translation, centre=(0.0, 0.0, 0.0)):
    versor = sitk.VersorRigid3DTransform()
    versor.SetCenter(centre)
    versor.SetRotation(axis, math.radians(degrees))
    versor.SetTranslation(translation)
    euler = sitk.Euler3DTransform()
    euler.SetCenter(centre)
    euler.SetMatrix(versor.GetMatrix())
    euler.SetTranslation(translation)
    return euler


def head_points(step: float = 6.0) -> np.ndarray:
    """Points inside the head (the brain's ellipsoid), every ``step`` mm."""
    axes = [np.arange(-r, r + step, step) for r in (58.0, 72.0, 50.0)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return points[((points / (58.0, 72.0, 50.0)) ** 2).sum(axis=1) < 1]


def displacement(found, truth, points) -> np.ndarray:
    return np.array([np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p))) for p in points.tolist()])


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def known():
    """(truth, MR, moved CT, registration) for a 7° / 14 mm rigid move of a CT on another grid."""
    truth = rigid(7.0, (0.3, -0.5, 0.8), (9.0, -6.0, 9.0))
    mr, ct = mr_volume(), ct_volume(truth)
    return truth, mr, ct, register(mr, ct, "rigid")


# ----------------------------------------------------------------------- accuracy


def test_rigid_finds_a_known_transform_between_mr_and_ct_intensities(known):
    truth, _, _, result = known
    errors = displacement(result.transform, truth, head_points())
    # voxels are ~3 mm: a quarter voxel on average, half a voxel at worst
    assert errors.mean() < 0.75 and errors.max() < 1.5, (errors.mean(), errors.max())
    assert result.kind == "rigid" and result.metric_final < result.metric_start
    assert result.rotation_deg == pytest.approx(7.0, abs=1.0)


def test_summary_and_json_describe_the_result(known):
    result = known[3]
    assert re.fullmatch(r"rigid: metric -\d\.\d\d -> -\d\.\d\d, rotation \d+\.\d°, translation \d+\.\d mm, \d+\.\d s.*",
                        result.summary())
    values = result.to_json()
    assert values["kind"] == "rigid" and len(values["transform"]["parameters"]) == 6
    assert values["rotation_deg"] == pytest.approx(result.rotation_deg)


def test_affine_of_a_rigid_move_stays_rigid_and_accurate(known):
    truth, mr, ct, _ = known
    result = register(mr, ct, "affine")
    matrix = np.array(result.transform.GetMatrix()).reshape(3, 3)
    assert np.allclose(np.linalg.svd(matrix)[1], 1.0, atol=0.03)  # no scaling found where there is none
    assert displacement(result.transform, truth, head_points()).mean() < 1.0


def test_results_are_bit_identical_whatever_the_global_thread_count(known):
    _, mr, ct, first = known
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1 if before != 1 else 2)
        again = register(mr, ct, "rigid")
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == (1 if before != 1 else 2)  # restored
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    assert again.transform.GetParameters() == first.transform.GetParameters()
    assert again.transform.GetFixedParameters() == first.transform.GetFixedParameters()


def test_an_aligned_pair_moves_by_well_under_a_voxel(tmp_path, capsys):
    mr, ct = mr_volume(), ct_volume()  # the same head on two grids, no move
    sitk.WriteImage(mr, str(tmp_path / "mr.nrrd"))
    sitk.WriteImage(ct, str(tmp_path / "ct.nrrd"))
    code, out, err = run(capsys, "register", tmp_path / "mr.nrrd", tmp_path / "ct.nrrd", "-o", tmp_path / "t.tfm")
    assert code == 0, err
    assert out.startswith("rigid: metric ") and out.count("\n") == 1
    moved = displacement(read_transform(tmp_path / "t.tfm"), sitk.Transform(3, sitk.sitkIdentity), head_points())
    assert moved.max() < 0.3  # mm; voxels are ~3 mm


def test_real_ct_and_mr_in_different_frames_are_turned_and_consistent():
    """The MRI-DIR sample: the CT lies turned 180° about the A-P axis; a known extra move of the CT
    must come back as that move on top of the pair's own registration (within a millimetre)."""
    mr = read_image(SAMPLE / "MRIDIR-Porcine-MR-T2.nrrd")
    ct = read_image(SAMPLE / "MRIDIR-Porcine-CT.nrrd")
    base = register(mr, ct)
    assert base.start.startswith("rotated 180° about y") and base.rotation_deg > 170
    truth = rigid(6.0, (1.0, 0.2, -0.3), (-8.0, 5.0, 6.0), centre=(0.0, 0.0, 0.0))
    moved_ct = sitk.Resample(ct, ct, truth.GetInverse(), sitk.sitkLinear, -1024.0)
    found = register(mr, moved_ct)
    expected = sitk.CompositeTransform([truth, base.transform])
    mask = sitk.GetArrayViewFromImage(mr) > 300
    indices = np.argwhere(mask)[::97, ::-1]
    points = np.array([mr.TransformIndexToPhysicalPoint([int(i) for i in index]) for index in indices])
    errors = displacement(found.transform, expected, points)
    assert errors.mean() < 1.0 and errors.max() < 2.0, (errors.mean(), errors.max())


# ----------------------------------------------------------------------- choices


def dicom_like(image, frame=None, patient=None):
    copy = sitk.Image(image)
    if frame:
        copy.SetMetaData("FrameOfReferenceUID", frame)
    if patient:
        copy.SetMetaData("PatientID", patient)
    return copy


def test_auto_registers_unless_one_frame_of_reference_or_pictures():
    mr, ct = mr_volume(), ct_volume()
    assert REGISTRATION_CHOICES == ("auto", "none", "rigid", "affine")
    assert resolve_registration("auto", mr, ct)[0] == "rigid"
    assert resolve_registration("auto", dicom_like(mr, "1.2.3"), dicom_like(ct, "1.2.3"))[0] == "none"
    assert resolve_registration("auto", dicom_like(mr, "1.2.3"), dicom_like(ct, "1.2.4"))[0] == "rigid"
    picture = sitk.Image([32, 32], sitk.sitkUInt8)
    single_slice = sitk.Image([32, 32, 1], sitk.sitkFloat32)
    assert resolve_registration("auto", picture, picture)[0] == "none"
    assert resolve_registration("auto", single_slice, single_slice)[0] == "none"
    assert resolve_registration("none", mr, ct)[0] == "none"
    assert resolve_registration("affine", mr, ct)[0] == "affine"
    with pytest.raises(RegistrationError, match="needs two 3D volumes"):
        resolve_registration("rigid", picture, picture)
    with pytest.raises(RegistrationError, match="unknown registration 'elastic'"):
        resolve_registration("elastic", mr, ct)


def test_options_carry_the_registration_choice():
    options = FusionOptions()
    assert options.registration == "auto" and options.arguments()["registration"] == "auto"
    again = FusionOptions.from_json(FusionOptions(registration="affine").to_json())
    assert again.registration == "affine"
    with pytest.raises(RegistrationError, match="choose one of auto, none, rigid, affine"):
        FusionOptions(registration="deformable").check()


def test_read_image_keeps_frame_of_reference_and_patient_of_a_dicom_series(tmp_path):
    volume = sitk.Cast(mr_volume()[::4, ::4, ::10], sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.GetDepth()):
        plane = volume[:, :, z]
        tags = {"0008|0060": "MR", "0010|0020": "PAT-7 ", "0020|0052": "1.2.826.0.1.7", "0020|000d": "1.2.826.0.1.8",
                "0020|000e": "1.2.826.0.1.9", "0008|0018": f"1.2.826.0.1.10.{z}", "0020|0013": str(z),
                "0020|0037": "1\\0\\0\\0\\1\\0",
                "0020|0032": "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, z)))}
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"{z:03d}.dcm"))
        writer.Execute(plane)
    image = read_image(tmp_path)
    assert image.GetMetaData("FrameOfReferenceUID") == "1.2.826.0.1.7"
    assert image.GetMetaData("PatientID") == "PAT-7"
    single = read_image(tmp_path / "000.dcm")
    assert single.GetMetaData("FrameOfReferenceUID") == "1.2.826.0.1.7"


# ----------------------------------------------------------------------- the pipeline


def test_fuse_images_registers_first_and_reports_the_result(known):
    _, mr, ct, _ = known
    seen, progress = [], []
    fused = fuse_images(mr, ct, "ct", method="pixel-average", registration="rigid", registered=seen.append,
                        progress=lambda done, total: progress.append((done, total)))
    assert isinstance(seen[0], Registration) and fused.GetSize() == mr.GetSize()
    done = [value for value, _ in progress]
    assert done == sorted(done) and progress[-1] == (1000, 1000) and any(0 < value < 500 for value in done)
    seen.clear()
    fuse_images(mr, ct, "ct", method="pixel-average", registered=seen.append)  # library default: none
    assert seen == [None]


def test_cancel_during_registration_raises_and_progress_stays_in_range(known):
    _, mr, ct, _ = known
    fractions = []
    with pytest.raises(FusionCancelled):
        register(mr, ct, progress=fractions.append, cancel=lambda: len(fractions) > 5)
    assert fractions and all(0.0 <= value <= 1.0 for value in fractions) and fractions == sorted(fractions)


def test_transform_files_round_trip_and_are_checked(known, tmp_path):
    result = known[3]
    path = tmp_path / "t.tfm"
    write_transform(result, path)
    again = read_transform(path)
    points = head_points(20.0)
    assert displacement(again, result.transform, points).max() < 1e-9
    assert [p.name for p in tmp_path.iterdir()] == ["t.tfm"]  # no temporary file left
    assert transform_path_for(tmp_path / "fused.nii.gz") == tmp_path / "fused.tfm"
    matrix = homogeneous_matrix(again)
    for point in points[:5]:
        np.testing.assert_allclose(matrix @ np.append(point, 1.0), [*result.transform.TransformPoint(point), 1.0])
    with pytest.raises(RegistrationError, match="use a .tfm file"):
        write_transform(result, tmp_path / "t.nii.gz")
    (tmp_path / "bad.tfm").write_text("not a transform")
    with pytest.raises(RegistrationError, match="cannot read the transform"):
        read_transform(tmp_path / "bad.tfm")


# ----------------------------------------------------------------------- refusals


def test_implausible_results_are_refused_with_what_to_check():
    centre = (0.0, 0.0, 0.0)
    with pytest.raises(RegistrationError, match=r"rotates the image by 45°.*--register none"):
        check_transform("rigid", rigid(45.0, (0, 0, 1), (0, 0, 0)), np.eye(3), centre)
    check_transform("rigid", rigid(180.0, (0, 1, 0), (0, 0, 0)), np.diag([-1.0, 1.0, -1.0]), centre)  # a start pose
    with pytest.raises(RegistrationError, match="moves the image by 100 mm"):
        check_transform("rigid", rigid(0.0, (0, 0, 1), (0, 100, 0)), np.eye(3), centre)
    with pytest.raises(RegistrationError, match="scales the image"):
        check_transform("affine", sitk.AffineTransform([1.3, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]), np.eye(3), centre)
    with pytest.raises(RegistrationError, match="shears the image"):
        check_transform("affine", sitk.AffineTransform([1, 0.25, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]), np.eye(3), centre)
    with pytest.raises(RegistrationError, match="made the match worse"):
        check_progress(-0.3, -0.2, True, "")
    with pytest.raises(RegistrationError, match="did not converge"):
        check_progress(-0.3, -0.5, False, "Maximum number of iterations (200) exceeded")
    check_progress(-0.300, -0.299, True, "")  # an aligned pair ends a rounding error above its start: accepted
    with pytest.raises(RegistrationError, match="made the rigid one worse"):
        check_affine_gain(-0.3, -0.2)


@pytest.fixture
def bad_pairs(tmp_path):
    """name -> (mri, other, extra arguments, words of the one-line message)."""
    mr, ct = mr_volume(), ct_volume()
    sitk.WriteImage(mr, str(tmp_path / "mr.nrrd"))
    far = sitk.Image(ct)
    far.SetOrigin((2000.0, 0.0, 0.0))
    sitk.WriteImage(far, str(tmp_path / "far_ct.nrrd"))
    sitk.WriteImage(dicom_like(mr, patient="A-1"), str(tmp_path / "patient_a_mr.nrrd"))
    sitk.WriteImage(dicom_like(ct, patient="B-2"), str(tmp_path / "patient_b_ct.nrrd"))
    flat = sitk.Image(ct.GetSize(), sitk.sitkFloat32) + 40.0
    flat.CopyInformation(ct)
    sitk.WriteImage(flat, str(tmp_path / "flat_ct.nrrd"))
    picture = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(picture), str(tmp_path / "mr.png"))
    sitk.WriteImage(sitk.GetImageFromArray(255 - picture), str(tmp_path / "ct.png"))
    return {
        "no overlap": (tmp_path / "mr.nrrd", tmp_path / "far_ct.nrrd", [], "do not overlap"),
        "another patient": (tmp_path / "patient_a_mr.nrrd", tmp_path / "patient_b_ct.nrrd", [], "different patients"),
        "2D pictures with rigid": (tmp_path / "mr.png", tmp_path / "ct.png", ["--register", "rigid"],
                                   "needs two 3D volumes"),
        "constant image": (tmp_path / "mr.nrrd", tmp_path / "flat_ct.nrrd", [], "constant"),
    }


@pytest.mark.parametrize("problem", ["no overlap", "another patient", "2D pictures with rigid", "constant image"])
def test_bad_pairs_get_one_line_and_nothing_is_written(tmp_path, capsys, bad_pairs, problem):
    mri, other, extra, words = bad_pairs[problem]
    out = tmp_path / "out"
    out.mkdir()
    before = sorted(path.name for path in tmp_path.iterdir())
    suffix = ".png" if mri.suffix == ".png" else ".nii.gz"
    code, _, err = run(capsys, "fuse", mri, other, "-o", out / f"fused{suffix}", "--modality", "ct",
                       "--method", "pixel-average", *extra)
    assert code == 2 and err.count("\n") == 1 and err.startswith("edgefusion: error:") and words in err, err
    assert list(out.iterdir()) == [] and sorted(path.name for path in tmp_path.iterdir()) == before
    if mri.suffix != ".png":
        code, _, err = run(capsys, "register", mri, other, "-o", out / "t.tfm")
        assert code == 2 and err.count("\n") == 1 and words in err and list(out.iterdir()) == []


def test_fuse_writes_the_transform_beside_the_output(known, tmp_path, capsys):
    _, mr, ct, result = known
    sitk.WriteImage(mr, str(tmp_path / "mr.nrrd"))
    sitk.WriteImage(ct, str(tmp_path / "ct.nrrd"))
    code, _, err = run(capsys, "fuse", tmp_path / "mr.nrrd", tmp_path / "ct.nrrd", "-o", tmp_path / "fused.nii.gz",
                       "--modality", "ct", "--method", "pixel-average")
    assert code == 0, err
    assert "rigid: metric" in err and (tmp_path / "fused.tfm").is_file()
    assert displacement(read_transform(tmp_path / "fused.tfm"), result.transform, head_points(20.0)).max() < 1e-6
    code, _, err = run(capsys, "fuse", tmp_path / "mr.nrrd", tmp_path / "ct.nrrd", "-o", tmp_path / "plain.nii.gz",
                       "--modality", "ct", "--method", "pixel-average", "--register", "none")
    assert code == 0 and not (tmp_path / "plain.tfm").exists()
