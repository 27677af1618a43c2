"""Fusion metrics (docs/method.md §5): values known by construction, and cross-checks
against independent implementations (direct transcriptions of the reference algorithms,
scipy/scikit-image, and values computed once with piq 0.8.0).

Test images are scikit-image's bundled camera and Shepp-Logan phantom, never the atlas.
"""

import math

import numpy as np
import pytest
from scipy import ndimage, stats
from scipy.signal import convolve2d
from skimage import data

from EdgeFusionLib.evaluation import metrics
from EdgeFusionLib.evaluation.metrics import METRICS, compute_metrics, mean_rank

CAMERA = data.camera()[::4, ::4] / 255.0  # 128 x 128, 8-bit values
PHANTOM = data.shepp_logan_phantom()[:384:3, :384:3]  # 128 x 128 in [0, 1]
REFERENCE_METRICS = ["psnr", "ssim", "mi", "nmi", "qabf", "vif", "fmi_pixel", "fmi_gradient", "fsim"]


def blurred(image, sigma):
    return ndimage.gaussian_filter(image, sigma) if sigma else image


def noisy(image, sigma, seed=1):
    return np.clip(image + sigma * np.random.default_rng(seed).standard_normal(image.shape), 0, 1)


# ---------------------------------------------------------------------------
# Registry and argument checks


def test_registry_has_the_13_default_metrics_in_report_order():
    assert list(METRICS) == [
        "psnr", "ssim", "mi", "nmi", "qabf", "vif", "fmi_pixel", "fmi_gradient", "fsim", "en", "sd", "sf", "ag",
    ]
    assert "en_float_count" not in METRICS and "en_float_count" in metrics.metric_names()
    values = compute_metrics(PHANTOM, CAMERA, PHANTOM)
    assert list(values) == list(METRICS) and all(isinstance(v, float) for v in values.values())
    assert compute_metrics(PHANTOM, CAMERA, PHANTOM, names=["en_float_count", "sd"]) == {
        "en_float_count": metrics.en_float_count(PHANTOM, CAMERA, PHANTOM),
        "sd": metrics.sd(PHANTOM, CAMERA, PHANTOM),
    }


@pytest.mark.parametrize(
    ("fused", "message"),
    [
        (CAMERA[:-1], "one shape"),
        (np.stack([CAMERA, CAMERA]), "2D"),
        (np.where(CAMERA > 0.5, np.nan, CAMERA), "NaN"),
        (CAMERA * 255, "fused must be scaled to \\[0, 1\\]"),
        (np.zeros((0, 0)), "2D|empty"),
    ],
)
def test_invalid_images_are_rejected_with_a_clear_message(fused, message):
    for metric in METRICS.values():
        with pytest.raises(ValueError, match=message):
            metric(fused, CAMERA, CAMERA)


def test_unknown_metric_name_is_rejected():
    with pytest.raises(ValueError, match="unknown metric nope"):
        compute_metrics(CAMERA, CAMERA, CAMERA, names=["psnr", "nope"])


# ---------------------------------------------------------------------------
# Values known by construction


def test_identical_images_give_each_metric_its_perfect_score():
    values = compute_metrics(CAMERA, CAMERA, CAMERA)
    entropy = metrics.en(CAMERA, CAMERA, CAMERA)
    perfect_edge = (
        0.9994 / (1 + math.exp(-15 * (1 - 0.5))) * 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))
    )  # Qg(1) Qa(1) with the Xydeas-Petrovic constants of docs/method.md §5
    assert values["psnr"] == math.inf
    assert values["ssim"] == pytest.approx(1.0)
    assert values["mi"] == pytest.approx(2 * entropy)  # I(A; A) = H(A), summed over two sources
    assert values["nmi"] == pytest.approx(2.0)
    assert values["qabf"] == pytest.approx(perfect_edge, abs=1e-12)
    assert values["vif"] == pytest.approx(2.0)
    assert values["fmi_pixel"] == 1.0 and values["fmi_gradient"] == 1.0
    assert values["fsim"] == pytest.approx(1.0)
    assert 6.5 < entropy <= 8


