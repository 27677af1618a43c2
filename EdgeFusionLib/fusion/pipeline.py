"""Fusing images: checks, resampling onto the MRI grid, intensity windows, colour.

This is the one entry point that the command line, the batch and evaluate commands
and the Slicer module share. It works on SimpleITK images; the result carries the
MRI's geometry (size, spacing, origin, direction).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..errors import InputError
from ..io.images import as_rgb_or_scalar, as_scalar, as_slice_of, check_image, resample_onto, squeeze_single_slice
from ..modality import check_modality
from .engine import CancelCallback, FusionEngine, ProgressCallback
from .intensity import EIGHT_BIT_WINDOW, IntensityWindow, window_for


def default_axis(image) -> int:
    """The numpy axis (of ``GetArrayFromImage``'s z, y, x order) across the acquisition plane.

    That is the axis of the largest spacing (thick slices); isotropic volumes use axial (0).
    A single slice stored as a volume is fused across its one-voxel axis.
    """
    if image.GetDimension() == 2:
        return 0
    size = np.array(image.GetSize()[::-1])  # numpy order z, y, x
    if (size == 1).any():
        return int(np.argmax(size == 1))
    spacing = np.array(image.GetSpacing())  # x, y, z
    thickest = int(np.argmax(spacing[::-1]))  # numpy order z, y, x; argmax takes the first (z) on ties
    return thickest if spacing[::-1][thickest] > spacing.min() * 1.01 else 0


def prepare_inputs(mri, other, modality: str, colour_table: np.ndarray | None = None):
    """Checked (mri, other) images, ``other`` resampled onto the MRI grid. Does no fusion work.

    3D images, single slices included, are placed by their geometry and stay 3D.
    """
    other_modality = check_modality(modality)
    label = other_modality.label
    mri = as_scalar(mri, "MRI")
    other = as_rgb_or_scalar(other, label)
    check_image(mri, "MRI")
    check_image(other, label)
    if other.GetNumberOfComponentsPerPixel() == 3 and not other_modality.shown_in_colour:
        other = as_scalar(other, label)  # a CT stored as grey RGB
    if colour_table is not None and other.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"a colour table was given but the {label} image is already RGB")
    if mri.GetDimension() == other.GetDimension() == 3:
        return mri, resample_onto(mri, other, label)
    # 2D pictures (PNG, JPEG) carry no reliable geometry: they pair pixel to pixel with the other
    # image, which may be a single slice of a volume format; the result has the MRI's geometry.
    flat_mri, flat_other = squeeze_single_slice(mri), squeeze_single_slice(other)
    if flat_mri.GetDimension() != flat_other.GetDimension():
        raise InputError(f"the MRI is {mri.GetDimension()}D but the {label} is {other.GetDimension()}D")
    if flat_mri.GetSize() != flat_other.GetSize():
        raise InputError(f"the 2D images have different sizes: MRI {flat_mri.GetSize()}, {label} {flat_other.GetSize()}")
    return mri, (as_slice_of(flat_other, mri) if mri.GetDimension() == 3 else flat_other)


def fuse_images(mri, other, modality: str, *, method: str | None = None, axis: int | None = None,
                device: str = "auto", batch_size: int | None = None, model=None,
                colour_table: np.ndarray | None = None, colour_range: tuple[float, float] | None = None,
                ct_window: tuple[float, float] | None = None, registration: str = "none",
                registered: Callable | None = None,
                progress: ProgressCallback | None = None, cancel: CancelCallback | None = None):
    """Fuse an MRI with a CT, SPECT or PET image or volume (SimpleITK images).

    modality:     'ct', 'spect' or 'pet' (the other image); picks the trained model.
    method:       fusion method name (default: the task's default, see ``methods``).
    axis:         numpy slicing axis for volumes (default :func:`default_axis`).
    colour_table: (K, 3) in [0, 1] for a scalar SPECT/PET shown in pseudo-colour;
                  ``colour_range`` = the displayed (low, high) values (default: the counts window).
    ct_window:    (low, high) of a CT in its own units (default: -100..200 HU for a CT in
                  Hounsfield units, see ``intensity.window_for``).
    registration: one of ``registration.REGISTRATION_CHOICES`` ('none' by default: the pair is
                  placed by its headers); 'auto' registers rigidly unless both images share a
                  DICOM frame of reference or are 2D. ``registered(Registration)`` is called with
                  the result before fusion starts (with None when no registration ran).
    progress:     ``progress(done, total)``; with a registration, it covers the registration
                  first (``REGISTRATION_SHARE`` of ``PROGRESS_TOTAL``) and then the fusion.
    Returns a float32 image in [0, 1] (grey) or a uint8 RGB vector image (colour input),
    with the MRI's geometry. Raises InputError before any work for bad input (RegistrationError
    for a pair that cannot be registered or a refused registration) and FusionCancelled when
    ``cancel()`` returns True.
    """
    # The engine first: an unknown method or device, or missing weights, is refused before resampling.
    engine = FusionEngine(method, check_modality(modality).task, device, batch_size, model)
    other, result, progress = align_to_mri(mri, other, modality, registration, progress=progress, cancel=cancel)
    if registered is not None:
        registered(result)
    mri, other = prepare_inputs(mri, other, modality, colour_table)
    return fuse_prepared(mri, other, modality, engine, axis=axis, colour_table=colour_table,
                         colour_range=colour_range, ct_window=ct_window, progress=progress, cancel=cancel)


def align_to_mri(mri, other, modality: str, registration: str, *, progress: ProgressCallback | None = None,
                 cancel: CancelCallback | None = None):
    """(other, Registration or None, progress for the fusion): ``other`` registered onto the MRI's grid when
    ``registration`` (see :func:`fuse_images`) resolves to rigid or affine, else unchanged.

    The progress callback returned reports the fusion after the registration's share.
    """
    from ..registration import register, resolve_registration

    kind, _ = resolve_registration(registration, mri, other)
    if kind == "none":
        return other, None, progress
    result = register(mri, other, kind, label=check_modality(modality).label, cancel=cancel,
                      progress=None if progress is None else _registration_progress(progress))
    return _resampled(other, mri, result.transform), result, None if progress is None else _fusion_progress(progress)


PROGRESS_TOTAL = 1000  # progress units of a fusion with registration
REGISTRATION_SHARE = 0.5  # of them, the registration's


def _registration_progress(progress: ProgressCallback):
    return lambda fraction: progress(round(fraction * REGISTRATION_SHARE * PROGRESS_TOTAL), PROGRESS_TOTAL)


def _fusion_progress(progress: ProgressCallback):
    start = REGISTRATION_SHARE * PROGRESS_TOTAL
    return lambda done, total: progress(round(start + (PROGRESS_TOTAL - start) * done / total), PROGRESS_TOTAL)


def _resampled(other, mri, transform):
    """``other`` on the MRI grid through ``transform`` (linear; outside: its minimum), metadata kept."""
    sitk = _sitk()
    values = sitk.GetArrayViewFromImage(other)
    background = float(values.min()) if other.GetNumberOfComponentsPerPixel() == 1 else 0.0
    moved = sitk.Resample(other, mri, transform, sitk.sitkLinear, background, other.GetPixelID())
    for key in other.GetMetaDataKeys():
        moved.SetMetaData(key, other.GetMetaData(key))
    return moved


def fuse_prepared(mri, other, modality: str, engine: FusionEngine, *, axis: int | None = None,
                  colour_table: np.ndarray | None = None, colour_range: tuple[float, float] | None = None,
                  ct_window: tuple[float, float] | None = None,
                  progress: ProgressCallback | None = None, cancel: CancelCallback | None = None):
    """:func:`fuse_images` for images already returned by :func:`prepare_inputs`, with a given engine.

    For many pairs (``edgefusion batch``): each pair is checked once, and one engine (its
    weights loaded and folded once) serves them all.
    """
    sitk = _sitk()
    if axis is None:
        axis = default_axis(mri)
    mri_values = sitk.GetArrayViewFromImage(mri)
    other_values = sitk.GetArrayViewFromImage(other)
    other_window = _other_window(other_values, other.GetNumberOfComponentsPerPixel(), modality, colour_range, ct_window)
    fused = engine.fuse(mri_values, other_values, axis=axis, mri_window=window_for(mri_values, "mri"),
                        other_window=other_window, colour_table=colour_table, progress=progress, cancel=cancel)
    image = sitk.GetImageFromArray(fused, isVector=fused.ndim == mri_values.ndim + 1)
    image.CopyInformation(mri)
    return image


def _other_window(values: np.ndarray, components: int, modality: str, colour_range, ct_window) -> IntensityWindow:
    if colour_range is not None:
        return IntensityWindow(*colour_range)
    if components == 3:
        # RGB pseudo-colour: 8-bit, or already in [0, 1] / [0, max] for float RGB.
        return EIGHT_BIT_WINDOW if values.dtype == np.uint8 else IntensityWindow(0.0, max(float(values.max()), 1e-12))
    return window_for(values, modality, ct_window)


@functools.lru_cache(maxsize=8)
def _cached_engine(task: str, method: str | None, device: str) -> FusionEngine:
    return FusionEngine(method, task, device)


def fuse_2d_arrays(mri01: np.ndarray, other01: np.ndarray, task: str, method: str | None = None,
                   device: str = "auto") -> np.ndarray:
    """Fuse one registered 2D pair already in [0, 1] (grey, or the Y of a colour image).

    For evaluations and batch jobs: the engine (and its weights) is loaded once per
    (task, method, device) and reused. Returns (H, W) float32 in [0, 1].
    """
    if mri01.ndim != 2 or mri01.shape != other01.shape:
        raise InputError(f"expected two 2D images of the same size, got {mri01.shape} and {other01.shape}")
    engine = _cached_engine(task, method, device)
    return engine.fuse_grey(mri01[np.newaxis].astype(np.float32), other01[np.newaxis].astype(np.float32))[0]


def _sitk():
    import SimpleITK as sitk

    return sitk
