"""Colour handling for pseudo-colour SPECT/PET (docs/method.md §3).

The network fuses one grey channel. A pseudo-colour image is split into
luma Y and chroma Cb/Cr (ITU-R BT.601 full range, as PIL's ``convert('YCbCr')``);
Y is fused with the MRI and the original chroma is put back.

All functions work on float arrays in [0, 1] with colour in the last axis.
"""

from __future__ import annotations

import numpy as np

# BT.601 full-range (JPEG/JFIF) matrix, rows Y, Cb, Cr; chroma is offset by 0.5.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1], shape (..., 3) -> YCbCr in [0, 1], shape (..., 3) (float32)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected an RGB array with 3 components in the last axis, got shape {rgb.shape}")
    ycc = rgb @ _RGB_TO_YCBCR.T.astype(np.float32)
    ycc[..., 1:] += 0.5
    return ycc


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """YCbCr in [0, 1], shape (..., 3) -> RGB clipped to [0, 1] (float32)."""
    ycc = np.array(ycc, dtype=np.float32)  # copy: the chroma offset is removed in place
    if ycc.shape[-1] != 3:
        raise ValueError(f"expected a YCbCr array with 3 components in the last axis, got shape {ycc.shape}")
    ycc[..., 1:] -= 0.5
    return np.clip(ycc @ _YCBCR_TO_RGB.T.astype(np.float32), 0.0, 1.0)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Y (BT.601) of an RGB array in [0, 1], shape (..., 3) -> (...)."""
    return rgb_to_ycbcr(rgb)[..., 0]


def replace_luma(rgb: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``rgb`` with its luma replaced by ``y`` (in [0, 1]) and its hue kept, in [0, 1].

    The luma of the result is ``y`` exactly: where ``y`` with the original chroma falls outside
    the RGB cube (a bright fused luma under a saturated red, say), the chroma is scaled down toward
    grey until it fits, rather than clipping the channels, which lowered the luma (a fused white
    became a dull yellow). Where ``y`` is the original luma the original colour is returned.
    """
    ycc = rgb_to_ycbcr(rgb)
    if y.shape != ycc.shape[:-1]:
        raise ValueError(f"luma shape {y.shape} does not match image shape {ycc.shape[:-1]}")
    y = np.clip(np.asarray(y, dtype=np.float32), 0.0, 1.0)
    chroma = ycc[..., 1:] - 0.5
    offsets = chroma @ _YCBCR_TO_RGB[:, 1:].T.astype(np.float32)  # RGB = Y + offsets (BT.601: Y's column is 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(offsets > 0, (1.0 - y[..., None]) / offsets, np.where(offsets < 0, -y[..., None] / offsets, np.inf))
    scale = np.clip(room.min(axis=-1), 0.0, 1.0)
    return np.clip(y[..., None] + scale[..., None] * offsets, 0.0, 1.0)


def plain_overlay(mri01: np.ndarray, other_rgb: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """What a viewer shows with the other image over the grey MRI at ``opacity``: (1 - opacity) MRI +
    opacity colour, RGB in [0, 1], shape ``mri01.shape + (3,)``. The reference a fusion must match
    for how visible the other image's hottest uptake stays (``metrics.hot_spot_distinctness``)."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    mri01 = np.asarray(mri01, dtype=np.float32)
    if other_rgb.shape != mri01.shape + (3,):
        raise ValueError(f"the colour image {other_rgb.shape} does not match the MRI {mri01.shape}")
    return (1.0 - opacity) * mri01[..., None] + opacity * np.asarray(other_rgb, dtype=np.float32)


def apply_colour_table(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map scalars in [0, 1] through a colour table, as a slice viewer displays them.

    ``table`` has shape (K, 3) or (K, 4) with entries in [0, 1] (alpha is dropped);
    value 0 maps to entry 0 and value 1 to entry K-1 (nearest entry, like vtkLookupTable).
    Returns float32 RGB with shape ``values.shape + (3,)``.
    """
    table = np.asarray(table, dtype=np.float32)
    if table.ndim != 2 or table.shape[1] not in (3, 4) or len(table) < 2:
        raise ValueError(f"a colour table must have shape (K>=2, 3 or 4), got {table.shape}")
    index = np.rint(np.clip(values, 0.0, 1.0) * (len(table) - 1)).astype(np.intp)
    return table[index, :3]


def delivered_8bit(fused: np.ndarray, other_rgb: np.ndarray | None = None) -> np.ndarray:
    """The 8-bit image a user receives for a fused grey or luma ``fused`` in [0, 1], shape (...).

    A grey fusion is uint8 grey (...); when the other image is colour (``other_rgb`` in [0, 1],
    shape (..., 3)), the result is uint8 RGB (..., 3) with the fused luma and the other image's
    chroma. The engine, ``edgefusion batch`` and ``edgefusion evaluate`` all deliver or score this.
    """
    from ..io.images import to_8bit

    if other_rgb is None:
        return to_8bit(fused)
    return to_8bit(replace_luma(other_rgb, fused))