def test_constant_images():
    flat = np.full((32, 32), 0.5)
    values = compute_metrics(flat, flat, flat)
    assert values["psnr"] == math.inf and values["ssim"] == pytest.approx(1.0)
    assert values["mi"] == 0 and values["nmi"] == 0 and values["en"] == 0
    assert values["sd"] == 0 and values["sf"] == 0 and values["ag"] == 0
    assert values["fmi_pixel"] == 1.0  # every window of F equals the source's
    # undefined: no edge to transfer, no source variance, no phase congruency
    assert math.isnan(values["qabf"]) and math.isnan(values["vif"]) and math.isnan(values["fsim"])

    # a constant fusion of textured sources keeps nothing of them
    flat = np.full(CAMERA.shape, 0.5)
    values = compute_metrics(flat, CAMERA, PHANTOM)
    assert values["mi"] == pytest.approx(0, abs=1e-12) and values["nmi"] == pytest.approx(0, abs=1e-12)
    assert values["qabf"] < 1e-3 and values["vif"] == pytest.approx(0, abs=1e-9)
    assert values["en"] == 0 and values["sd"] == 0 and values["sf"] == 0 and values["ag"] == 0


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_is_symmetric_in_the_two_sources(name):
    fused = (CAMERA + PHANTOM) / 2
    assert METRICS[name](fused, CAMERA, PHANTOM) == pytest.approx(METRICS[name](fused, PHANTOM, CAMERA), rel=1e-12)


def test_a_shifted_copy_scores_lower_than_the_copy_and_keeps_its_histogram():
    copy = compute_metrics(CAMERA, CAMERA, PHANTOM)
    shifted = compute_metrics(np.roll(CAMERA, 2, axis=1), CAMERA, PHANTOM)
    for name in REFERENCE_METRICS:
        assert shifted[name] < copy[name], name
    # a circular shift permutes the pixels: first-order statistics are unchanged
    assert shifted["en"] == copy["en"] and shifted["sd"] == pytest.approx(copy["sd"])


def test_scores_fall_steadily_with_blur():
    scores = [compute_metrics(blurred(CAMERA, sigma), CAMERA, CAMERA) for sigma in (0, 0.5, 1, 2, 4)]
    for name in [*REFERENCE_METRICS, "sd", "sf", "ag"]:
        series = [values[name] for values in scores]
        assert all(later < earlier for earlier, later in zip(series, series[1:])), (name, series)


def test_reference_scores_fall_and_detail_statistics_rise_with_noise():
    scores = [compute_metrics(noisy(CAMERA, sigma), CAMERA, CAMERA) for sigma in (0, 0.01, 0.03, 0.1)]
    for name in REFERENCE_METRICS:
        series = [values[name] for values in scores]
        assert all(later < earlier for earlier, later in zip(series, series[1:])), (name, series)
    # no-reference detail statistics cannot tell noise from detail (why both kinds are reported)
    for name in ["en", "sf", "ag"]:
        series = [values[name] for values in scores]
        assert all(later > earlier for earlier, later in zip(series, series[1:])), (name, series)


def test_spatial_statistics_of_a_checkerboard_and_a_ramp():
    checkerboard = (np.indices((16, 16)).sum(axis=0) % 2).astype(float)
    assert metrics.sd(checkerboard, checkerboard, checkerboard) == pytest.approx(0.5)
    assert metrics.sf(checkerboard, checkerboard, checkerboard) == pytest.approx(math.sqrt(2))  # every step is 1
    assert metrics.ag(checkerboard, checkerboard, checkerboard) == pytest.approx(1.0)
    ramp = np.tile(np.arange(20) / 100, (10, 1))  # horizontal steps of 0.01
    assert metrics.sf(ramp, ramp, ramp) == pytest.approx(0.01)
    assert metrics.ag(ramp, ramp, ramp) == pytest.approx(0.01 / math.sqrt(2))


def test_float_count_entropy_counts_distinct_values():
    sixteen = np.arange(16, dtype=np.float32).reshape(4, 4) / 15
    assert metrics.en_float_count(sixteen, sixteen, sixteen) == pytest.approx(4.0)
    # 0.1000 and 0.1001 fall into one 8-bit level but are two float values
    two = np.array([[0.1, 0.1001], [0.1, 0.1001]])
    assert metrics.en_float_count(two, two, two) == pytest.approx(1.0)
    assert metrics.en(two, two, two) == 0.0


