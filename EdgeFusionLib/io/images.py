"""Reading, checking, resampling and writing images and volumes with SimpleITK.

2D: PNG, JPEG, TIFF, BMP. 3D: NIfTI, NRRD, MHA/MHD and DICOM series (a folder).
Every check raises :class:`~EdgeFusionLib.errors.InputError` with a one-line message
naming the file and the problem, before any fusion work starts.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from .files import atomic_path

# DICOM tags kept in an image's metadata under a plain name (registration: ``auto`` and the patient check).
KEPT_DICOM_TAGS = {"0020|0052": "FrameOfReferenceUID", "0010|0020": "PatientID"}
# Single-file formats only: a header + data pair (.nhdr, .mhd) could not be renamed atomically.
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".png", ".tif", ".tiff")
TWO_D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _sitk():
    import SimpleITK as sitk

    return sitk


def full_suffix(path: Path | str) -> str:
    """'.nii.gz' for 'a.nii.gz', else the last suffix, lower case."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def read_image(path: Path | str, role: str = "image"):
    """A SimpleITK image from a file, or from a folder holding one DICOM series."""
    sitk = _sitk()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} not found: {path}")
    try:
        if path.is_dir():
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise InputError(f"{role} folder {path} holds no DICOM series")
            if len(series) > 1:
                raise InputError(f"{role} folder {path} holds {len(series)} DICOM series; point to a folder with one")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
            reader.MetaDataDictionaryArrayUpdateOn()
            image = reader.Execute()
            for tag in ("0008|0060", *KEPT_DICOM_TAGS):
                if reader.HasMetaDataKey(0, tag):
                    image.SetMetaData(tag, reader.GetMetaData(0, tag))
            return _with_plain_names(image)
        if path.suffix.lower() == ".gz":
            _check_gzip_complete(path, role)
        return _with_plain_names(sitk.ReadImage(str(path)))
    except InputError:
        raise
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown format"
        raise InputError(f"cannot read {role} {path}: {reason}") from None


def _with_plain_names(image):
    """``image`` with its DICOM frame of reference and patient ID also under 'FrameOfReferenceUID', 'PatientID'."""
    for tag, name in KEPT_DICOM_TAGS.items():
        if image.HasMetaDataKey(tag) and not image.HasMetaDataKey(name):
            value = image.GetMetaData(tag).strip().strip("\x00").strip()
            if value:
                image.SetMetaData(name, value)
    return image


def _check_gzip_complete(path: Path, role: str) -> None:
    """Refuse a truncated or corrupt .gz file: ITK's NIfTI reader fills a cut-off stream with zeros."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):  # 16 MiB at a time: memory stays bounded
                pass
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(f"cannot read {role} {path}: the compressed file is truncated or corrupt ({error})") from None


def as_scalar(image, role: str):
    """The image as one scalar channel. Grey stored as RGB(A) (all channels equal) is accepted."""
    sitk = _sitk()
    components = image.GetNumberOfComponentsPerPixel()
    if components == 1:
        return image
    view = sitk.GetArrayViewFromImage(image)
    if components in (3, 4) and np.array_equal(view[..., 0], view[..., 1]) and np.array_equal(view[..., 0], view[..., 2]):
        return sitk.VectorIndexSelectionCast(image, 0)
    raise InputError(f"the {role} must be a single-channel (grey) image, but it has {components} channels")


def as_rgb_or_scalar(image, role: str):
    """A scalar image, or a 3-channel RGB image (alpha dropped); other channel counts are refused."""
    sitk = _sitk()
    components = image.GetNumberOfComponentsPerPixel()
    if components == 1:
        return image
    if components == 4:
        return sitk.Compose([sitk.VectorIndexSelectionCast(image, index) for index in range(3)])
    if components == 3:
        return image
    raise InputError(f"the {role} has {components} channels; expected grey or RGB")


def check_image(image, role: str) -> None:
    """2D or 3D, not empty, finite, not constant."""
    sitk = _sitk()
    dimension = image.GetDimension()
    if dimension not in (2, 3):
        raise InputError(f"the {role} is {dimension}D; only 2D images and 3D volumes can be fused")
    if 0 in image.GetSize():
        raise InputError(f"the {role} is empty (size {image.GetSize()})")
    values = sitk.GetArrayViewFromImage(image)
    if image.GetNumberOfComponentsPerPixel() == 1:
        values = values[..., np.newaxis]
    # Per channel: one colour everywhere is as constant as one grey. NaN propagates through min/max.
    low = values.min(axis=tuple(range(values.ndim - 1)))
    high = values.max(axis=tuple(range(values.ndim - 1)))
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise InputError(f"the {role} contains NaN or infinite values")
    if np.array_equal(low, high):
        shown = low[0] if low.size == 1 else tuple(low.tolist())
        raise InputError(f"the {role} is constant (all values {shown}); there is nothing to fuse")


def squeeze_single_slice(image):
    """A 3D image one voxel thick (a single slice, e.g. one DICOM file) as 2D; anything else unchanged."""
    if image.GetDimension() == 3 and 1 in image.GetSize():
        index = [slice(None)] * 3
        index[image.GetSize().index(1)] = 0
        return image[tuple(index)]
    return image


def as_slice_of(picture, reference):
    """A 2D picture (no geometry) as the single slice ``reference`` is, with its geometry."""
    sitk = _sitk()
    values = sitk.GetArrayFromImage(picture)
    components = picture.GetNumberOfComponentsPerPixel()
    shape = sitk.GetArrayViewFromImage(reference).shape + ((components,) if components > 1 else ())
    image = sitk.GetImageFromArray(values.reshape(shape), isVector=components > 1)
    image.CopyInformation(reference)
    return image


def to_8bit(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) as uint8 0-255, halves rounded up: every 8-bit output is made here."""
    return np.floor(np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def same_grid(a, b, tolerance: float = 1e-4) -> bool:
    """True when two images share size, spacing, origin and direction."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def physical_bounds(image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned (min, max) corners of the image's voxel extent in physical space (mm)."""
    size = np.array(image.GetSize(), dtype=float)
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in size], indexing="ij")).reshape(len(size), -1).T
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(corner.tolist()) for corner in corners])
    return points.min(axis=0), points.max(axis=0)


