"""The modality table and the one rule for guessing a modality, as the command line applies it."""

import numpy as np
import pytest
import SimpleITK as sitk

from EdgeFusionLib.cli import main
from EdgeFusionLib.errors import InputError
from EdgeFusionLib.modality import MODALITIES, TASKS, check_modality, check_task, guess_modality


def test_the_table_gives_every_task_and_its_modality():
    assert list(TASKS) == ["MRI-CT", "MRI-SPECT", "MRI-PET"]
    assert [entry.name for entry in TASKS.values()] == ["ct", "spect", "pet"]
    assert [entry.name for entry in MODALITIES.values() if entry.shown_in_colour] == ["spect", "pet"]
    assert check_modality(" PET ").task == "MRI-PET"
    assert check_task("MRI-SPECT").label == "SPECT"
    with pytest.raises(InputError, match="unknown modality 'mr'"):
        check_modality("mr")
    with pytest.raises(InputError, match="unknown task"):
        check_task("MRI-US")


@pytest.mark.parametrize("code, name, expected", [
    ("PT", "ct_head", "pet"),  # the tag wins over the name
    ("NM", "", "spect"),
    (" ct ", "x", "ct"),
    ("MR", "fdg_pet.nii.gz", "pet"),  # an MR tag says nothing about CT/SPECT/PET: the name decides
    (None, "patient7_FDG.nrrd", "pet"),
    (None, "brainSPECT_HMPAO.nii", "spect"),
    (None, "CTChest.mha", "ct"),
    (None, "spect_pet_compare.nii.gz", None),  # points to two modalities
    (None, "t1_mprage.nii.gz", None),
    (None, "spectacle.nrrd", None),  # whole words only
])
def test_guess(code, name, expected):
    guess = guess_modality(code, name)
    assert (guess.modality.name if guess.modality else None) == expected
    assert guess.reason


def write_volume(path, values, tags=None):
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((2.0, 2.0, 4.0))
    for key, value in (tags or {}).items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(path))
    return path


def write_dicom_series(folder, values, modality_code):
    """A DICOM series (one file per slice) with the given Modality tag, as a scanner would write it."""
    folder.mkdir()
    for index, plane in enumerate(values.astype(np.int16)):
        image = sitk.GetImageFromArray(plane[np.newaxis])
        image.SetSpacing((2.0, 2.0, 4.0))
        image.SetOrigin((0.0, 0.0, 4.0 * index))
        for key, value in {"0008|0060": modality_code, "0020|000e": "1.2.3.4.5", "0020|0013": str(index + 1),
                           "0020|0032": f"0\\0\\{4.0 * index}", "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
            image.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{index:03d}.dcm"))
        writer.Execute(image)
    return folder


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.default_rng(5)
    mri = write_volume(tmp_path / "t1.nrrd", rng.random((4, 12, 12)) * 300)
    return tmp_path, mri, rng.random((4, 12, 12)) * 100


def fused_task(capsys, *argv):
    """(exit code, the task the command line fused with, or its error); random volumes: no registration."""
    code = main([str(a) for a in argv] + ["--register", "none"])
    err = capsys.readouterr().err
    return code, (err.split("(")[1].split(",")[0] if code == 0 else err)


def test_the_command_line_takes_the_modality_from_the_dicom_tag(volumes, capsys):
    folder, mri, values = volumes
    series = write_dicom_series(folder / "ct_series", values, "PT")  # the folder's name says CT, the tag PET
    code, task = fused_task(capsys, "fuse", mri, series, "-o", folder / "out.nrrd", "--method", "pixel-average")
    assert (code, task) == (0, "MRI-PET")


def test_the_command_line_takes_the_modality_from_the_file_name(volumes, capsys):
    folder, mri, values = volumes
    spect = write_volume(folder / "patient_hmpao.nrrd", values)
    code, task = fused_task(capsys, "fuse", mri, spect, "-o", folder / "out.nrrd", "--method", "pixel-average")
    assert (code, task) == (0, "MRI-SPECT")


@pytest.mark.parametrize("name, reason", [("spect_pet.nrrd", "points to SPECT and PET"),
                                          ("other.nrrd", "neither a DICOM Modality tag nor its name")])
def test_the_command_line_refuses_to_guess_what_the_name_does_not_say(volumes, capsys, name, reason):
    folder, mri, values = volumes
    other = write_volume(folder / name, values)
    code, error = fused_task(capsys, "fuse", mri, other, "-o", folder / "out.nrrd", "--method", "pixel-average")
    assert code == 2 and reason in error and "--modality" in error
    assert not (folder / "out.nrrd").exists()
    # --modality settles it.
    code, task = fused_task(capsys, "fuse", mri, other, "-o", folder / "out.nrrd", "--method", "pixel-average",
                            "--modality", "pet")
    assert (code, task) == (0, "MRI-PET")