def test_undefined_on_tiny_images_is_nan_not_an_error():
    tiny = np.linspace(0, 1, 16).reshape(4, 4)
    assert math.isnan(metrics.ssim(tiny, tiny, tiny))  # under the 11x11 window
    assert math.isnan(metrics.vif(tiny, tiny, tiny))  # under the 17x17 window
    row = np.linspace(0, 1, 8).reshape(1, 8)
    assert math.isnan(metrics.sf(row, row, row)) and math.isnan(metrics.ag(row, row, row))


# ---------------------------------------------------------------------------
# Cross-checks against independent implementations


def test_psnr_matches_the_definition():
    fused = blurred(CAMERA, 1.0)
    expected = np.mean([10 * np.log10(1 / np.mean((fused - source) ** 2)) for source in (CAMERA, PHANTOM)])
    assert metrics.psnr(fused, CAMERA, PHANTOM) == pytest.approx(expected, rel=1e-12)


def test_ssim_matches_a_direct_gaussian_window_implementation():
    """Wang et al. 2004 with an 11x11 Gaussian (sigma 1.5), population statistics, data range 1."""

    def ssim_pair(x, y):
        def window(image):
            return ndimage.gaussian_filter(image, 1.5, truncate=3.5)  # radius 5: 11 x 11

        c1, c2 = 0.01**2, 0.03**2
        mx, my = window(x), window(y)
        vx, vy, cxy = window(x * x) - mx**2, window(y * y) - my**2, window(x * y) - mx * my
        ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        return ssim_map[5:-5, 5:-5].mean()  # scikit-image averages away from the border

    fused = noisy(CAMERA, 0.05)
    expected = (ssim_pair(CAMERA, fused) + ssim_pair(PHANTOM, fused)) / 2
    assert metrics.ssim(fused, CAMERA, PHANTOM) == pytest.approx(expected, abs=1e-9)


def test_mi_and_en_match_scipy_entropies_of_numpy_histograms():
    fused = blurred((CAMERA + PHANTOM) / 2, 1.0)
    levels = [np.rint(image * 255).ravel() for image in (fused, CAMERA, PHANTOM)]
    edges = np.arange(257) - 0.5

    def entropy(*images):
        counts = np.histogramdd(np.stack(images, axis=1), bins=[edges] * len(images))[0]
        return stats.entropy(counts.ravel(), base=2)

    expected = sum(entropy(levels[0]) + entropy(source) - entropy(levels[0], source) for source in levels[1:])
    assert metrics.mi(fused, CAMERA, PHANTOM) == pytest.approx(expected, rel=1e-10)
    assert metrics.en(fused, CAMERA, PHANTOM) == pytest.approx(entropy(levels[0]), rel=1e-12)


def test_nmi_matches_scikit_image_normalised_mutual_information():
    """Hossny's MI(A,F)/(H(A)+H(F)) = 1 - 1/Y for Studholme's Y = (H(A)+H(F))/H(A,F)."""
    from skimage.metrics import normalized_mutual_information

    # quantise to 8 bits spanning exactly 0..1 so that 256 equal bins are the 8-bit levels
    fused, a, b = (np.rint(image * 255) / 255 for image in (blurred(CAMERA, 1.0), CAMERA, PHANTOM))
    for image in (fused, a, b):
        image[0, :2] = (0.0, 1.0)
    expected = 2 * sum(1 - 1 / normalized_mutual_information(source, fused, bins=256) for source in (a, b))
    assert metrics.nmi(fused, a, b) == pytest.approx(expected, rel=1e-10)


