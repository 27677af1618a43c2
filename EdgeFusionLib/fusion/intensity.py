"""Mapping raw intensities to the network's [0, 1] range, per modality.

The network was trained on 8-bit atlas images scaled by 1/255, so every input is
brought to a comparable look before fusion:

* 8-bit images (PNG/JPEG, any modality): value / 255, as in training.
* MRI in arbitrary units: [minimum, 99.5th percentile] -> [0, 1]. MRI has no
  absolute scale; the percentile keeps a few very bright voxels (vessels, fat,
  artefacts) from compressing the brain into the dark end.
* CT in Hounsfield units (recognised by a minimum below -500, i.e. air): the fixed
  window [-100, 200] HU -> [0, 1]. It matches the atlas CT images the model learnt
  from: air and fat black, CSF and brain mid-grey (about 0.35-0.45), bone saturated
  white. A fixed window (not a percentile) keeps the mapping identical across patients
  and scanners. A CT without air values is scaled like an MRI, unless the caller
  gives its window explicitly.
* SPECT/PET counts: [0, 99.9th percentile] -> [0, 1]; counts are non-negative and
  the hottest voxels should keep their contrast instead of one outlier setting the scale.

Percentiles are estimated on an evenly strided subsample of at most
``PERCENTILE_SAMPLES`` voxels, so memory does not grow with the volume.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InputError
from ..modality import MODALITIES

#: Every image gets a window by its kind: the MRI's, or the other modality's.
WINDOW_KINDS = ("mri", *MODALITIES)
CT_WINDOW_HU = (-100.0, 200.0)
MRI_UPPER_PERCENTILE = 99.5
COUNTS_UPPER_PERCENTILE = 99.9
PERCENTILE_SAMPLES = 2_000_000
# Below this minimum a non-8-bit CT is taken to be in Hounsfield units (air is -1000 HU).
HU_AIR_THRESHOLD = -500.0


@dataclasses.dataclass(frozen=True)
class IntensityWindow:
    """Linear map of [low, high] onto [0, 1], clipped outside."""

    low: float
    high: float

    def __post_init__(self):
        if not np.isfinite(self.low) or not np.isfinite(self.high) or self.high <= self.low:
            raise InputError(f"invalid intensity window [{self.low}, {self.high}]: it needs low < high")

    def apply(self, values: np.ndarray) -> np.ndarray:
        """float32 values in [0, 1]."""
        scaled = (np.asarray(values, dtype=np.float32) - np.float32(self.low)) / np.float32(self.high - self.low)
        return np.clip(scaled, 0.0, 1.0, out=scaled)


UNIT_WINDOW = IntensityWindow(0.0, 1.0)
EIGHT_BIT_WINDOW = IntensityWindow(0.0, 255.0)


def strided_sample(values: np.ndarray, max_samples: int = PERCENTILE_SAMPLES) -> np.ndarray:
    """An evenly strided, deterministic subsample of at most ``max_samples`` values (1-D)."""
    flat = values.reshape(-1)  # a view for contiguous arrays
    step = max(1, -(-flat.size // max_samples))
    return flat[::step]


def window_for(values: np.ndarray, modality: str, ct_window: tuple[float, float] | None = None) -> IntensityWindow:
    """The intensity window for an image of ``modality`` (see the module docstring).

    ``values`` is the scalar image (any shape); for RGB images use :data:`EIGHT_BIT_WINDOW`.
    ``ct_window``: (low, high) in the CT's own units, used for any CT when given; by default
    a CT in Hounsfield units gets :data:`CT_WINDOW_HU`.
    Raises InputError for an image without contrast.
    """
    if modality not in WINDOW_KINDS:
        raise InputError(f"unknown modality {modality!r}; choose one of {', '.join(WINDOW_KINDS)}")
    if modality == "ct" and ct_window is not None:
        return IntensityWindow(*ct_window)
    if values.dtype == np.uint8:
        return EIGHT_BIT_WINDOW
    sample = strided_sample(values)
    low = float(values.min())
    if modality == "ct" and low < HU_AIR_THRESHOLD:
        return IntensityWindow(*CT_WINDOW_HU)
    if modality in ("spect", "pet"):
        low = min(low, 0.0)
        high = float(np.percentile(sample, COUNTS_UPPER_PERCENTILE))
    else:
        high = float(np.percentile(sample, MRI_UPPER_PERCENTILE))
    if high <= low:  # mostly-background images: fall back to the full range
        high = float(values.max())
    if high <= low:
        raise InputError(f"the {modality.upper()} image is constant (all values {low:g}); there is nothing to fuse")
    return IntensityWindow(low, high)