def overlap_fraction(reference, moving) -> float:
    """Fraction of the reference's bounding box that the moving image's bounding box covers."""
    ref_low, ref_high = physical_bounds(reference)
    mov_low, mov_high = physical_bounds(moving)
    inter = np.clip(np.minimum(ref_high, mov_high) - np.maximum(ref_low, mov_low), 0, None)
    return float(np.prod(inter) / np.prod(ref_high - ref_low))


def resample_onto(reference, moving, role: str = "other image"):
    """``moving`` resampled (linear) onto ``reference``'s grid in physical space.

    Voxels outside ``moving`` get its minimum value (background). Refuses images whose
    physical extents do not overlap, or that hold none of the reference's voxel centres
    (e.g. a thin slice beside a thick one's centre). Returns ``moving`` itself when the
    grids already match.
    """
    sitk = _sitk()
    if same_grid(reference, moving):
        return moving
    if overlap_fraction(reference, moving) <= 0:
        raise InputError(f"the MRI and the {role} do not overlap in physical space; are they of the same patient and registered?")
    footprint = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    footprint.CopyInformation(moving)
    covered = sitk.Resample(footprint, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    if sitk.GetArrayViewFromImage(covered).max() == 0:
        raise InputError(f"the {role} holds none of the MRI's voxel centres (e.g. a thin slice beside the MRI slice's "
                         "centre); resample it onto the MRI first")
    background = float(sitk.GetArrayViewFromImage(moving).min())
    return sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkLinear, background, moving.GetPixelID())


def check_output_format(path: Path | str, image) -> None:
    """Refuse a volume for a 2D-only format (PNG, TIFF); a single slice is written as 2D."""
    if full_suffix(path) in TWO_D_SUFFIXES and squeeze_single_slice(image).GetDimension() != 2:
        raise InputError(f"cannot write a {image.GetDimension()}D volume as {full_suffix(path)}; use .nii.gz or .nrrd")


def check_not_an_input(output: Path | str, inputs: dict[str, Path | str]) -> None:
    """Refuse an output (file or folder) that is one of the inputs ({role: path}): inputs are never overwritten."""
    output = Path(output)
    for role, source in inputs.items():
        if output.exists() and Path(source).exists() and os.path.samefile(output, source):
            raise InputError(f"the output {output} is the {role} input; choose another output so that the input is kept")


def check_writable(path: Path | str) -> Path:
    """The output path, after checking its format and that its folder exists and is writable."""
    path = Path(path)
    if full_suffix(path) not in WRITE_SUFFIXES:
        raise InputError(f"cannot write {path}: use one of {', '.join(WRITE_SUFFIXES)}")
    check_folder_of(path)
    if path.is_dir():
        raise InputError(f"output path is a folder: {path}")
    return path


def check_folder_of(path: Path | str) -> Path:
    """The folder an output file goes into, after checking that it exists and is writable (none is made)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder is not writable: {folder}")
    return folder


def check_output_folder(folder: Path | str, role: str = "output folder") -> Path:
    """A folder to write into: an existing writable folder, or one that can be made with its missing parents."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{role} is a file: {folder}")
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())  # '.' or '/' at the latest
    if not existing.is_dir():
        raise InputError(f"cannot make {role} {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {folder}")
    return folder


def to_savable(image, path: Path | str):
    """Cast for the format: PNG/TIFF get 8 bits (float [0, 1] scaled to 0-255), others unchanged."""
    sitk = _sitk()
    if full_suffix(path) in TWO_D_SUFFIXES and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        eight_bit = sitk.GetImageFromArray(to_8bit(sitk.GetArrayViewFromImage(image)))
        eight_bit.CopyInformation(image)
        return eight_bit
    return image


def write_image(image, path: Path | str) -> None:
    """Write atomically: a temporary file in the same folder, renamed when complete."""
    sitk = _sitk()
    path = check_writable(path)
    check_output_format(path, image)
    suffix = full_suffix(path)
    if suffix in TWO_D_SUFFIXES:
        image = squeeze_single_slice(image)
    with atomic_path(path) as temporary:
        sitk.WriteImage(to_savable(image, path), str(temporary), useCompression=suffix not in TWO_D_SUFFIXES)