def qabf_reference(a, b, fused):
    """Per-pixel transcription of the Xydeas-Petrovic code (Sobel with symmetric borders)."""
    h_y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
    h_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])

    def strength_orientation(image):
        sx = convolve2d(image, h_x, mode="same", boundary="symm")
        sy = convolve2d(image, h_y, mode="same", boundary="symm")
        angle = np.array([math.pi / 2 if x == 0 else math.atan(y / x) for x, y in zip(sx.ravel(), sy.ravel())])
        return np.sqrt(sx**2 + sy**2), angle.reshape(image.shape)

    g_f, a_f = strength_orientation(fused)
    numerator = denominator = 0.0
    for source in (a, b):
        g_s, a_s = strength_orientation(source)
        for i, j in np.ndindex(fused.shape):
            if g_s[i, j] == 0 and g_f[i, j] == 0:
                strength = 0.0
            else:
                strength = min(g_s[i, j], g_f[i, j]) / max(g_s[i, j], g_f[i, j])
            orientation = 1 - abs(a_s[i, j] - a_f[i, j]) / (math.pi / 2)
            q_g = 0.9994 / (1 + math.exp(-15 * (strength - 0.5)))
            q_a = 0.9879 / (1 + math.exp(-22 * (orientation - 0.8)))
            numerator += q_g * q_a * g_s[i, j]
            denominator += g_s[i, j]
    return numerator / denominator


def test_qabf_matches_a_per_pixel_transcription():
    # Values on a 1/16 grid keep every Sobel sum exact, so both codes agree on where sx = 0
    # (the orientation is set to pi/2 there, a test at round-off level otherwise).
    a, b = (np.rint(image[40:64, 40:64] * 16) / 16 for image in (CAMERA, PHANTOM))
    fused = np.rint(blurred(np.maximum(a, b), 0.7) * 16) / 16
    assert metrics.qabf(fused, a, b) == pytest.approx(qabf_reference(a, b, fused), rel=1e-10)


def fmi_reference(a_feature, b_feature, f_feature, w=3):
    """Loop-for-loop transcription of Haghighat's fast-FMI MATLAB code (fmi.m)."""

    def pdf(sub):
        low, high = sub.min(), sub.max()
        sub = np.ones_like(sub) if high == low else (sub - low) / (high - low)
        return sub.ravel(order="F") / sub.sum()  # MATLAB's sub(:) is column-major

    def fmi_pair(s_sub, f_sub):
        if np.array_equal(s_sub, f_sub):
            return 1.0
        sp, fp = pdf(s_sub), pdf(f_sub)
        n = len(sp)
        sc, fc = np.cumsum(sp), np.cumsum(fp)
        st, ft = sp - sp.mean(), fp - fp.mean()
        c = 0.0 if np.sum(st * ft) == 0 else np.sum(st * ft) / math.sqrt(np.sum(st * st) * np.sum(ft * ft))
        idx = np.arange(1, n + 1)
        s_sd = math.sqrt(max(np.sum(idx**2 * sp) - np.sum(idx * sp) ** 2, 0))
        f_sd = math.sqrt(max(np.sum(idx**2 * fp) - np.sum(idx * fp) ** 2, 0))
        if c >= 0:
            bound = lambda x, y: 0.5 * (x + y - abs(x - y))  # noqa: E731  Frechet upper bound
            zero_weight = c == 0 or s_sd == 0 or f_sd == 0
        else:
            bound = lambda x, y: 0.5 * (x + y - 1 + abs(x + y - 1))  # noqa: E731  Frechet lower bound
            zero_weight = s_sd == 0 or f_sd == 0
        if zero_weight:
            weight = 0.0
        else:
            cov = sum(bound(fc[i], sc[j]) - fc[i] * sc[j] for i in range(n) for j in range(n))
            weight = c / (cov / (f_sd * s_sd))
        joint_entropy = 0.0
        for i in range(n):
            for j in range(n):
                mass = bound(fc[i], sc[j])
                if i > 0:
                    mass -= bound(fc[i - 1], sc[j])
                if j > 0:
                    mass -= bound(fc[i], sc[j - 1])
                if i > 0 and j > 0:
                    mass += bound(fc[i - 1], sc[j - 1])
                p = weight * mass + (1 - weight) * fp[i] * sp[j]
                if p != 0:
                    joint_entropy += -p * math.log2(abs(p))  # MATLAB keeps real(-p log2 p)
        s_entropy = -sum(p * math.log2(p) for p in sp if p != 0)
        f_entropy = -sum(p * math.log2(p) for p in fp if p != 0)
        mi = s_entropy + f_entropy - joint_entropy
        return 0.0 if mi == 0 else 2 * mi / (s_entropy + f_entropy)

    r = w // 2
    values = []
    for p in range(r, a_feature.shape[0] - r):
        for q in range(r, a_feature.shape[1] - r):
            window = (slice(p - r, p + r + 1), slice(q - r, q + r + 1))
            fused = f_feature[window]
            values.append((fmi_pair(a_feature[window], fused) + fmi_pair(b_feature[window], fused)) / 2)
    return np.mean(values)


