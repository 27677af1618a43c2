"""Registration of a CT, SPECT or PET onto the MRI before fusion (Qt-free; docs/registration.md).

:func:`resolve_registration` decides what a requested choice means for a pair, :func:`register`
finds the transform, :func:`write_transform` / :func:`read_transform` keep it as an ITK ``.tfm``
(readable by Slicer and ITK).
"""

from __future__ import annotations

from pathlib import Path

from .align import register
from .plausibility import FRAME_OF_REFERENCE, is_volume, metadata
from .result import Registration, RegistrationError, homogeneous_matrix

REGISTRATION_CHOICES = ("auto", "none", "rigid", "affine")  # what a user can ask for
TRANSFORM_SUFFIX = ".tfm"  # ITK's text format, which Slicer and ITK read

__all__ = ["REGISTRATION_CHOICES", "Registration", "RegistrationError", "check_choice", "check_transform_path", "decide_registration",
           "homogeneous_matrix",
           "read_transform", "register", "resolve_registration", "transform_path_for", "write_transform"]


def check_choice(requested: str) -> str:
    """``requested`` if it is one of REGISTRATION_CHOICES, else RegistrationError."""
    if requested not in REGISTRATION_CHOICES:
        raise RegistrationError(f"unknown registration {requested!r}: choose one of {', '.join(REGISTRATION_CHOICES)}")
    return requested


def resolve_registration(requested: str, mri, other) -> tuple[str, str]:
    """('none' | 'rigid' | 'affine', reason) for a requested choice and a pair of SimpleITK images.

    auto: 'none' for 2D pictures and single slices (paired pixel to pixel), or when both images
    carry the same FrameOfReferenceUID (metadata kept by ``read_image``); 'rigid' otherwise.
    rigid or affine for a 2D picture or a single slice, or an unknown choice: RegistrationError.
    """
    flat = "MRI" if not is_volume(mri) else ("other image" if not is_volume(other) else None)
    return decide_registration(requested, flat=flat, mri_frame=metadata(mri, FRAME_OF_REFERENCE),
                               other_frame=metadata(other, FRAME_OF_REFERENCE))


def decide_registration(requested: str, *, flat: str | None, mri_frame: str | None,
                        other_frame: str | None) -> tuple[str, str]:
    """The rule of :func:`resolve_registration` on what it reads from the images (the Slicer panel reads it from nodes).

    flat:        None for two volumes, else which image ('MRI', 'other image', a node's name) is a
                 2D picture or a single slice.
    mri_frame, other_frame: the images' DICOM FrameOfReferenceUID, None or '' when unknown.
    """
    check_choice(requested)
    if requested == "none":
        return "none", "registration not requested"
    if requested in ("rigid", "affine"):
        if flat is not None:
            raise RegistrationError(f"{requested} registration needs two 3D volumes, but the {flat} is a 2D picture or a "
                                    "single slice; use --register none (pictures are paired pixel to pixel)")
        return requested, f"{requested} registration requested"
    if flat is not None:
        return "none", "2D pictures and single slices are paired pixel to pixel"
    if mri_frame and mri_frame == other_frame:
        return "none", "both images share one DICOM frame of reference"
    return "rigid", "the images do not share a known frame of reference"


def transform_path_for(output) -> Path:
    """Where the transform of a fused output is kept (fuse, batch --cohort): ``a/fused.nii.gz`` -> ``a/fused.tfm``."""
    from ..io.images import full_suffix

    output = Path(output)
    suffix = full_suffix(output)
    return output.with_name((output.name[:-len(suffix)] if suffix else output.name) + TRANSFORM_SUFFIX)


def check_transform_path(path) -> Path:
    """``path`` as a Path, after checking that a transform can be written there: a .tfm file in an
    existing, writable folder (callers check it before any work; :func:`write_transform` again)."""
    from ..io.images import check_folder_of

    path = Path(path)
    if path.suffix.lower() != TRANSFORM_SUFFIX:
        raise RegistrationError(f"cannot write the transform to {path}: use a {TRANSFORM_SUFFIX} file")
    check_folder_of(path)
    return path


def write_transform(registration: Registration, path) -> None:
    """Write the transform as an ITK transform file (.tfm), atomically.

    A rigid transform is written as the equivalent ``AffineTransform_double_3_3`` (same matrix,
    centre and translation): the one linear type every ITK and Slicer version reads.
    """
    import SimpleITK as sitk

    from ..io.files import atomic_path
    from .result import linear_part

    path = check_transform_path(path)
    matrix, centre, translation = linear_part(registration.transform)
    affine = sitk.AffineTransform(matrix.ravel().tolist(), translation.tolist(), centre.tolist())
    with atomic_path(path) as temporary:
        sitk.WriteTransform(affine, str(temporary))


def read_transform(path):
    """A SimpleITK transform from an ITK transform file (.tfm, .txt, .h5), downcast to its own class."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise RegistrationError(f"transform file not found: {path}")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown format"
        raise RegistrationError(f"cannot read the transform {path}: {reason}") from None
    try:
        return transform.Downcast()
    except (AttributeError, RuntimeError):
        return transform
