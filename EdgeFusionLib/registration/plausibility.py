"""Checks before a registration (can this pair be registered?) and after it (is the result believable?).

Every refusal is a :class:`RegistrationError` whose one line says what to check. The limits
are for scans of one patient's head: the scanners' frames differ by a patient position
(``align.START_ORIENTATIONS``) plus a few degrees and centimetres, never by more.
"""

from __future__ import annotations

import numpy as np

from ..io.images import check_image, overlap_fraction
from .result import RegistrationError, linear_part, polar, rotation_angle_deg

MAX_ROTATION_DEG = 30.0  # beyond the start orientation
MAX_TRANSLATION_MM = 80.0
MAX_SCALE_CHANGE = 0.15  # affine: each scale within 1 +- this
MAX_SHEAR = 0.15  # affine: each shear (off-diagonal of the QR's triangular factor / its scale)
METRIC_TOLERANCE = 0.01  # relative: a pair aligned from the start may end a hair above its start metric
MIN_COVERAGE = 0.5  # overlap of the two head masks at the result, as a fraction of the smaller one
PATIENT_ID = "PatientID"
FRAME_OF_REFERENCE = "FrameOfReferenceUID"

ADVICE = "check that both images are of the same patient and overlap, or use --register none for a pair known to be aligned"


def metadata(image, key: str) -> str | None:
    """A metadata value kept by ``read_image`` (e.g. 'PatientID'), stripped; None when absent or empty."""
    if not image.HasMetaDataKey(key):
        return None
    value = image.GetMetaData(key).strip().strip("\x00").strip()
    return value or None


def is_volume(image) -> bool:
    """True for a 3D image more than one voxel thick along every axis (not a 2D picture or a single slice)."""
    return image.GetDimension() == 3 and min(image.GetSize()) > 1


def check_pair(mri, other, label: str = "other image") -> None:
    """Refuse, before any work, a pair that cannot be registered: 2D, constant, other patient, no overlap."""
    for image, role in ((mri, "MRI"), (other, label)):
        if not is_volume(image):
            raise RegistrationError(f"the {role} is a {image.GetDimension()}D picture or a single slice "
                                    f"(size {image.GetSize()}); registration needs two 3D volumes: use --register none "
                                    "for pictures that are already aligned")
        try:
            check_image(image, role)
        except RegistrationError:
            raise
        except ValueError as error:  # InputError: constant, NaN, empty
            raise RegistrationError(f"cannot register: {error}") from None
    mri_patient, other_patient = metadata(mri, PATIENT_ID), metadata(other, PATIENT_ID)
    if mri_patient and other_patient and mri_patient != other_patient:
        raise RegistrationError(f"the MRI (patient {mri_patient!r}) and the {label} (patient {other_patient!r}) are of "
                                "different patients; choose the images of one patient")
    if overlap_fraction(mri, other) <= 0:
        raise RegistrationError(f"the MRI and the {label} do not overlap in physical space; check that they are the "
                                "right pair (a scan of another body part or a wrong header cannot be registered)")


def check_transform(kind: str, transform, start_rotation: np.ndarray, point) -> None:
    """Refuse an implausible result: more than 30° beyond the start orientation, a displacement of
    ``point`` (the MRI's centre, mm) over 80 mm, an affine scale off by over 15 % or a shear."""
    matrix, centre, translation = linear_part(transform)
    rotation = polar(matrix)[0]
    extra = rotation_angle_deg(rotation @ np.asarray(start_rotation).T)
    point = np.asarray(point, dtype=float)
    shift = float(np.linalg.norm(matrix @ (point - centre) + centre + translation - point))
    if extra > MAX_ROTATION_DEG:
        raise RegistrationError(f"registration refused: it rotates the image by {extra:.0f}° (more than "
                                f"{MAX_ROTATION_DEG:.0f}°); {ADVICE}")
    if shift > MAX_TRANSLATION_MM:
        raise RegistrationError(f"registration refused: it moves the image by {shift:.0f} mm (more than "
                                f"{MAX_TRANSLATION_MM:.0f} mm); {ADVICE}")
    if kind == "affine":
        # matrix = Q U (Q a rotation, U upper triangular): U's diagonal holds the scales, its
        # off-diagonal divided by the row's scale the shears.
        upper = np.linalg.qr(matrix)[1]
        scales = np.abs(np.diag(upper))
        if np.any(np.abs(scales - 1.0) > MAX_SCALE_CHANGE):
            raise RegistrationError(f"registration refused: the affine scales the image by {_list(scales)} (more than "
                                    f"{MAX_SCALE_CHANGE:.0%} off); {ADVICE}, or use --register rigid")
        shear = float(np.abs(np.triu(upper, 1) / scales[:, np.newaxis]).max())
        if shear > MAX_SHEAR:
            raise RegistrationError(f"registration refused: the affine shears the image by {shear:.2f} (more than "
                                    f"{MAX_SHEAR:.2f}); {ADVICE}, or use --register rigid")


def check_progress(metric_start: float, metric_final: float, converged: bool, stop: str) -> None:
    """Refuse a registration that made the metric worse (beyond ``METRIC_TOLERANCE``: an aligned pair
    starts at its optimum and may end a rounding error above it), or whose optimiser did not converge."""
    if not converged:
        raise RegistrationError(f"registration did not converge ({stop}); {ADVICE}")
    if worse(metric_final, metric_start):
        raise RegistrationError(f"registration made the match worse (metric {metric_start:.3f} -> {metric_final:.3f}); "
                                f"{ADVICE}")


def worse(metric_after: float, metric_before: float) -> bool:
    """True when ``metric_after`` is worse (higher) than ``metric_before`` beyond ``METRIC_TOLERANCE``."""
    return metric_after > metric_before + METRIC_TOLERANCE * max(abs(metric_before), 0.1)


def check_affine_gain(metric_rigid: float, metric_affine: float) -> None:
    """Refuse an affine result that matches worse than the rigid one it started from."""
    if worse(metric_affine, metric_rigid):
        raise RegistrationError(f"the affine registration made the rigid one worse (metric {metric_rigid:.3f} -> "
                                f"{metric_affine:.3f}); use --register rigid")


def check_coverage(coverage: float, label: str) -> None:
    """Refuse a result where the two heads overlap by less than ``MIN_COVERAGE`` of the smaller one."""
    if coverage < MIN_COVERAGE:
        raise RegistrationError(f"registration refused: the heads in the MRI and the {label} overlap by only "
                                f"{coverage:.0%} at the result; {ADVICE}")


def _list(values) -> str:
    return "/".join(f"{value:.2f}" for value in values)
