"""What a registration returns, and the sizes of a transform (rotation in degrees, translation in mm)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InputError


class RegistrationError(InputError):
    """A pair that cannot be registered, or a registration refused as implausible (one line: what to check)."""


@dataclasses.dataclass(frozen=True)
class Registration:
    """The transform that puts the other image (CT/SPECT/PET) on the MRI, and how it was found.

    transform:      ITK convention: maps MRI (fixed) physical points to OTHER (moving) points, so
                    ``sitk.Resample(other, mri, transform)`` puts the other image on the MRI grid.
    metric_start:   Mattes mutual information at the start pose (lower is better).
    metric_final:   the same metric at the result.
    rotation_deg:   angle of the transform's rotation (polar part for an affine).
    translation_mm: displacement of the MRI's centre, |T(c) - c|.
    start:          the start pose the optimisation began from (see ``align.START_ORIENTATIONS``).
    """

    kind: str
    transform: object
    metric_start: float
    metric_final: float
    rotation_deg: float
    translation_mm: float
    seconds: float
    start: str = "geometry"
    iterations: int = 0

    def summary(self) -> str:
        """One line, e.g. ``rigid: metric -0.31 -> -0.52, rotation 4.1°, translation 12.3 mm, 8.2 s``."""
        start = "" if self.start == "geometry" else f" (start: {self.start})"
        return (f"{self.kind}: metric {self.metric_start:.2f} -> {self.metric_final:.2f}, rotation "
                f"{self.rotation_deg:.1f}°, translation {self.translation_mm:.1f} mm, {self.seconds:.1f} s{start}")

    def to_json(self) -> dict:
        """JSON-serialisable: the numbers, and the transform as its ITK parameters."""
        transform = self.transform
        return {
            "kind": self.kind,
            "metric_start": float(self.metric_start),
            "metric_final": float(self.metric_final),
            "rotation_deg": float(self.rotation_deg),
            "translation_mm": float(self.translation_mm),
            "seconds": float(self.seconds),
            "start": self.start,
            "iterations": int(self.iterations),
            "transform": {"class": transform.GetName(), "parameters": list(transform.GetParameters()),
                          "fixed_parameters": list(transform.GetFixedParameters())},
        }


def linear_part(transform) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matrix 3x3, centre, translation) of a 3D rigid/affine SimpleITK transform: T(x) = M (x - c) + c + t."""
    import SimpleITK as sitk

    transform = _as_concrete(transform)
    if not isinstance(transform, (sitk.Euler3DTransform, sitk.AffineTransform, sitk.VersorRigid3DTransform,
                                  sitk.Similarity3DTransform, sitk.TranslationTransform)):
        raise RegistrationError(f"expected a 3D rigid or affine transform, got {transform.GetName()}")
    if isinstance(transform, sitk.TranslationTransform):
        return np.eye(3), np.zeros(3), np.array(transform.GetOffset(), dtype=float)
    matrix = np.array(transform.GetMatrix(), dtype=float).reshape(3, 3)
    return matrix, np.array(transform.GetCenter(), dtype=float), np.array(transform.GetTranslation(), dtype=float)


def homogeneous_matrix(transform) -> np.ndarray:
    """The 4x4 matrix of a 3D rigid/affine transform in LPS mm, MRI points to OTHER points (ITK's direction).

    For Slicer (RAS, and a transform node's "to parent" direction): flip x and y with
    ``diag(-1, -1, 1, 1)`` on both sides and invert, to move the OTHER volume onto the MRI.
    """
    matrix, centre, translation = linear_part(transform)
    result = np.eye(4)
    result[:3, :3] = matrix
    result[:3, 3] = centre + translation - matrix @ centre
    return result


def _as_concrete(transform):
    """A generic ``sitk.Transform`` (e.g. read from a .tfm) downcast to its own class."""
    import SimpleITK as sitk

    if type(transform) is sitk.Transform:
        try:
            return transform.Downcast()
        except (AttributeError, RuntimeError):
            return transform
    return transform


def polar(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rotation R, stretch S) with matrix = R S, S symmetric positive definite (polar decomposition)."""
    u, _, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:  # a reflection: keep R a rotation, S takes the sign
        u[:, -1] *= -1
        rotation = u @ vt
    return rotation, np.linalg.solve(rotation, matrix)


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle (degrees, 0..180) of a 3x3 rotation matrix."""
    cosine = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)))


def transform_sizes(transform, point) -> tuple[float, float]:
    """(rotation in degrees, displacement of ``point`` in mm) of a 3D rigid/affine transform."""
    matrix, centre, translation = linear_part(transform)
    point = np.asarray(point, dtype=float)
    moved = matrix @ (point - centre) + centre + translation
    return rotation_angle_deg(polar(matrix)[0]), float(np.linalg.norm(moved - point))
