"""Classical pixel-domain fusion baselines: output contract and properties by construction."""

import numpy as np
import pytest

from conftest import phantom_slice
from EdgeFusionLib.fusion.baselines import PIXEL_METHODS

SHAPES = [(32, 32), (17, 23), (40, 9), (2, 3), (1, 7), (5, 1), (1, 1)]


def source_pair(shape):
    a = phantom_slice(*shape, seed=1)
    b = phantom_slice(*shape, seed=2) ** 2
    return a, b


def test_registry_names():
    assert list(PIXEL_METHODS) == ["pixel-average", "pixel-max", "laplacian-pyramid", "dwt", "guided-filter"]
    assert all(PIXEL_METHODS[name].__doc__ for name in PIXEL_METHODS)


@pytest.mark.parametrize("name", list(PIXEL_METHODS))
@pytest.mark.parametrize("shape", SHAPES)
def test_output_is_float32_of_the_input_shape_in_unit_range(name, shape):
    fused = PIXEL_METHODS[name](*source_pair(shape))
    assert fused.dtype == np.float32 and fused.shape == shape
    assert np.all(np.isfinite(fused)) and fused.min() >= 0 and fused.max() <= 1


@pytest.mark.parametrize("name", list(PIXEL_METHODS))
@pytest.mark.parametrize("shape", SHAPES)
def test_fusing_an_image_with_itself_returns_it(name, shape):
    image = phantom_slice(*shape, seed=3)
    np.testing.assert_allclose(PIXEL_METHODS[name](image, image), image, atol=1e-6)


@pytest.mark.parametrize("name", list(PIXEL_METHODS))
def test_order_of_the_sources_does_not_matter(name):
    a, b = source_pair((48, 40))
    np.testing.assert_allclose(PIXEL_METHODS[name](a, b), PIXEL_METHODS[name](b, a), atol=1e-6)


def test_pixel_rules():
    a, b = source_pair((16, 16))
    np.testing.assert_allclose(PIXEL_METHODS["pixel-average"](a, b), (a + b) / 2, atol=1e-7)
    np.testing.assert_array_equal(PIXEL_METHODS["pixel-max"](a, b), np.maximum(a, b))


@pytest.mark.parametrize("name", ["pixel-average", "laplacian-pyramid", "dwt", "guided-filter"])
def test_constant_sources_fuse_to_their_average(name):
    """No detail anywhere: only the averaged low band (or base layer) remains."""
    a, b = np.full((24, 30), 0.2), np.full((24, 30), 0.6)
    np.testing.assert_allclose(PIXEL_METHODS[name](a, b), 0.4, atol=1e-6)


@pytest.mark.parametrize("name", ["laplacian-pyramid", "dwt", "guided-filter"])
def test_multiscale_methods_keep_the_detail_of_each_source(name):
    """Texture only in A's left half and only in B's right half: max-abs detail selection (or
    saliency weights) keeps both at full contrast, where the average halves it."""
    shape = (32, 64)
    texture = 0.5 + 0.4 * (np.indices(shape).sum(axis=0) % 2)
    a, b = np.full(shape, 0.5), np.full(shape, 0.5)
    a[:, :32], b[:, 32:] = texture[:, :32], texture[:, 32:]
    fused = PIXEL_METHODS[name](a, b)
    average = PIXEL_METHODS["pixel-average"](a, b)
    for half in (slice(0, 32), slice(32, 64)):
        contrast, average_contrast = (np.std(image[:, half]) for image in (fused, average))
        assert contrast > 1.5 * average_contrast


@pytest.mark.parametrize("name", list(PIXEL_METHODS))
def test_invalid_inputs_are_rejected(name):
    a, b = source_pair((16, 16))
    with pytest.raises(ValueError, match="one shape"):
        PIXEL_METHODS[name](a, b[:8])
    with pytest.raises(ValueError, match="2D"):
        PIXEL_METHODS[name](np.stack([a, a]), np.stack([b, b]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PIXEL_METHODS[name](a * 255, b)
