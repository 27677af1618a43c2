"""Classical pixel-domain fusion baselines, so every comparison includes them.

Each method is ``fn(a, b) -> fused`` on two 2D float images of one shape (any H, W >= 1)
with values in [0, 1], and returns float32 of that shape in [0, 1]. Fusing an image
with itself returns it (up to float round-off). ``PIXEL_METHODS`` is the registry the
``--method`` options draw from.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from EdgeFusionLib.evaluation.metrics import check_unit_images

PixelMethod = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _as_output(fused: np.ndarray) -> np.ndarray:
    return np.clip(fused, 0.0, 1.0).astype(np.float32)


def _max_abs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Element-wise choose-max-magnitude rule for detail coefficients (``x`` wins ties)."""
    return np.where(np.abs(x) >= np.abs(y), x, y)


def pixel_average(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel average (A + B) / 2."""
    a, b = check_unit_images(a, b, names=("a", "b"))
    return _as_output((a + b) / 2.0)


def pixel_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel maximum max(A, B)."""
    a, b = check_unit_images(a, b, names=("a", "b"))
    return _as_output(np.maximum(a, b))


# ---------------------------------------------------------------------------
# Laplacian pyramid (Burt & Adelson 1983; fusion rule of Burt & Kolczynski 1993)

PYRAMID_LEVELS = 4
_BINOMIAL_5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(image: np.ndarray) -> np.ndarray:
    smoothed = ndimage.correlate1d(image, _BINOMIAL_5, axis=0, mode="reflect")
    return ndimage.correlate1d(smoothed, _BINOMIAL_5, axis=1, mode="reflect")


def _reduce(image: np.ndarray) -> np.ndarray:
    return _blur(image)[::2, ::2]


def _expand_axis0(low: np.ndarray, length: int) -> np.ndarray:
    """Burt-Adelson expand along axis 0: the polyphase form of zero insertion + 2x the binomial.

    Even outputs are (1, 6, 1)/8 of the low samples, odd outputs the mean of two; the low
    samples are extended by replication, so a constant stays exactly constant at the borders.
    """
    padded = np.concatenate([low[:1], low, low[-1:]])
    expanded = np.empty((2 * len(low),) + low.shape[1:])
    expanded[0::2] = (padded[:-2] + 6.0 * padded[1:-1] + padded[2:]) / 8.0
    expanded[1::2] = (padded[1:-1] + padded[2:]) / 2.0
    return expanded[:length]


def _expand(low: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Upsample a reduced level back to ``shape``."""
    return _expand_axis0(_expand_axis0(low, shape[0]).T, shape[1]).T


def _laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """[band-pass level 0, ..., band-pass level levels-1, low-pass residual]."""
    bands = []
    current = image
    for _ in range(levels):
        low = _reduce(current)
        bands.append(current - _expand(low, current.shape))
        current = low
    bands.append(current)
    return bands


def _collapse(bands: list[np.ndarray]) -> np.ndarray:
    image = bands[-1]
    for band in reversed(bands[:-1]):
        image = band + _expand(image, band.shape)
    return image


def laplacian_pyramid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Laplacian-pyramid fusion: averaged low-pass residual, max-abs band-pass levels.

    Burt & Adelson 1983 pyramid with the 5-tap binomial kernel, 4 levels (fewer when the
    image is smaller than 16 pixels on a side), reflected borders.
    """
    a, b = check_unit_images(a, b, names=("a", "b"))
    levels = min(PYRAMID_LEVELS, int(math.log2(min(a.shape))))
    bands_a = _laplacian_pyramid(a, levels)
    bands_b = _laplacian_pyramid(b, levels)
    fused = [_max_abs(x, y) for x, y in zip(bands_a[:-1], bands_b[:-1])]
    fused.append((bands_a[-1] + bands_b[-1]) / 2.0)
    return _as_output(_collapse(fused))


# ---------------------------------------------------------------------------
# Discrete wavelet transform (Li, Manjunath & Mitra 1995 style)

DWT_WAVELET = "db2"
DWT_LEVELS = 4


def dwt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DWT fusion (PyWavelets): averaged approximation, max-abs detail coefficients.

    Daubechies-2 wavelet, 4 levels (fewer for small images: PyWavelets' maximum useful
    level), symmetric border extension; the reconstruction is cropped to the input shape.
    """
    import pywt

    a, b = check_unit_images(a, b, names=("a", "b"))
    wavelet = pywt.Wavelet(DWT_WAVELET)
    levels = min(DWT_LEVELS, pywt.dwt_max_level(min(a.shape), wavelet.dec_len))
    coeffs_a = pywt.wavedec2(a, wavelet, mode="symmetric", level=levels)
    coeffs_b = pywt.wavedec2(b, wavelet, mode="symmetric", level=levels)
    fused = [(coeffs_a[0] + coeffs_b[0]) / 2.0]
    for details_a, details_b in zip(coeffs_a[1:], coeffs_b[1:]):
        fused.append(tuple(_max_abs(x, y) for x, y in zip(details_a, details_b)))
    image = pywt.waverec2(fused, wavelet, mode="symmetric")
    return _as_output(image[: a.shape[0], : a.shape[1]])


# ---------------------------------------------------------------------------
# Guided-filter fusion (Li, Kang & Hu 2013, "Image fusion with guided filtering")

GFF_BASE_SIZE = 31  # average filter that splits base and detail layers
GFF_SALIENCY_RADIUS = 5  # r_g of the Gaussian low-pass of the saliency
GFF_SALIENCY_SIGMA = 5.0  # sigma_g
GFF_BASE_RADIUS, GFF_BASE_EPS = 45, 0.3  # r1, eps1: guided filter of the base weights
GFF_DETAIL_RADIUS, GFF_DETAIL_EPS = 7, 1e-6  # r2, eps2: guided filter of the detail weights
_LAPLACIAN_3X3 = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window clipped to the image (He et al.'s boxfilter(I, r) / N)."""

    def window_sums(x: np.ndarray, axis: int) -> np.ndarray:
        n = x.shape[axis]
        cumulative = np.concatenate([np.zeros_like(np.take(x, [0], axis=axis)), np.cumsum(x, axis=axis)], axis=axis)
        index = np.arange(n)
        upper = np.minimum(index + radius + 1, n)
        lower = np.maximum(index - radius, 0)
        return np.take(cumulative, upper, axis=axis) - np.take(cumulative, lower, axis=axis)

    sums = window_sums(window_sums(image, 0), 1)
    counts = window_sums(window_sums(np.ones_like(image), 0), 1)
    return sums / counts


def _guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He, Sun & Tang's guided filter of ``source`` with grey ``guide``."""
    mean_guide = _box_mean(guide, radius)
    mean_source = _box_mean(source, radius)
    variance = _box_mean(guide * guide, radius) - mean_guide**2
    covariance = _box_mean(guide * source, radius) - mean_guide * mean_source
    slope = covariance / (variance + eps)
    offset = mean_source - slope * mean_guide
    return _box_mean(slope, radius) * guide + _box_mean(offset, radius)


def _normalised_weights(weight_a: np.ndarray, weight_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip refined weights at 0 and scale them to sum 1 (0.5 each where both vanish)."""
    weight_a = np.maximum(weight_a, 0.0)
    weight_b = np.maximum(weight_b, 0.0)
    total = weight_a + weight_b
    share_a = np.divide(weight_a, total, out=np.full_like(total, 0.5), where=total > 0)
    return share_a, 1.0 - share_a


def guided_filter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Guided-filter fusion, GFF (Li, Kang & Hu, IEEE TIP 2013), with the paper's parameters.

    Base = 31x31 mean, detail = image - base; saliency = Gaussian (r 5, sigma 5) of the
    absolute 3x3 Laplacian; binary weights from the larger saliency (equal shares on
    ties); weights refined with the guided filter, r1 45, eps1 0.3 for the base and
    r2 7, eps2 1e-6 for the detail layers, guided by each source.
    """
    a, b = check_unit_images(a, b, names=("a", "b"))
    bases = [ndimage.uniform_filter(image, GFF_BASE_SIZE, mode="nearest") for image in (a, b)]
    details = [image - base for image, base in zip((a, b), bases)]
    saliency_a, saliency_b = (
        ndimage.gaussian_filter(
            np.abs(ndimage.correlate(image, _LAPLACIAN_3X3, mode="nearest")),
            GFF_SALIENCY_SIGMA,
            mode="nearest",
            truncate=GFF_SALIENCY_RADIUS / GFF_SALIENCY_SIGMA,
        )
        for image in (a, b)
    )
    # Ties (e.g. the black background) get 1/2 each: symmetric in the sources, unlike eq. 8 (1 each).
    choose_a = (saliency_a > saliency_b) + 0.5 * (saliency_a == saliency_b)
    masks = (choose_a, 1.0 - choose_a)

    fused = np.zeros_like(a)
    for layers, radius, eps in ((bases, GFF_BASE_RADIUS, GFF_BASE_EPS), (details, GFF_DETAIL_RADIUS, GFF_DETAIL_EPS)):
        weights = _normalised_weights(
            *(_guided_filter(image, mask, radius, eps) for image, mask in zip((a, b), masks))
        )
        fused += sum(weight * layer for weight, layer in zip(weights, layers))
    return _as_output(fused)


#: Pixel-domain fusion methods by ``--method`` name.
PIXEL_METHODS: dict[str, PixelMethod] = {
    "pixel-average": pixel_average,
    "pixel-max": pixel_max,
    "laplacian-pyramid": laplacian_pyramid,
    "dwt": dwt,
    "guided-filter": guided_filter,
}
