"""Image-fusion quality metrics (docs/method.md §5).

Every metric is a plain function ``name(fused, a, b) -> float`` on 2D arrays of one
shape with values in [0, 1] (``fused`` is F, ``a`` and ``b`` are the two sources; for
SPECT/PET pass the luma Y, docs/method.md §3). Higher is better for all of them.

Conventions, chosen to match the fusion literature and said once here:

* Per-source scores are combined as the EH-DRAN paper and the common benchmark code
  do: PSNR, SSIM, FMI and FSIM are averaged over the two sources; MI and VIF are
  summed over them; NMI is Hossny's sum of two normalised terms.
* Histogram metrics (MI, NMI, EN) quantise to the 256 levels of the 8-bit image,
  ``round(255 * x)``.
* SD, SF and AG are in units of the [0, 1] intensity scale (multiply by 255 for grey
  levels).
* A metric that is undefined for the given images returns ``nan`` rather than a
  made-up number: e.g. Qabf when neither source has an edge, VIF when a source is
  constant, FSIM when no image has phase congruency, SSIM on images under 11x11.
  PSNR of an exact copy of a source is ``inf``.

``METRICS`` lists the 13 default metrics in report order; ``en_float_count`` (the
paper's distinct-float-value entropy) is available by name but not in the default set.
``SALIENT_METRICS`` measure what the 13 do not see, whether each source's brightest
structures (bone, hot spots) survive (a is the MRI, b the other modality, in reports); they
are not all higher-is-better and are reported next to the 13, never ranked.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

# Values this far outside [0, 1] are taken as a scaling mistake (e.g. 0..255 data);
# anything closer is float round-off and is clipped.
_RANGE_TOLERANCE = 1e-3


def check_unit_images(*images: np.ndarray, names: Sequence[str] | None = None, dtype=np.float64) -> list[np.ndarray]:
    """Validate 2D images of one shape with finite values in [0, 1]; return them as ``dtype``.

    ``names`` label the images in the one-line ValueError that names the problem.
    """
    arrays = [np.asarray(image) for image in images]
    names = list(names) if names is not None else [f"image {index}" for index in range(len(arrays))]
    shape = arrays[0].shape
    for name, array in zip(names, arrays):
        if array.ndim != 2:
            raise ValueError(f"{name} must be 2D (H, W), got shape {array.shape}")
        if array.shape != shape:
            raise ValueError(f"images must have one shape, got {shape} and {array.shape} ({name})")
        if array.size == 0:
            raise ValueError(f"{name} is empty (shape {array.shape})")
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} has NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"{name} must be scaled to [0, 1], its values span [{low:g}, {high:g}]")
    return [np.clip(array.astype(dtype, copy=False), 0.0, 1.0) for array in arrays]


def _checked(fused: np.ndarray, a: np.ndarray, b: np.ndarray, dtype=np.float64) -> list[np.ndarray]:
    return check_unit_images(fused, a, b, names=("fused", "a", "b"), dtype=dtype)


# ---------------------------------------------------------------------------
# Reference-based similarity: PSNR, SSIM


def psnr(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of F against each source, averaged, in dB (data range 1).

    ``skimage.metrics.peak_signal_noise_ratio`` per source, then the mean of the two dB
    values as the paper does; so it is ``inf`` when F is an exact copy of either source.
    """
    from skimage.metrics import peak_signal_noise_ratio

    fused, a, b = _checked(fused, a, b)
    with np.errstate(divide="ignore"):  # an exact copy has MSE 0 and PSNR inf
        scores = [peak_signal_noise_ratio(source, fused, data_range=1.0) for source in (a, b)]
    return float(np.mean(scores))


# SSIM window as in Wang et al. 2004 and the paper: Gaussian sigma 1.5, 11x11
# (scikit-image truncates its Gaussian at 3.5 sigma: radius int(3.5 * 1.5 + 0.5) = 5).
_SSIM_SIGMA = 1.5
_SSIM_WINDOW = 11