def fmi_test_images():
    """Coarsely quantised 10x10 images: flat windows, single peaks and both correlation signs."""
    rng = np.random.default_rng(7)
    a, b, fused = (rng.integers(0, 4, (10, 10)) / 3 for _ in range(3))
    a[:4, :4] = 0.5  # flat source windows
    fused[6:, 6:] = b[6:, 6:]  # windows identical to a source
    fused[0, 0] = 1.0
    return a, b, fused


def test_fmi_pixel_matches_a_transcription_of_the_matlab_code():
    a, b, fused = fmi_test_images()
    assert metrics.fmi_pixel(fused, a, b) == pytest.approx(fmi_reference(a, b, fused), rel=1e-9)


def test_fmi_gradient_matches_a_transcription_on_sobel_magnitudes():
    a, b, fused = fmi_test_images()
    features = [ndimage.generic_gradient_magnitude(image, ndimage.sobel) for image in (a, b, fused)]
    assert metrics.fmi_gradient(fused, a, b) == pytest.approx(fmi_reference(*features), rel=1e-9)


# piq 0.8.0, computed once (piq cannot be installed next to this project's torch):
#   piq.vif_p(distorted, CAMERA, data_range=1.0) and
#   piq.fsim(distorted, CAMERA, data_range=1.0, chromatic=False), as float64 (1, 1, H, W) tensors.
PIQ_VALUES = {
    "blur": (ndimage.gaussian_filter(CAMERA, 1.0), 0.3503661398798834, 0.8630505944500959),
    "gamma": (CAMERA**2, 0.5868637928583768, 0.9160261160565764),
    "shift": (np.roll(CAMERA, 2, axis=1), 0.12361510263433925, 0.7348413401243944),
}


@pytest.mark.parametrize("case", list(PIQ_VALUES))
def test_vif_and_fsim_match_piq(case):
    distorted, piq_vif, piq_fsim = PIQ_VALUES[case]
    # with both sources equal, VIF is twice and FSIM once the per-source value
    assert metrics.vif(distorted, CAMERA, CAMERA) / 2 == pytest.approx(piq_vif, abs=1e-8)
    assert metrics.fsim(distorted, CAMERA, CAMERA) == pytest.approx(piq_fsim, abs=2e-5)


# ---------------------------------------------------------------------------
# Mean rank


def test_mean_rank_averages_per_metric_ranks():
    table = {
        "best": {"psnr": 20.0, "ssim": 0.9, "en": 7.0},
        "tie": {"psnr": 10.0, "ssim": 0.5, "en": 7.0},
        "worst": {"psnr": 5.0, "ssim": 0.1, "en": 6.0},
    }
    ranks = mean_rank(table)
    assert ranks == pytest.approx({"best": (1 + 1 + 1.5) / 3, "tie": (2 + 2 + 1.5) / 3, "worst": 3.0})
    assert mean_rank(table, ["ssim"]) == {"best": 1.0, "tie": 2.0, "worst": 3.0}


def test_mean_rank_puts_nan_last_and_inf_first():
    table = {"nan": {"psnr": math.nan}, "inf": {"psnr": math.inf}, "finite": {"psnr": 30.0}}
    assert mean_rank(table) == {"inf": 1.0, "finite": 2.0, "nan": 3.0}


# ---------------------------------------------------------------------------
# Salient structures (known answers on constructed images)


def _salient_case():
    """A 40x40 pair: MRI tissue 0.4 with a bright block (0.9, 10 % of the foreground), CT 0.3 with
    a bone block (1.0, another 10 %), background 0."""
    mri = np.zeros((40, 40))
    ct = np.zeros((40, 40))
    mri[5:35, 5:35] = 0.4  # 900 foreground pixels
    ct[5:35, 5:35] = 0.3
    mri[5:14, 5:15] = 0.9  # 90 pixels: the MRI's brightest 10 %
    ct[26:35, 25:35] = 1.0  # 90 pixels: the CT's brightest 10 %
    return mri, ct


