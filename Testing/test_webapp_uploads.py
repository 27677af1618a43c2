"""Uploads to the web app (EdgeFusionApp.uploads): names, limits, zips and content checks, without a browser."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from EdgeFusionApp import uploads
from EdgeFusionLib.errors import InputError


def volume_bytes(tmp_path: Path, array: np.ndarray, name: str = "v.nrrd", **kwargs) -> bytes:
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(array, **kwargs), str(path))
    return path.read_bytes()


def dicom_series_zip(tmp_path: Path, modality: str, member_prefix: str = "") -> bytes:
    """A 4-slice DICOM series (written by SimpleITK) in a zip whose members are named ``member_prefix + i.dcm``."""
    volume = (np.arange(4 * 12 * 10, dtype=np.int16).reshape(4, 12, 10) * 3) - 200
    folder = tmp_path / "dicom"
    folder.mkdir()
    series_uid = "1.2.826.0.1.3680043.2.1125.1"
    for index in range(volume.shape[0]):
        slice_image = sitk.GetImageFromArray(volume[index])
        slice_image.SetSpacing((0.5, 0.5))
        for tag, value in (("0008|0060", modality), ("0020|000e", series_uid), ("0020|0013", str(index + 1)),
                           ("0020|0032", f"0\\0\\{2.5 * index}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0018|0050", "2.5")):
            slice_image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{index}.dcm"))
        writer.Execute(slice_image)
    archive_path = tmp_path / "series.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for index in range(volume.shape[0]):
            archive.write(folder / f"{index}.dcm", f"{member_prefix}{index}.dcm")
    return archive_path.read_bytes()


def test_names_from_the_browser_never_leave_the_upload_folder():
    assert uploads.safe_name("../../etc/passwd") == "passwd"
    assert uploads.safe_name("C:\\Users\\x\\brain t1.nii.gz") == "brain t1.nii.gz"
    assert uploads.safe_name("a$(rm -rf)b.nrrd") == "a_rm -rf_b.nrrd"
    assert uploads.safe_name("..") == "upload"
    assert uploads.node_name("sub-01_T1w.nii.gz") == "sub-01_T1w"
    assert uploads.suffix_of("x.NII.GZ") == ".nii.gz" and uploads.suffix_of("x.txt") == ""


def test_a_volume_is_stored_under_a_name_of_our_own(tmp_path):
    content = volume_bytes(tmp_path, np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32))
    folder = tmp_path / "uploads"
    folder.mkdir()
    checked = uploads.store_upload("../../evil/brain.nrrd", content, folder)
    assert checked.path.parent.parent == folder and checked.path.name == "volume.nrrd"
    assert checked.path.parent.stat().st_mode & 0o777 == 0o700
    assert (checked.name, checked.dicom_modality) == ("brain", "")
    assert checked.path.read_bytes() == content


@pytest.mark.parametrize("name, content, message", [
    ("notes.nrrd", b"not an image at all", "is not an image"),
    ("report.pdf", b"%PDF-1.4", "is not a volume file"),
])
def test_files_that_are_not_volumes_are_refused_and_leave_nothing(tmp_path, name, content, message):
    with pytest.raises(InputError, match=message):
        uploads.store_upload(name, content, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_4d_images_and_label_maps_are_refused(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    four_d = tmp_path / "fmri.nii.gz"
    sitk.WriteImage(sitk.Image([6, 6, 3, 5], sitk.sitkFloat32), str(four_d))
    with pytest.raises(InputError, match=r"'fmri.nii.gz' is a 4D image \(6 x 6 x 3 x 5\)"):
        uploads.store_upload("fmri.nii.gz", four_d.read_bytes(), folder)
    labels = np.zeros((4, 16, 16), np.int16)
    labels[1:3, 3:9, 3:9] = 1
    labels[1:3, 10:14, 10:14] = 2
    with pytest.raises(InputError, match="looks like a label map .* only 3 distinct integer values"):
        uploads.store_upload("seg.nrrd", volume_bytes(tmp_path, labels), folder)
    # An integer image with many values is an image (a CT in Hounsfield units).
    ct = np.random.default_rng(1).integers(-1000, 2000, size=(4, 16, 16)).astype(np.int16)
    assert uploads.store_upload("ct.nrrd", volume_bytes(tmp_path, ct), folder).name == "ct"
    assert len(list(folder.iterdir())) == 1


def test_the_size_limit_is_enforced_before_writing(tmp_path):
    with pytest.raises(InputError, match="accepts files up to"):
        uploads.store_upload("big.nrrd", b"x" * 2001, tmp_path, max_bytes=2000)
    assert list(tmp_path.iterdir()) == []


def test_a_zipped_dicom_series_is_extracted_safely_and_keeps_its_modality(tmp_path):
    content = dicom_series_zip(tmp_path, "CT", member_prefix="../../outside/")
    folder = tmp_path / "uploads"
    folder.mkdir()
    checked = uploads.store_upload("head ct.zip", content, folder)
    assert (checked.name, checked.dicom_modality) == ("head ct", "CT")
    assert not (tmp_path / "outside").exists() and not (tmp_path.parent / "outside").exists()
    image = sitk.ReadImage(str(checked.path))
    assert image.GetSize() == (10, 12, 4)
    np.testing.assert_allclose(image.GetSpacing(), (0.5, 0.5, 2.5))
    assert [path.name for path in checked.path.parent.iterdir()] == ["volume.nrrd"]  # the slices are gone


def test_zips_that_unpack_beyond_the_limit_or_hold_no_series_are_refused(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.dcm", b"\0" * 200_000)  # compresses to a few hundred bytes
    assert bomb.stat().st_size < 2_000
    folder = tmp_path / "uploads"
    folder.mkdir()
    with pytest.raises(InputError, match="unpacks to more than"):
        uploads.store_upload("bomb.zip", bomb.read_bytes(), folder, max_bytes=100_000)
    with pytest.raises(InputError, match="holds 0 DICOM series"):
        uploads.store_upload("bomb.zip", bomb.read_bytes(), folder)
    with pytest.raises(InputError, match="is not a zip archive"):
        uploads.store_upload("fake.zip", b"PK but not really", folder)
    assert list(folder.iterdir()) == []