def ssim(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of F against each source, averaged; in [-1, 1], 1 for identity.

    ``skimage.metrics.structural_similarity`` with an 11x11 Gaussian window (sigma 1.5),
    population covariances and data range 1 (Wang et al. 2004). ``nan`` below 11x11.
    """
    from skimage.metrics import structural_similarity

    fused, a, b = _checked(fused, a, b)
    if min(fused.shape) < _SSIM_WINDOW:
        return math.nan
    scores = [
        structural_similarity(
            source,
            fused,
            gaussian_weights=True,
            sigma=_SSIM_SIGMA,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for source in (a, b)
    ]
    return float(np.mean(scores))


# ---------------------------------------------------------------------------
# Histogram information: MI, NMI, EN

_LEVELS = 256


def _grey_levels(image: np.ndarray) -> np.ndarray:
    """8-bit grey level (0..255) of each pixel of an image in [0, 1]."""
    return np.rint(image * (_LEVELS - 1)).astype(np.intp)


def _entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram (any shape) of non-negative counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _information(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(H(x), H(y), I(x; y)) in bits from the 256 x 256 joint histogram of two images."""
    joint = np.bincount((_grey_levels(x) * _LEVELS + _grey_levels(y)).ravel(), minlength=_LEVELS**2)
    joint = joint.reshape(_LEVELS, _LEVELS)
    h_x = _entropy_bits(joint.sum(axis=1))
    h_y = _entropy_bits(joint.sum(axis=0))
    return h_x, h_y, h_x + h_y - _entropy_bits(joint)


def mi(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information I(F; A) + I(F; B) in bits, 256-bin joint histograms (Qu et al. 2002).

    Range [0, 16]; I(F; A) = H(A) when F determines A.
    """
    fused, a, b = _checked(fused, a, b)
    return sum(_information(source, fused)[2] for source in (a, b))


def nmi(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Normalised MI of Hossny et al. 2008: 2 [I(F;A)/(H(A)+H(F)) + I(F;B)/(H(B)+H(F))], in [0, 2].

    256-bin histograms, bits. A term whose two images are both constant (no information
    to transfer) counts 0.
    """
    fused, a, b = _checked(fused, a, b)
    total = 0.0
    for source in (a, b):
        h_source, h_fused, information = _information(source, fused)
        if h_source + h_fused > 0:
            total += information / (h_source + h_fused)
    return 2.0 * total


def en(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Entropy of F's 256-bin 8-bit histogram, in bits, in [0, 8] (the sources are only validated)."""
    fused, a, b = _checked(fused, a, b)
    return _entropy_bits(np.bincount(_grey_levels(fused).ravel(), minlength=_LEVELS))


def en_float_count(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The EH-DRAN paper's EN: entropy (bits) of the counts of F's distinct float32 values.

    Not comparable with ``en``: values above 8 bits only mean that F has more than 256
    distinct values. Kept to compare with the published table (docs/method.md §5).
    """
    fused, a, b = _checked(fused, a, b, dtype=np.float32)
    _, counts = np.unique(fused, return_counts=True)
    return _entropy_bits(counts)


# ---------------------------------------------------------------------------
# Edge transfer: Qabf

# Xydeas & Petrovic 2000 sigmoid constants (docs/method.md §5).
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8
_QABF_L = 1.0


def _sobel_strength_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength and orientation arctan(sy / sx) in [-pi/2, pi/2] (pi/2 where sx = 0).

    The signs are those of the reference code (MATLAB conv2 with [-1 0 1; -2 0 2; -1 0 1]
    and [1 2 1; 0 0 0; -1 -2 -1]): they matter where sx = 0 and the orientation is set to pi/2.
    """
    sx = -ndimage.sobel(image, axis=1)
    sy = ndimage.sobel(image, axis=0)
    strength = np.hypot(sx, sy)
    orientation = np.full(image.shape, np.pi / 2)
    np.arctan(np.divide(sy, sx, out=np.zeros_like(sy), where=sx != 0), out=orientation, where=sx != 0)
    return strength, orientation


def _edge_preservation(source: tuple[np.ndarray, np.ndarray], fused: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Q^{SF} map: how well F keeps the strength and orientation of each source edge."""
    g_source, a_source = source
    g_fused, a_fused = fused
    strongest = np.maximum(g_source, g_fused)
    relative_strength = np.divide(
        np.minimum(g_source, g_fused), strongest, out=np.zeros_like(strongest), where=strongest > 0
    )
    relative_orientation = 1.0 - np.abs(a_source - a_fused) / (np.pi / 2)
    q_strength = _QABF_TG / (1.0 + np.exp(_QABF_KG * (relative_strength - _QABF_DG)))
    q_orientation = _QABF_TA / (1.0 + np.exp(_QABF_KA * (relative_orientation - _QABF_DA)))
    return q_strength * q_orientation


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Xydeas-Petrovic edge-transfer metric Q^{AB/F}, in [0, 1).

    Sobel gradients (reflected borders), sigmoid constants Tg 0.9994, kg -15, Dg 0.5,
    Ta 0.9879, ka -22, Da 0.8, weights g^L with L = 1. A perfect copy scores
    Qg(1) Qa(1) ~ 0.975 with these constants. ``nan`` when neither source has an edge.
    """
    fused, a, b = _checked(fused, a, b)
    edges_fused = _sobel_strength_orientation(fused)
    numerator = 0.0
    denominator = 0.0
    for source in (a, b):
        edges_source = _sobel_strength_orientation(source)
        weight = edges_source[0] ** _QABF_L
        numerator += float((_edge_preservation(edges_source, edges_fused) * weight).sum())
        denominator += float(weight.sum())
    return numerator / denominator if denominator > 0 else math.nan


# ---------------------------------------------------------------------------
# Visual information fidelity: VIFp

# vifp_mscale (Sheikh & Bovik 2006) works on 0..255 images with visual noise variance 2.
_VIF_SCALE = 255.0
_VIF_NOISE_VARIANCE = 2.0
_VIF_EPS = 1e-10


def _gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian; its outer product is MATLAB's fspecial('gaussian', size, sigma)."""
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable filtering keeping only the pixels whose window lies inside the image ('valid')."""
    radius = len(kernel) // 2
    filtered = ndimage.correlate1d(ndimage.correlate1d(image, kernel, axis=0), kernel, axis=1)
    return filtered[radius : image.shape[0] - radius, radius : image.shape[1] - radius]


def _vifp(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain VIF of ``distorted`` given ``reference`` (4 scales, Gaussian windows 17, 9, 5, 3).

    Follows vifp_mscale.m; ``nan`` when the reference has no variance at any scale.
    """
    reference = reference * _VIF_SCALE
    distorted = distorted * _VIF_SCALE
    numerator = 0.0
    denominator = 0.0
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        kernel = _gaussian_kernel_1d(size, size / 5.0)
        if scale > 1:
            reference = _filter_valid(reference, kernel)[::2, ::2]
            distorted = _filter_valid(distorted, kernel)[::2, ::2]
        if min(reference.shape) < size:
            break  # a small image has no pixel left at this scale
        mu_r = _filter_valid(reference, kernel)
        mu_d = _filter_valid(distorted, kernel)
        var_r = np.maximum(_filter_valid(reference * reference, kernel) - mu_r**2, 0.0)
        var_d = np.maximum(_filter_valid(distorted * distorted, kernel) - mu_d**2, 0.0)
        covariance = _filter_valid(reference * distorted, kernel) - mu_r * mu_d

        # Gain g and additive-noise variance of the distortion channel d = g r + v,
        # with the special cases of the reference code for flat windows.
        gain = covariance / (var_r + _VIF_EPS)
        noise = var_d - gain * covariance
        flat_reference = var_r < _VIF_EPS
        gain[flat_reference] = 0.0
        noise[flat_reference] = var_d[flat_reference]
        var_r[flat_reference] = 0.0
        flat_distorted = var_d < _VIF_EPS
        gain[flat_distorted] = 0.0
        noise[flat_distorted] = 0.0
        negative = gain < 0
        noise[negative] = var_d[negative]
        gain[negative] = 0.0
        noise = np.maximum(noise, _VIF_EPS)

        numerator += np.log10(1.0 + gain**2 * var_r / (noise + _VIF_NOISE_VARIANCE)).sum()
        denominator += np.log10(1.0 + var_r / _VIF_NOISE_VARIANCE).sum()
    return float(numerator / denominator) if denominator > 0 else math.nan


def vif(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Pixel-domain visual information fidelity VIFp(A -> F) + VIFp(B -> F), summed (range [0, ~2]).

    Sheikh & Bovik 2006, multi-scale pixel version (vifp_mscale: 4 scales, visual noise
    variance 2 on the 0..255 scale), summed over the sources as the common fusion
    benchmark code does. 1 per source for an exact copy; above 1 for contrast gain.
    """
    fused, a, b = _checked(fused, a, b)
    return _vifp(a, fused) + _vifp(b, fused)


# ---------------------------------------------------------------------------
# Feature mutual information: fast FMI (Haghighat & Razian 2014)

_FMI_WINDOW = 3
_TINY = 1e-300  # far below the round-off of any probability, so adding it changes no non-zero value
_FMI_CHUNK = 2048  # windows per vectorised batch: a (9, 9, chunk) array is 1.3 MB


class _PatchDistributions(NamedTuple):
    """Patches read as distributions over their l positions, one column per patch.

    pdf and cdf have shape (l, patches); sd (population, over positions 1..l) and entropy
    (bits) have one value per patch.
    """

    pdf: np.ndarray
    cdf: np.ndarray
    sd: np.ndarray
    entropy: np.ndarray

    def columns(self, selection: np.ndarray) -> _PatchDistributions:
        return _PatchDistributions(
            self.pdf[:, selection], self.cdf[:, selection], self.sd[selection], self.entropy[selection]
        )


def _window_columns(feature: np.ndarray, window: int) -> np.ndarray:
    """All window x window patches as columns (l, patches), flattened column-major like MATLAB's ``sub(:)``.

    Positions along the first axis keep every per-patch reduction vectorised across patches.
    """
    patches = np.lib.stride_tricks.sliding_window_view(feature, (window, window))  # (y, x, row, column)
    return np.ascontiguousarray(patches.transpose(3, 2, 0, 1).reshape(window * window, -1))


def _entropy_columns(p: np.ndarray) -> np.ndarray:
    """-sum p log2|p| over the non-zero entries of each patch (last axis); |p|: the reference keeps the real part."""
    logs = np.abs(p)
    logs += _TINY  # so that a zero entry adds 0 * log2(tiny) = 0, without a slower masked log
    np.log2(logs, out=logs)
    logs *= p
    return -logs.reshape(-1, p.shape[-1]).sum(axis=0)


def _patch_distributions(patches: np.ndarray) -> _PatchDistributions:
    """Min-max normalise each patch (a flat patch becomes all ones) and read it as a pdf."""
    low = patches.min(axis=0)
    span = patches.max(axis=0) - low
    normalised = np.divide(patches - low, span, out=np.ones_like(patches), where=span > 0)
    pdf = normalised / normalised.sum(axis=0)
    position = np.arange(1.0, len(patches) + 1)
    sd = np.sqrt(np.maximum(position**2 @ pdf - (position @ pdf) ** 2, 0.0))
    return _PatchDistributions(pdf, np.cumsum(pdf, axis=0), sd, _entropy_columns(pdf))


def _fmi_distinct(source: _PatchDistributions, fused: _PatchDistributions) -> np.ndarray:
    """Normalised MI of each pair of differing patches (columns), as in Haghighat's fmi.m.

    The joint pdf is Nelsen's mixture of independence and the Frechet bound (upper for
    positive correlation, lower for negative) whose correlation matches the Pearson
    correlation of the two patch pdfs.
    """
    length = len(source.pdf)
    centred_source = source.pdf - source.pdf.mean(axis=0)
    centred_fused = fused.pdf - fused.pdf.mean(axis=0)
    product = (centred_source * centred_fused).sum(axis=0)
    norms = np.sqrt((centred_source**2).sum(axis=0) * (centred_fused**2).sum(axis=0))
    correlation = np.divide(product, norms, out=np.zeros_like(product), where=(product != 0) & (norms > 0))

    # The lower bound max(F_i + S_j - 1, 0) has the masses of the upper bound min(F_i, S'_k)
    # against the source's reversed pdf (S' its cdf, k = l - 1 - j). The entropy does not
    # depend on the order of positions, so negative columns use the reversed source throughout.
    negative = correlation < 0
    source_pdf = np.where(negative, source.pdf[::-1], source.pdf)
    source_cdf = np.where(negative, np.cumsum(source.pdf[::-1], axis=0), source.cdf)
    # min(F_i, S_j) on the grid (fused i, source j, patch), with a row and a column of
    # zeros in front so that its 2D differences (the bound's masses) are plain slices.
    padded = np.zeros((length + 1, length + 1, source_pdf.shape[1]))
    grid = padded[1:, 1:]
    np.minimum(fused.cdf[:, None], source_cdf[None], out=grid)
    grid_sum = grid.sum(axis=(0, 1))
    fused_cdf_sum = fused.cdf.sum(axis=0)
    # sum_ij max(F_i + S_j - 1, 0) = (l + 1) sum_i F_i - sum_ik min(F_i, S'_k)
    bound_sum = np.where(negative, (length + 1) * fused_cdf_sum - grid_sum, grid_sum)
    # sum_ij (bound - F_i S_j) / (sd_F sd_S): the bound's correlation
    bound_covariance = bound_sum - fused_cdf_sum * source.cdf.sum(axis=0)
    sd_product = fused.sd * source.sd
    usable = (correlation != 0) & (sd_product > 0) & (bound_covariance != 0)
    weight = np.divide(correlation * sd_product, bound_covariance, out=np.zeros_like(correlation), where=usable)

    # Joint pdf: the bound's masses mixed with independence.
    joint = grid - padded[:-1, 1:]
    joint -= padded[1:, :-1]
    joint += padded[:-1, :-1]
    joint *= weight
    joint += ((1.0 - weight) * fused.pdf)[:, None] * source_pdf[None]

    information = source.entropy + fused.entropy - _entropy_columns(joint)
    return np.divide(
        2.0 * information, source.entropy + fused.entropy, out=np.zeros_like(information), where=information != 0
    )


def _fmi_patches(source: np.ndarray, fused: np.ndarray, fused_distributions: _PatchDistributions) -> np.ndarray:
    """FMI of each pair of patches (columns); identical patches score 1 without computation."""
    result = np.ones(source.shape[1])
    distinct = np.any(source != fused, axis=0)
    if distinct.any():
        source_distributions = _patch_distributions(source[:, distinct])
        result[distinct] = _fmi_distinct(source_distributions, fused_distributions.columns(distinct))
    return result


def _fmi(features: Sequence[np.ndarray]) -> float:
    """Mean over all 3x3 windows inside the image of (FMI(A, F) + FMI(B, F)) / 2."""
    fused, a, b = (_window_columns(feature, _FMI_WINDOW) for feature in features)
    count = fused.shape[1]
    if count == 0:
        return math.nan
    total = 0.0
    for start in range(0, count, _FMI_CHUNK):
        chunk = slice(start, start + _FMI_CHUNK)
        fused_distributions = _patch_distributions(fused[:, chunk])
        for source in (a, b):
            total += float(_fmi_patches(source[:, chunk], fused[:, chunk], fused_distributions).sum())
    return total / (2 * count)


def _gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude with reflected borders (scipy), the FMI 'gradient' feature."""
    return ndimage.generic_gradient_magnitude(image, ndimage.sobel)


def fmi_pixel(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Fast FMI on raw pixels (Haghighat & Razian 2014), 3x3 windows, averaged over sources; in [0, 1]."""
    return _fmi(_checked(fused, a, b))


def fmi_gradient(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Fast FMI on Sobel gradient-magnitude features, 3x3 windows, averaged over sources; in [0, 1]."""
    return _fmi([_gradient_magnitude(image) for image in _checked(fused, a, b)])


# ---------------------------------------------------------------------------
# Feature similarity: FSIM (Zhang et al. 2011), grey version

# FeatureSIM.m works on 0..255 images: T2 and the phase-congruency epsilon assume that.
_FSIM_SCALE = 255.0
_FSIM_T1 = 0.85
_FSIM_T2 = 160.0
# phasecong2 parameters of FeatureSIM.m (Kovesi's phase congruency).
_PC_SCALES = 4
_PC_ORIENTATIONS = 4
_PC_MIN_WAVELENGTH = 6.0
_PC_MULT = 2.0
_PC_SIGMA_ON_F = 0.55
_PC_D_THETA_ON_SIGMA = 1.2
_PC_NOISE_K = 2.0
_PC_EPSILON = 1e-4
_SCHARR_X = np.array([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]]) / 16.0


def _centred_frequencies(n: int) -> np.ndarray:
    """Normalised frequency coordinates of phasecong2 (odd and even sizes differ)."""
    if n % 2:
        return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / max(n - 1, 1)
    return np.arange(-n / 2, n / 2) / n


@functools.lru_cache(maxsize=8)
def _log_gabor_bank(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-Gabor filters (orientation, scale, rows, cols) and each orientation's noise-energy factor.

    The factor is ``2 sum(An^2) + 4 sum(Ai Aj)`` of the spatial filters; multiplied by the
    noise power it gives the expected squared noise energy (phasecong2).
    """
    x, y = np.meshgrid(_centred_frequencies(cols), _centred_frequencies(rows))
    radius = np.fft.ifftshift(np.hypot(x, y))
    theta = np.fft.ifftshift(np.arctan2(-y, x))
    radius[0, 0] = 1.0  # avoid log(0); the DC value of every filter is zeroed below
    sin_theta, cos_theta = np.sin(theta), np.cos(theta)

    # Low-pass that removes the FFT corners (radius 0.45, order 15).
    lx = (np.arange(1, cols + 1) - (cols // 2 + 1)) / cols
    ly = (np.arange(1, rows + 1) - (rows // 2 + 1)) / rows
    lowpass = np.fft.ifftshift(1.0 / (1.0 + (np.hypot(*np.meshgrid(lx, ly)) / 0.45) ** 30))

    radial = []
    for s in range(_PC_SCALES):
        centre = 1.0 / (_PC_MIN_WAVELENGTH * _PC_MULT**s)
        log_gabor = np.exp(-(np.log(radius / centre) ** 2) / (2 * math.log(_PC_SIGMA_ON_F) ** 2)) * lowpass
        log_gabor[0, 0] = 0.0
        radial.append(log_gabor)

    theta_sigma = math.pi / _PC_ORIENTATIONS / _PC_D_THETA_ON_SIGMA
    bank = np.empty((_PC_ORIENTATIONS, _PC_SCALES, rows, cols))
    noise_factor = np.empty(_PC_ORIENTATIONS)
    for o in range(_PC_ORIENTATIONS):
        angle = o * math.pi / _PC_ORIENTATIONS
        d_sin = sin_theta * math.cos(angle) - cos_theta * math.sin(angle)
        d_cos = cos_theta * math.cos(angle) + sin_theta * math.sin(angle)
        spread = np.exp(-(np.arctan2(d_sin, d_cos) ** 2) / (2 * theta_sigma**2))
        bank[o] = np.stack(radial) * spread
        spatial = np.real(np.fft.ifft2(bank[o])) * math.sqrt(rows * cols)
        total = spatial.sum(axis=0)
        sum_squares = float((spatial**2).sum())
        # sum over scale pairs i < j of Ai Aj = ((sum A)^2 - sum A^2) / 2
        sum_cross = (float((total**2).sum()) - sum_squares) / 2.0
        noise_factor[o] = 2.0 * sum_squares + 4.0 * sum_cross
    return bank, noise_factor


def _phase_congruency(image: np.ndarray) -> np.ndarray:
    """Kovesi's phase congruency PC_2 as in FeatureSIM.m's phasecong2 (0..255 image in)."""
    rows, cols = image.shape
    bank, noise_factor = _log_gabor_bank(rows, cols)
    responses = sfft.ifft2(sfft.fft2(image)[None, None] * bank)  # (orientation, scale, rows, cols)
    even, odd = responses.real, responses.imag
    amplitude_sum = np.abs(responses).sum(axis=1)

    sum_even = even.sum(axis=1, keepdims=True)
    sum_odd = odd.sum(axis=1, keepdims=True)
    norm = np.sqrt(sum_even**2 + sum_odd**2) + _PC_EPSILON
    mean_even, mean_odd = sum_even / norm, sum_odd / norm
    energy = (even * mean_even + odd * mean_odd - np.abs(even * mean_odd - odd * mean_even)).sum(axis=1)

    # Noise threshold per orientation from the median squared response at the finest scale
    # (Rayleigh model), rescaled by 1.7 for the PC_2 measure as in the reference code.
    median_power = np.median((np.abs(responses[:, 0]) ** 2).reshape(_PC_ORIENTATIONS, -1), axis=1)
    noise_power = (-median_power / math.log(0.5)) / (bank[:, 0] ** 2).sum(axis=(1, 2))
    tau = np.sqrt(noise_power * noise_factor / 2.0)
    threshold = (tau * math.sqrt(math.pi / 2) + _PC_NOISE_K * np.sqrt((2 - math.pi / 2) * tau**2)) / 1.7
    energy = np.maximum(energy - threshold[:, None, None], 0.0).sum(axis=0)

    amplitude = amplitude_sum.sum(axis=0)
    return np.divide(energy, amplitude, out=np.zeros_like(energy), where=amplitude > 0)


def _fsim_features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(phase congruency, Scharr gradient magnitude) of one image as FeatureSIM.m computes them."""
    image = image * _FSIM_SCALE
    factor = max(1, round(min(image.shape) / 256))
    if factor > 1:
        # FeatureSIM.m: MATLAB conv2(image, box, 'same') then every factor-th pixel. Its 'same'
        # window for pixel i spans i + c - factor + 1 .. i + c with c = ceil((factor - 1) / 2).
        pad = (factor - 1 - factor // 2, factor // 2)
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(image, (pad, pad)), (factor, factor))
        image = windows[::factor, ::factor].mean(axis=(2, 3))
    gx = ndimage.correlate(image, _SCHARR_X, mode="constant")
    gy = ndimage.correlate(image, _SCHARR_X.T, mode="constant")
    return _phase_congruency(image), np.hypot(gx, gy)


def _fsim_pair(reference: tuple[np.ndarray, np.ndarray], distorted: tuple[np.ndarray, np.ndarray]) -> float:
    pc_r, grad_r = reference
    pc_d, grad_d = distorted
    pc_similarity = (2 * pc_r * pc_d + _FSIM_T1) / (pc_r**2 + pc_d**2 + _FSIM_T1)
    gradient_similarity = (2 * grad_r * grad_d + _FSIM_T2) / (grad_r**2 + grad_d**2 + _FSIM_T2)
    pc_max = np.maximum(pc_r, pc_d)
    total = pc_max.sum()
    return float((pc_similarity * gradient_similarity * pc_max).sum() / total) if total > 0 else math.nan


def fsim(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Feature similarity FSIM (Zhang et al. 2011, grey) of F against each source, averaged; in (0, 1].

    Phase congruency (Kovesi, 4 scales x 4 orientations, as FeatureSIM.m) and Scharr
    gradient magnitude, T1 0.85, T2 160 on the 0..255 scale. 1 for identity; ``nan``
    when neither image of a pair has any phase congruency (e.g. both constant).
    """
    fused, a, b = _checked(fused, a, b)
    features_fused = _fsim_features(fused)
    return (_fsim_pair(_fsim_features(a), features_fused) + _fsim_pair(_fsim_features(b), features_fused)) / 2.0


# ---------------------------------------------------------------------------
# No-reference statistics of F: SD, SF, AG


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def sd(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Standard deviation (contrast) of F, population, on the [0, 1] scale; in [0, 0.5]."""
    fused, a, b = _checked(fused, a, b)
    return float(fused.std())


def sf(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Spatial frequency sqrt(RF^2 + CF^2) of F (Eskicioglu & Fisher 1995), [0, 1] scale.

    RF and CF are the RMS differences of horizontally and vertically adjacent pixels.
    ``nan`` for an image one pixel wide or high.
    """
    fused, a, b = _checked(fused, a, b)
    row_frequency_sq = _mean_or_nan(np.diff(fused, axis=1) ** 2)
    column_frequency_sq = _mean_or_nan(np.diff(fused, axis=0) ** 2)
    return math.sqrt(row_frequency_sq + column_frequency_sq)


def ag(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Average gradient of F: mean of sqrt((dx^2 + dy^2) / 2) over forward differences, [0, 1] scale.

    ``nan`` for an image one pixel wide or high.
    """
    fused, a, b = _checked(fused, a, b)
    dx = fused[:-1, 1:] - fused[:-1, :-1]
    dy = fused[1:, :-1] - fused[:-1, :-1]
    return _mean_or_nan(np.sqrt((dx**2 + dy**2) / 2.0))


# ---------------------------------------------------------------------------
# Salient structures: what a reader looks for (bone, hot spots, bright tissue)

#: A pixel is foreground where either source exceeds this value ([0, 1] scale).
FOREGROUND_LEVEL = 0.05
#: A source's salient region: its foreground pixels at or above this percentile (the brightest 10 %).
SALIENT_PERCENTILE = 90.0
#: A salient pixel is lost when the fused value is more than this below the source's value.
SALIENT_LOSS_DROP = 0.25


def foreground(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels where either source exceeds ``FOREGROUND_LEVEL``."""
    return (a > FOREGROUND_LEVEL) | (b > FOREGROUND_LEVEL)


def salient_region(source: np.ndarray, mask: np.ndarray, percentile: float = SALIENT_PERCENTILE) -> np.ndarray:
    """The source's brightest structures: pixels of ``mask`` where ``source`` is at or above its
    ``percentile``-th percentile over ``mask`` (ties included) and above ``FOREGROUND_LEVEL``.

    Empty when ``mask`` is empty. (H, W) bool.
    """
    if not mask.any():
        return np.zeros_like(mask)
    level = np.percentile(source[mask], percentile)
    return mask & (source >= level) & (source > FOREGROUND_LEVEL)


def _salient_loss(fused: np.ndarray, source: np.ndarray, other: np.ndarray) -> float:
    region = salient_region(source, foreground(source, other))
    if not region.any():
        return math.nan
    return float(np.mean(source[region] - fused[region] > SALIENT_LOSS_DROP))


def _contrast_retention(fused: np.ndarray, source: np.ndarray, other: np.ndarray) -> float:
    mask = foreground(source, other)
    region = salient_region(source, mask)
    rest = mask & ~region
    if not region.any() or not rest.any():
        return math.nan
    source_contrast = source[region].mean() - source[rest].mean()
    if source_contrast <= 0:
        return math.nan
    return float((fused[region].mean() - fused[rest].mean()) / source_contrast)


def salient_loss_a(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Share (0-1) of source a's salient region (``salient_region`` of a over the foreground) where
    F is more than ``SALIENT_LOSS_DROP`` below a. Lower is better; ``nan`` without foreground."""
    fused, a, b = _checked(fused, a, b)
    return _salient_loss(fused, a, b)


def salient_loss_b(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """``salient_loss_a`` for source b."""
    fused, a, b = _checked(fused, a, b)
    return _salient_loss(fused, b, a)


def contrast_retention_a(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Contrast of a's salient region against the rest of the foreground, in F relative to a:
    (mean F over the region - mean F over the rest) / (the same for a). 1: kept; below 1: faded;
    ``nan`` when a's region is not brighter than the rest or either part is empty."""
    fused, a, b = _checked(fused, a, b)
    return _contrast_retention(fused, a, b)


def contrast_retention_b(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """``contrast_retention_a`` for source b."""
    fused, a, b = _checked(fused, a, b)
    return _contrast_retention(fused, b, a)


#: A fused pixel is isolated when it differs from each of its 8 neighbours by more than this, all
#: in the same direction (a speck: darker or brighter than everything around it).
ISOLATED_STEP = 0.25


def _specks(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dark, bright) masks of the interior pixels (H-2, W-2) of ``image`` more than ``ISOLATED_STEP``
    below all 8 neighbours, or above all 8."""
    height, width = image.shape
    centre = image[1:-1, 1:-1]
    neighbours = np.stack([image[1 + dy:height - 1 + dy, 1 + dx:width - 1 + dx]
                           for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    return centre < neighbours.min(axis=0) - ISOLATED_STEP, centre > neighbours.max(axis=0) + ISOLATED_STEP


def isolated_pixels(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Count of isolated dark or bright pixels that the fusion put inside bright structures: pixels of
    either source's salient region (border pixels excluded) whose F value is more than ``ISOLATED_STEP``
    below all 8 neighbours (or above all 8) where neither source has such a speck itself. Lower is
    better; 0 is the target. ``nan`` for images under 3x3."""
    fused, a, b = _checked(fused, a, b)
    if min(fused.shape) < 3:
        return math.nan
    mask = foreground(a, b)
    inside = (salient_region(a, mask) | salient_region(b, mask))[1:-1, 1:-1]
    (dark, bright), (dark_a, bright_a), (dark_b, bright_b) = (_specks(image) for image in (fused, a, b))
    introduced = (dark & ~dark_a & ~dark_b) | (bright & ~bright_a & ~bright_b)
    return float(np.count_nonzero(inside & introduced))


#: The hottest uptake: the top 5 % of the other image's values over the foreground.
HOT_PERCENTILE = 95.0
#: Surroundings of the hottest uptake: foreground pixels within this many pixels of it.
HOT_SURROUND_PIXELS = 3


def hot_spot_distinctness(image_rgb: np.ndarray, uptake: np.ndarray, mri: np.ndarray) -> float:
    """How distinguishable the hottest uptake is in a colour image: the CIELAB distance (Delta E 1976)
    between the mean colour of the hottest 5 % of ``uptake`` over the foreground (``foreground`` of
    the uptake and the MRI) and the mean colour of its surroundings (foreground pixels within
    ``HOT_SURROUND_PIXELS`` of it). ``image_rgb`` (H, W, 3) and the 2D ``uptake`` (the SPECT/PET
    before its colour table, or its luma) and ``mri`` in [0, 1]. Compare a fusion with
    ``colour.plain_overlay`` of the same pair: a ratio of at least 1 keeps the hot spot as visible.
    ``nan`` when there is no hot region or no surroundings.
    """
    from skimage.color import rgb2lab

    uptake, mri = check_unit_images(uptake, mri, names=("uptake", "mri"))
    image_rgb = np.asarray(image_rgb, dtype=np.float64)
    if image_rgb.shape != uptake.shape + (3,):
        raise ValueError(f"image must be RGB of the uptake's shape {uptake.shape}, got {image_rgb.shape}")
    mask = foreground(uptake, mri)
    hot = salient_region(uptake, mask, HOT_PERCENTILE)
    near = ndimage.binary_dilation(hot, iterations=HOT_SURROUND_PIXELS) & mask & ~hot
    if not hot.any() or not near.any():
        return math.nan
    lab = rgb2lab(np.clip(image_rgb, 0.0, 1.0))
    return float(np.linalg.norm(lab[hot].mean(axis=0) - lab[near].mean(axis=0)))


# ---------------------------------------------------------------------------
# Registry

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]

#: The 13 default metrics, in report order. Higher is better for every one of them.
METRICS: dict[str, Metric] = {
    "psnr": psnr,
    "ssim": ssim,
    "mi": mi,
    "nmi": nmi,
    "qabf": qabf,
    "vif": vif,
    "fmi_pixel": fmi_pixel,
    "fmi_gradient": fmi_gradient,
    "fsim": fsim,
    "en": en,
    "sd": sd,
    "sf": sf,
    "ag": ag,
}

#: What the 13 do not see (salient structures, docs/method.md §5), reported next to them but not ranked:
#: for these lower is better (losses, isolated pixels) or 1 is best (contrast retention).
SALIENT_METRICS: dict[str, Metric] = {
    "salient_loss_mri": salient_loss_a,
    "salient_loss_other": salient_loss_b,
    "contrast_mri": contrast_retention_a,
    "contrast_other": contrast_retention_b,
    "isolated_pixels": isolated_pixels,
}

#: Metrics available by name but not computed by default.
EXTRA_METRICS: dict[str, Metric] = {"en_float_count": en_float_count, **SALIENT_METRICS}

#: Column headings for reports.
METRIC_LABELS: dict[str, str] = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "mi": "MI (bits)",
    "nmi": "NMI",
    "qabf": "Qabf",
    "vif": "VIF",
    "fmi_pixel": "FMI pixel",
    "fmi_gradient": "FMI gradient",
    "fsim": "FSIM",
    "en": "EN (bits)",
    "sd": "SD",
    "sf": "SF",
    "ag": "AG",
    "en_float_count": "EN float-count (bits)",
    "salient_loss_mri": "MRI salient loss",
    "salient_loss_other": "other salient loss",
    "contrast_mri": "MRI salient contrast",
    "contrast_other": "other salient contrast",
    "isolated_pixels": "isolated pixels",
}


def metric_names() -> list[str]:
    """Every metric name that ``compute_metrics`` accepts: the defaults, then the extras."""
    return [*METRICS, *EXTRA_METRICS]


def compute_metrics(
    fused: np.ndarray, a: np.ndarray, b: np.ndarray, names: Sequence[str] | None = None
) -> dict[str, float]:
    """{name: value} for the given metric names (default: the 13 of ``METRICS``, in order)."""
    names = list(METRICS) if names is None else list(names)
    registry = {**METRICS, **EXTRA_METRICS}
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(registry)}")
    fused, a, b = _checked(fused, a, b)
    return {name: float(registry[name](fused, a, b)) for name in names}


def mean_rank(table: Mapping[str, Mapping[str, float]], names: Sequence[str] | None = None) -> dict[str, float]:
    """Mean over metrics of each method's rank (1 = best; ties share the average rank).

    ``table`` maps method -> {metric: value}, e.g. the mean of each metric over a data set.
    ``names`` defaults to the default metrics present in every row; all are higher-is-better.
    A NaN value ranks last for its metric.
    """
    from scipy.stats import rankdata

    methods = list(table)
    if not methods:
        return {}
    if names is None:
        names = [name for name in METRICS if all(name in table[method] for method in methods)]
    if not names:
        raise ValueError("no metric common to all methods to rank on")
    ranks = np.zeros(len(methods))
    for name in names:
        values = np.array([table[method][name] for method in methods], dtype=np.float64)
        # rank on -value so the largest is rank 1; NaN becomes +inf so it ranks last
        ranks += rankdata(np.where(np.isnan(values), np.inf, -values), method="average")
    return {method: float(rank / len(names)) for method, rank in zip(methods, ranks)}
