"""The slice-wise fusion engine: shapes, padding, batching, progress, cancel, determinism, memory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from EdgeFusionLib.fusion import engine as engine_module
from EdgeFusionLib.devices import resolve_device
from EdgeFusionLib.fusion.engine import FusionEngine, pad_to_even
from EdgeFusionLib.errors import FusionCancelled, InputError, MissingWeightsError
from EdgeFusionLib.fusion.intensity import IntensityWindow
from EdgeFusionLib.fusion.rules import LATENT_RULES, CompensatedRule, DecisionMapRule

from conftest import REPO, make_random_model, phantom_slice


def reference_fusion(model, mri01, other01, rule="sfnn"):
    """decoder(rule(encoder(a), encoder(b))) with the plain (unfolded) model, one slice at a time;
    for compensated rules D(w f1 + (1 - w) f2) + w (a - D(f1)) + (1 - w) (b - D(f2)), for decision
    maps w a + (1 - w) b, as defined."""
    out = []
    with torch.no_grad():
        for a, b in zip(mri01, other01):
            ia, ib = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
            fa, fb = model.encoder(ia), model.encoder(ib)
            fused = model.decoder(LATENT_RULES[rule](fa, fb))
            if isinstance(LATENT_RULES[rule], CompensatedRule):
                w = LATENT_RULES[rule].weights(fa, fb).view(-1, 1, 1, 1)
                fused = fused + w * (ia - model.decoder(fa)) + (1 - w) * (ib - model.decoder(fb))
            if isinstance(LATENT_RULES[rule], DecisionMapRule):
                w = LATENT_RULES[rule].weights(fa, fb)
                fused = w * ia + (1 - w) * ib
            out.append(fused.clamp(0, 1)[0, 0].numpy())
    return np.stack(out)


@pytest.mark.parametrize("rule", ["sfnn", "energy-ratio", "sfnn-compensated", "local-activity"])
def test_engine_equals_the_plain_model(random_model, rule):
    mri = np.stack([phantom_slice(32, 48, seed) for seed in range(3)])
    other = np.stack([phantom_slice(32, 48, 10 + seed) ** 2 for seed in range(3)])
    fused = FusionEngine(rule, model=random_model, batch_size=2).fuse(mri, other)
    assert fused.dtype == np.float32 and fused.shape == (3, 32, 48)
    assert np.allclose(fused, reference_fusion(random_model, mri, other, rule), atol=2e-5)


@pytest.mark.parametrize("shape", [(7, 5), (1, 1), (3, 9), (33, 64)])
def test_any_2d_size_is_fused_at_its_own_size(random_model, shape):
    mri, other = phantom_slice(*shape, 0), phantom_slice(*shape, 1)
    fused = FusionEngine("sfnn", model=random_model).fuse(mri, other)
    assert fused.shape == shape
    assert 0 <= fused.min() and fused.max() <= 1


def test_pad_to_even_reflects_and_keeps_even_sizes():
    x = torch.arange(15.0).view(1, 1, 3, 5)
    padded = pad_to_even(x)
    assert padded.shape == (1, 1, 4, 6)
    assert torch.equal(padded[..., :3, :5], x)
    assert torch.equal(padded[0, 0, 3, :5], x[0, 0, 1])  # reflected row
    assert pad_to_even(torch.rand(1, 1, 4, 6)).shape == (1, 1, 4, 6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_is_fused_slice_by_slice_along_the_axis(random_model, axis):
    rng = np.random.default_rng(0)
    mri = rng.random((6, 10, 12)).astype(np.float32)
    other = rng.random((6, 10, 12)).astype(np.float32)
    fused = FusionEngine("sfnn", model=random_model, batch_size=4).fuse(mri, other, axis=axis)
    assert fused.shape == mri.shape
    one = np.take(mri, 2, axis=axis), np.take(other, 2, axis=axis)
    single = FusionEngine("sfnn", model=random_model).fuse(*one)
    assert np.allclose(np.take(fused, 2, axis=axis), single, atol=1e-5)


def test_batch_size_does_not_change_the_result(random_model):
    mri = np.stack([phantom_slice(24, 24, s) for s in range(5)])
    other = np.stack([phantom_slice(24, 24, 9 + s) for s in range(5)])
    one = FusionEngine("sfnn", model=random_model, batch_size=1).fuse(mri, other)
    five = FusionEngine("sfnn", model=random_model, batch_size=5).fuse(mri, other)
    assert np.allclose(one, five, atol=1e-5)


def test_same_input_same_device_gives_identical_bits(random_model):
    mri, other = phantom_slice(40, 40, 0), phantom_slice(40, 40, 1)
    first = FusionEngine("sfnn", model=random_model).fuse(mri, other)
    second = FusionEngine("sfnn", model=random_model).fuse(mri, other)
    assert np.array_equal(first, second)


def test_progress_reports_slices_done_and_total(random_model):
    seen = []
    mri = np.zeros((5, 8, 8), np.float32) + phantom_slice(8, 8)
    FusionEngine("pixel-average", batch_size=2).fuse(mri, mri, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_cancel_stops_between_batches_and_returns_nothing():
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2  # let two batches run, then cancel

    mri = np.stack([phantom_slice(8, 8, s) for s in range(6)])
    with pytest.raises(FusionCancelled):
        FusionEngine("pixel-max", batch_size=2).fuse(mri, mri, cancel=cancel)
    assert len(calls) == 3


def test_windows_map_raw_values_before_fusion():
    mri = np.full((4, 4), 1000.0, np.float32)
    mri[0, 0] = 0
    ct = np.full((4, 4), 200.0, np.float32)  # HU: top of the CT window -> 1
    fused = FusionEngine("pixel-average").fuse(mri, ct, mri_window=IntensityWindow(0, 2000),
                                               other_window=IntensityWindow(-100, 200))
    assert fused[1, 1] == pytest.approx((0.5 + 1.0) / 2)
    assert fused[0, 0] == pytest.approx(0.5)


def test_rgb_other_fuses_luma_and_keeps_chroma():
    from EdgeFusionLib.fusion.colour import rgb_to_ycbcr

    mri = phantom_slice(16, 16, 0)
    rgb = np.zeros((16, 16, 3), np.uint8)
    # a muted orange that stays inside the RGB cube after fusion (saturated colours clip, changing Y)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 170, 140, 120
    fused = FusionEngine("pixel-average").fuse(mri, rgb, other_window=IntensityWindow(0, 255))
    assert fused.dtype == np.uint8 and fused.shape == (16, 16, 3)
    source = rgb_to_ycbcr(rgb / 255.0)
    result = rgb_to_ycbcr(fused / 255.0)
    assert np.allclose(result[..., 0], (mri + source[..., 0]) / 2, atol=2.5 / 255)
    assert np.allclose(result[..., 1:], source[..., 1:], atol=2.5 / 255)


def test_scalar_other_with_colour_table_becomes_rgb():
    table = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], np.float32)  # black-red-yellow-white
    mri = np.zeros((2, 4, 4), np.float32)
    counts = np.full((2, 4, 4), 50.0, np.float32)  # 50 of 150 -> entry 1 (red)
    fused = FusionEngine("pixel-max").fuse(mri, counts, other_window=IntensityWindow(0, 150), colour_table=table)
    assert fused.shape == (2, 4, 4, 3)
    assert np.array_equal(fused[0, 0, 0], [255, 0, 0])  # max(MRI 0, red luma) keeps pure red


def test_mismatched_shapes_are_refused_before_work():
    with pytest.raises(InputError, match="different sizes"):
        FusionEngine("pixel-max").fuse(np.zeros((4, 4)), np.zeros((4, 5)))
    single_slice = np.zeros((1, 6, 6), np.float32)
    with pytest.raises(InputError, match="1 x 6 pixels, lines"):
        FusionEngine("pixel-max").fuse(single_slice, single_slice, axis=1)


def test_devices():
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("cuda:first")
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda:0"):
            with pytest.raises(InputError, match="not available"):
                resolve_device(device)


def test_latent_methods_need_weights(models_dir_empty):
    with pytest.raises(MissingWeightsError, match="no weights for task MRI-SPECT"):
        FusionEngine("sfnn", task="MRI-SPECT")
    FusionEngine("pixel-max", task="MRI-SPECT")  # baselines need none


MEMORY_PROBE = r"""
import json, resource, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from conftest import make_random_model
from EdgeFusionLib.fusion.engine import FusionEngine
slices = int(sys.argv[1])
engine = FusionEngine("sfnn", model=make_random_model(), batch_size=2)
small = np.random.default_rng(0).random((4, 64, 64), dtype=np.float32)
engine.fuse(small, small)  # warm up allocator and kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mri = np.random.default_rng(1).random((slices, 64, 64), dtype=np.float32)
other = np.random.default_rng(2).random((slices, 64, 64), dtype=np.float32)
engine.fuse(mri, other)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "arrays_kib": 3 * mri.nbytes // 1024}))
"""


def test_peak_memory_grows_only_by_the_input_and_output_arrays():
    """Fusing 40 vs 400 slices: the peak may grow by the inputs + output, not by per-slice work.

    A fixed mmap threshold outside the fusion keeps the arrays out of the heap, so they are
    counted exactly. During the fusion the engine keeps freed blocks on the heap for reuse
    (engine._freed_memory_kept), whose fragmentation adds a few MiB (measured 2-6 MiB for 40 to
    2,000 slices); holding one 64x64 slice's latents (1 MiB) per slice would add 360 MiB.
    """
    results = {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for slices in (40, 400):
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(slices), str(REPO / "Testing")],
                             capture_output=True, text=True, check=True, cwd=REPO, env=env)
        results[slices] = json.loads(out.stdout)
    extra_arrays = results[400]["arrays_kib"] - results[40]["arrays_kib"]  # 3 x 360 slices x 16 KiB = 17 MiB
    extra_peak = results[400]["growth_kib"] - results[40]["growth_kib"]
    assert extra_peak <= extra_arrays + 8 * 1024, results


@pytest.mark.parametrize("rule", ["sfnn-compensated", "local-activity"])
def test_image_fused_with_itself_is_returned(random_model, rule):
    image = phantom_slice(40, 36, 4)
    fused = FusionEngine(rule, model=random_model).fuse(image, image)
    assert np.allclose(fused, image, atol=1e-5)


def test_local_activity_shows_each_source_where_only_it_has_structure(random_model):
    """Left half: only the MRI has structure; right half: only the CT. The fused image is the MRI
    on the left and the CT on the right, and every pixel is exactly a pixel of one source."""
    mri, ct = 0.5 + 0.4 * phantom_slice(32, 64, 1), 0.5 + 0.4 * phantom_slice(32, 64, 2)
    mri[:, 32:] = 0
    ct[:, :32] = 0
    mri, ct = mri.astype(np.float32), ct.astype(np.float32)
    fused = FusionEngine("local-activity", model=random_model).fuse(mri, ct)
    assert np.array_equal(fused[:, :30], mri[:, :30])
    assert np.array_equal(fused[:, 34:], ct[:, 34:])
    assert np.all((fused == mri) | (fused == ct))


@pytest.mark.skipif(engine_module._glibc() is None, reason="the allocator settings exist on glibc only")
def test_memory_kept_for_reuse_while_fusing_is_given_back_afterwards():
    """The engine keeps freed blocks mapped during a CPU fusion (speed), and returns them at the end."""

    def resident_mib():
        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    before = resident_mib()
    with engine_module._freed_memory_kept():
        block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
        del block
        kept = resident_mib() - before
    after = resident_mib() - before
    assert kept > 48 and after < 16, (kept, after)
