"""Files a browser uploads: kept in the session's private folder, checked by content before Slicer sees them.

Nothing from the browser names a server path: a file's name only gives the node its name,
after every character outside ``[A-Za-z0-9._ -]`` is replaced, and the file is written under a
name chosen here. A zipped DICOM series is extracted member by member with the same rule (no
member can land outside its folder), with a limit on the unpacked size. The image is then read
with SimpleITK and refused, with a one-line message, when it is not an image, is 4D, or looks
like a label map.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np

from EdgeFusionLib.errors import InputError

#: Default limit on one uploaded file, and on the unpacked content of a zip (bytes).
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3

#: Single-file volume formats (by file name ending) and zipped DICOM series.
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha")
ZIP_SUFFIX = ".zip"
ACCEPTED_SUFFIXES = (*VOLUME_SUFFIXES, ZIP_SUFFIX)

#: An integer image with at most this many distinct values (0 among them) is taken for a label map.
LABEL_MAP_MAX_VALUES = 16
#: Voxels sampled to count distinct values (a label map has few; an image has many within a sample).
LABEL_MAP_SAMPLE = 1_000_000
#: At most this many members in an uploaded zip (a DICOM series has one file per slice).
MAX_ZIP_MEMBERS = 10_000

_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._ -]+")


@dataclasses.dataclass(frozen=True)
class CheckedUpload:
    """An upload that passed the checks: the file Slicer loads, the node name, and the DICOM modality if any."""

    path: Path  #: inside the session's upload folder
    name: str  #: for the volume node
    dicom_modality: str = ""  #: the series' DICOM Modality (0008,0060), '' for other formats


def safe_name(name: str) -> str:
    """The file's own name (no folder), with characters outside ``[A-Za-z0-9._ -]`` replaced: 'a/../b c?.nrrd' -> 'b c_.nrrd'."""
    base = Path(str(name).replace("\\", "/")).name
    cleaned = _UNSAFE_CHARACTERS.sub("_", base).strip(" .")
    return cleaned or "upload"


def suffix_of(name: str) -> str:
    """The accepted ending of ``name`` ('.nii.gz', '.nrrd', '.zip', ...), or '' if it has none."""
    lower = name.lower()
    return next((suffix for suffix in sorted(ACCEPTED_SUFFIXES, key=len, reverse=True) if lower.endswith(suffix)), "")


def node_name(name: str) -> str:
    """'mri_t1.nii.gz' -> 'mri_t1'."""
    cleaned = safe_name(name)
    suffix = suffix_of(cleaned)
    return cleaned[: len(cleaned) - len(suffix)] if suffix else cleaned


def store_upload(name: str, content: bytes, folder: Path, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> CheckedUpload:
    """Write an uploaded file into a new subfolder of ``folder``, check it, and say what Slicer should load.

    Raises ``InputError`` (and leaves nothing in ``folder``) for a file that is too large, of a
    type that is not accepted, not an image, 4D, or a label map.
    """
    if len(content) > max_bytes:
        raise InputError(f"'{safe_name(name)}' is {len(content) / 1e6:.0f} MB; this server accepts files up to {max_bytes / 1e6:.0f} MB.")
    suffix = suffix_of(safe_name(name))
    if not suffix:
        raise InputError(f"'{safe_name(name)}' is not a volume file this app reads: upload NRRD, NIfTI or MHA, or a zipped DICOM series.")
    folder = Path(folder)
    target = _new_folder(folder)
    try:
        if suffix == ZIP_SUFFIX:
            checked = _store_dicom_zip(name, content, target, max_bytes)
        else:
            path = target / f"volume{suffix}"
            path.write_bytes(content)
            check_volume_file(path, safe_name(name))
            checked = CheckedUpload(path, node_name(name))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return checked


def _new_folder(folder: Path) -> Path:
    index = 0
    while True:
        candidate = folder / f"upload-{index}"
        try:
            candidate.mkdir(mode=0o700)
            return candidate
        except FileExistsError:
            index += 1


def check_volume_file(path: Path, shown_name: str) -> None:
    """Refuse a file that SimpleITK cannot read as an image, a 4D image, or a label map (``InputError``)."""
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"'{shown_name}' is not an image this app can read (NRRD, NIfTI, MHA or DICOM).") from None
    check_image_shape(reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents(), shown_name)
    check_not_label_map(sitk.ReadImage(str(path)), shown_name)


def check_image_shape(dimension: int, size: tuple, components: int, shown_name: str) -> None:
    """A 2D or 3D image of greyscale or RGB voxels; a 4D one (a time series) or other vectors are refused."""
    if dimension > 3 and any(extent > 1 for extent in size[3:]):
        raise InputError(f"'{shown_name}' is a {dimension}D image ({' x '.join(map(str, size))}); upload a 3D volume, not a time series.")
    if components not in (1, 3):
        raise InputError(f"'{shown_name}' has {components} values per voxel; upload a greyscale or RGB volume.")


def check_not_label_map(image, shown_name: str) -> None:
    """Refuse an integer image with at most ``LABEL_MAP_MAX_VALUES`` distinct values, 0 among them (a segmentation)."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        return
    voxels = sitk.GetArrayViewFromImage(image).ravel()
    if not np.issubdtype(voxels.dtype, np.integer):
        return
    step = max(1, voxels.size // LABEL_MAP_SAMPLE)
    values = np.unique(voxels[::step])
    if len(values) <= LABEL_MAP_MAX_VALUES and 0 in values:
        raise InputError(f"'{shown_name}' looks like a label map (segmentation): it holds only {len(values)} distinct "
                         "integer values; upload an image volume.")


def _store_dicom_zip(name: str, content: bytes, target: Path, max_bytes: int) -> CheckedUpload:
    """Extract a zipped DICOM series safely, convert it to NRRD beside it, and check it as any volume."""
    import io

    import SimpleITK as sitk

    shown = safe_name(name)
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise InputError(f"'{shown}' is not a zip archive.") from None
    members = [member for member in archive.infolist() if not member.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise InputError(f"'{shown}' holds {len(members)} files; at most {MAX_ZIP_MEMBERS} are accepted.")
    if sum(member.file_size for member in members) > max_bytes:
        raise InputError(f"'{shown}' unpacks to more than {max_bytes / 1e6:.0f} MB, this server's limit.")
    series_folder = target / "dicom"
    series_folder.mkdir(mode=0o700)
    unpacked = 0
    for index, member in enumerate(members):
        # Written under a name of our own: a member called '../../x' lands here like any other.
        with archive.open(member) as source, open(series_folder / f"{index:05d}.dcm", "wb") as destination:
            while chunk := source.read(1 << 20):
                unpacked += len(chunk)
                if unpacked > max_bytes:  # the sizes in the directory can lie
                    raise InputError(f"'{shown}' unpacks to more than {max_bytes / 1e6:.0f} MB, this server's limit.")
                destination.write(chunk)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(series_folder))
    if len(series) != 1:
        raise InputError(f"'{shown}' holds {len(series)} DICOM series; upload a zip of exactly one series.")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError:
        raise InputError(f"'{shown}' is not a DICOM image series this app can read.") from None
    modality = reader.GetMetaData(0, "0008|0060").strip().upper() if reader.HasMetaDataKey(0, "0008|0060") else ""
    check_image_shape(image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(), shown)
    check_not_label_map(image, shown)
    path = target / "volume.nrrd"
    sitk.WriteImage(image, str(path), useCompression=False)
    shutil.rmtree(series_folder)
    return CheckedUpload(path, node_name(name), modality)
