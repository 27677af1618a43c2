"""Mapping raw intensities to the network's [0, 1] range, per modality.

The network was trained on 8-bit atlas images scaled by 1/255, so every input is
brought to a comparable look before fusion:

* 8-bit pictures (2D PNG/JPEG, any modality): value / 255, as in training; they were
  windowed for display already (the atlas images by radiologists).
* MRI volumes (any type, 8-bit included): a window learnt from the head tissue itself.
  MRI has no absolute scale, and a real T1 stored as it came from the scanner puts the
  brain at 20-35 % of its range because fat and skull are brightest; linearly scaled,
  the brain is then too dark to hold its own against the other image. The head tissue
  is the voxels above Otsu's threshold (computed between the 0.5th and 99.5th
  percentiles of the voxels above the minimum; when its upper class is under a quarter of
  them it split fat/skull from the rest, and is taken again below); the window maps the
  background's 99th percentile to 0 (noise stays black instead of being lifted by the
  gamma) and the tissue's 99.5th percentile to 1, with a gamma that puts the tissue's median at
  ``MRI_TISSUE_MEDIAN_TARGET`` (0.6; gamma kept within ``MRI_GAMMA_RANGE``). A few very
  bright voxels (vessels, fat, artefacts) saturate instead of compressing the brain.
* CT in Hounsfield units (recognised by a minimum below -500, i.e. air): the fixed
  window [-100, 200] HU -> [0, 1]. It matches the atlas CT images the model learnt
  from: air and fat black, CSF and brain mid-grey (about 0.35-0.45), bone saturated
  white. A fixed window (not a percentile) keeps the mapping identical across patients
  and scanners. A CT without air values is scaled like an MRI, unless the caller
  gives its window explicitly.
* SPECT/PET counts: [0, 99.9th percentile] -> [0, 1]; counts are non-negative (values
  below 0 are reconstruction noise and are clipped to 0) and the hottest voxels should
  keep their contrast instead of one outlier setting the scale.

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
MRI_TISSUE_MEDIAN_TARGET = 0.6
MRI_GAMMA_RANGE = (1 / 3, 3.0)
# Otsu's class above the threshold is the head unless it is this small a share of the non-background voxels.
MRI_MIN_TISSUE_SHARE = 0.25
# The window starts at this percentile of the background (the voxels below Otsu's threshold): noise stays black.
MRI_BACKGROUND_PERCENTILE = 99.0
COUNTS_UPPER_PERCENTILE = 99.9
PERCENTILE_SAMPLES = 2_000_000
# Below this minimum a non-8-bit CT is taken to be in Hounsfield units (air is -1000 HU).
HU_AIR_THRESHOLD = -500.0


@dataclasses.dataclass(frozen=True)
class IntensityWindow:
    """Map of [low, high] onto [0, 1], clipped outside: linear, then raised to ``gamma`` (1: linear)."""

    low: float
    high: float
    gamma: float = 1.0

    def __post_init__(self):
        if not np.isfinite(self.low) or not np.isfinite(self.high) or self.high <= self.low:
            raise InputError(f"invalid intensity window [{self.low}, {self.high}]: it needs low < high")
        if not (np.isfinite(self.gamma) and self.gamma > 0):
            raise InputError(f"invalid intensity window gamma {self.gamma}: it must be positive")

    def apply(self, values: np.ndarray) -> np.ndarray:
        """float32 values in [0, 1]."""
        scaled = (np.asarray(values, dtype=np.float32) - np.float32(self.low)) / np.float32(self.high - self.low)
        scaled = np.clip(scaled, 0.0, 1.0, out=scaled)
        if self.gamma != 1.0:
            np.power(scaled, np.float32(self.gamma), out=scaled)
        return scaled


UNIT_WINDOW = IntensityWindow(0.0, 1.0)
EIGHT_BIT_WINDOW = IntensityWindow(0.0, 255.0)


def strided_sample(values: np.ndarray, max_samples: int = PERCENTILE_SAMPLES) -> np.ndarray:
    """An evenly strided, deterministic subsample of at most ``max_samples`` values (1-D)."""
    flat = values.reshape(-1)  # a view for contiguous arrays
    step = max(1, -(-flat.size // max_samples))
    return flat[::step]


def window_for(values: np.ndarray, modality: str, ct_window: tuple[float, float] | None = None) -> IntensityWindow:
    """The intensity window for an image of ``modality`` (see the module docstring).

    ``values`` is the scalar image (any shape; a volume is 3D with more than one slice, anything
    else is a picture); for RGB images use :data:`EIGHT_BIT_WINDOW`.
    ``ct_window``: (low, high) in the CT's own units, used for any CT when given; by default
    a CT in Hounsfield units gets :data:`CT_WINDOW_HU`.
    Raises InputError for an image without contrast.
    """
    if modality not in WINDOW_KINDS:
        raise InputError(f"unknown modality {modality!r}; choose one of {', '.join(WINDOW_KINDS)}")
    if modality == "ct" and ct_window is not None:
        return IntensityWindow(*ct_window)
    volume = values.ndim == 3 and min(values.shape) > 1
    if values.dtype == np.uint8 and not (volume and modality == "mri"):
        return EIGHT_BIT_WINDOW
    sample = strided_sample(values)
    low = float(values.min())
    if modality == "ct" and low < HU_AIR_THRESHOLD:
        return IntensityWindow(*CT_WINDOW_HU)
    if modality in ("spect", "pet"):
        low = 0.0  # negative counts are reconstruction noise
        high = float(np.percentile(sample, COUNTS_UPPER_PERCENTILE))
    elif modality == "mri" and volume:
        window = mri_tissue_window(sample, low)
        if window is not None:
            return window
        high = float(np.percentile(sample, MRI_UPPER_PERCENTILE))
    else:
        high = float(np.percentile(sample, MRI_UPPER_PERCENTILE))
    if high <= low:  # mostly-background images: fall back to the full range
        high = float(values.max())
    if high <= low:
        raise InputError(f"the {modality.upper()} image is constant (all values {low:g}); there is nothing to fuse")
    return IntensityWindow(low, high)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of 1-D ``values``: the histogram cut that maximises the between-class variance."""
    histogram, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def mri_tissue_window(sample: np.ndarray, low: float) -> IntensityWindow | None:
    """The MRI window learnt from the head tissue of ``sample`` (see the module docstring), or None
    when the sample has no tissue above the background to learn from."""
    inside = sample[sample > low].astype(np.float64)
    if inside.size < 27:
        return None
    bottom, top = np.percentile(inside, [0.5, 99.5])
    if not top > bottom:
        return None
    clipped = np.clip(inside, bottom, top)
    threshold = otsu_threshold(clipped)
    if np.mean(clipped > threshold) < MRI_MIN_TISSUE_SHARE:  # it split fat/skull from the rest: split again below
        threshold = otsu_threshold(clipped[clipped <= threshold])
    tissue = inside[inside > threshold]
    if tissue.size < 27:
        return None
    background = sample[sample <= threshold]
    low = float(np.percentile(background, MRI_BACKGROUND_PERCENTILE)) if background.size else low
    high = float(np.percentile(tissue, MRI_UPPER_PERCENTILE))
    median = (float(np.median(tissue)) - low) / (high - low) if high > low else 0.0
    if not 0.0 < median < 1.0:
        return None
    gamma = float(np.clip(np.log(MRI_TISSUE_MEDIAN_TARGET) / np.log(median), *MRI_GAMMA_RANGE))
    return IntensityWindow(low, high, gamma)