def test_salient_region_is_the_brightest_tenth_of_the_foreground():
    mri, ct = _salient_case()
    mask = metrics.foreground(mri, ct)
    assert mask.sum() == 900
    assert metrics.salient_region(mri, mask).sum() == 90 and metrics.salient_region(mri, mask)[5:14, 5:15].all()
    assert metrics.salient_region(ct, mask).sum() == 90 and metrics.salient_region(ct, mask)[26:35, 25:35].all()
    assert not metrics.salient_region(mri, np.zeros_like(mask)).any()


def test_salient_loss_counts_the_share_that_drops_by_more_than_a_quarter():
    mri, ct = _salient_case()
    assert metrics.salient_loss_a(np.maximum(mri, ct), mri, ct) == 0.0
    assert metrics.salient_loss_b(np.maximum(mri, ct), mri, ct) == 0.0
    fused = np.maximum(mri, ct)
    fused[26:35, 25:30] = 0.4  # half of the bone replaced by MRI grey: a drop of 0.6
    assert metrics.salient_loss_b(fused, mri, ct) == pytest.approx(0.5)
    assert metrics.salient_loss_a(fused, mri, ct) == 0.0
    fused[26:35, 30:35] = 0.8  # a drop of 0.2 is not a loss
    assert metrics.salient_loss_b(fused, mri, ct) == pytest.approx(0.5)
    assert math.isnan(metrics.salient_loss_a(np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 8))))


def test_contrast_retention_is_the_fused_contrast_over_the_source_contrast():
    mri, ct = _salient_case()
    assert metrics.contrast_retention_a(mri, mri, ct) == pytest.approx(1.0)
    assert metrics.contrast_retention_b(ct, mri, ct) == pytest.approx(1.0)
    half = (mri + ct) / 2
    # CT region: fused mean (1.0 + 0.4) / 2 = 0.7; rest: 0.35 except the MRI block (0.6) -> (720*0.35 + 90*0.6)/810
    rest = (720 * 0.35 + 90 * 0.6) / 810
    assert metrics.contrast_retention_b(half, mri, ct) == pytest.approx((0.7 - rest) / (1.0 - 0.3))
    assert metrics.contrast_retention_b(np.full_like(ct, 0.5), mri, ct) == pytest.approx(0.0)
    assert math.isnan(metrics.contrast_retention_a(mri, np.where(mri > 0, 0.4, 0.0), ct))  # flat MRI: no region above


def test_isolated_pixels_counts_specks_inside_bright_structures_only():
    mri, ct = _salient_case()
    fused = np.maximum(mri, ct)
    assert metrics.isolated_pixels(fused, mri, ct) == 0
    fused[28, 27] = fused[30, 31] = 0.3  # two dark specks in the bone
    fused[31, 31] = 0.3  # a neighbour of the second: two touching dark pixels are not isolated
    fused[20, 20] = 0.0  # a speck in ordinary tissue: outside bright structures
    fused[8, 8] = 0.1  # a dark speck in the MRI's bright block
    assert metrics.isolated_pixels(fused, mri, ct) == 2
    ct[28, 27], ct[20, 6] = 0.3, 1.0  # the CT has that speck itself (the fusion did not make it); same bone area
    assert metrics.isolated_pixels(fused, mri, ct) == 1
    assert math.isnan(metrics.isolated_pixels(fused[:2], mri[:2], ct[:2]))
    fused[32, 27] = 0.9 + 0.4  # out of range -> check it is refused rather than counted
    with pytest.raises(ValueError):
        metrics.isolated_pixels(fused, mri, ct)


def test_salient_metrics_are_reported_by_name_but_not_ranked():
    mri, ct = _salient_case()
    values = compute_metrics(np.maximum(mri, ct), mri, ct, names=list(metrics.SALIENT_METRICS))
    assert values == {"salient_loss_mri": 0.0, "salient_loss_other": 0.0, "contrast_mri": pytest.approx(values["contrast_mri"]),
                      "contrast_other": pytest.approx(values["contrast_other"]), "isolated_pixels": 0.0}
    assert not set(metrics.SALIENT_METRICS) & set(METRICS)
