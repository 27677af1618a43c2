"""Slice-wise fusion of 2D images and 3D volumes: batching, device, progress, cancel.

The engine takes arrays, never files or nodes. It walks the slices of the MRI
along one axis in batches, normalises each batch with the given intensity windows,
fuses it and writes it into the preallocated output, so that working memory is one
batch whatever the number of slices (the inputs and the output are the only
volume-sized arrays).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import numpy as np

from ..devices import default_batch_size, device_type, resolve_device
from ..errors import FusionCancelled, InputError

from ..modality import check_task
from .colour import apply_colour_table, delivered_8bit, luma
from .intensity import UNIT_WINDOW, IntensityWindow
from .methods import DEFAULT_METHOD, get_method

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]


class FusionEngine:
    """Fuses an MRI with another modality, slice by slice, with one method.

    ``method``: a name from :func:`EdgeFusionLib.fusion.methods.method_names` (default: the
    task's default). Latent methods need EH-DRAN weights: ``model`` (an
    :class:`~EdgeFusionLib.model.network.EHDRAN`) or, when None, the bundled weights of
    ``task``. ``batch_size`` None picks the device's default.
    """

    def __init__(self, method: str | None = None, task: str = "MRI-CT", device: str = "auto",
                 batch_size: int | None = None, model=None):
        check_task(task)
        self.method = get_method(method or DEFAULT_METHOD[task])
        self.task = task
        self.device = resolve_device(device)
        self.batch_size = default_batch_size(self.device, batch_size)
        self._encoder = self._decoder = self._rule = None
        if self.method.needs_model:
            self._prepare_network(model)

    def _prepare_network(self, model) -> None:
        import copy

        import torch

        from ..model.folded import FoldedEncoder
        from ..model.weights import load_model
        from .rules import LATENT_RULES

        if model is None:
            model = load_model(self.task, "cpu")
        model = model.eval()
        device = torch.device(self.device)
        self._encoder = FoldedEncoder(model).to(device).eval()
        decoder = copy.deepcopy(model.decoder).to(device).to(memory_format=torch.channels_last).eval()
        for layer in decoder.modules():
            if isinstance(layer, torch.nn.LeakyReLU):
                layer.inplace = True  # a copy, used without autograd: no need for fresh activations
        # Split after the first (affine) layer, which the compensated rules share (see _fuse_compensated).
        self._decoder_first, self._decoder_rest = decoder.layers[0], decoder.layers[1:]
        self._rule = LATENT_RULES[self.method.name]
        if device_type(self.device) == "cuda":
            # Same input, same GPU, same output: no autotuned (nondeterministic) conv algorithms.
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

    # ---------------------------------------------------------------- public API

    def fuse(self, mri: np.ndarray, other: np.ndarray, *, axis: int = 0,
             mri_window: IntensityWindow = UNIT_WINDOW, other_window: IntensityWindow = UNIT_WINDOW,
             colour_table: np.ndarray | None = None,
             progress: ProgressCallback | None = None, cancel: CancelCallback | None = None) -> np.ndarray:
        """Fuse two registered images of the same grid.

        mri:   (H, W) or (N0, N1, N2) scalar array, raw values mapped by ``mri_window``.
        other: the same shape (scalar, mapped by ``other_window``), or that shape plus a
               last axis of 3 (RGB, mapped by ``other_window``, e.g. 0-255 for 8-bit).
               A scalar ``other`` with a ``colour_table`` (K, 3) is shown through the table
               first (docs/method.md §3) and fused as colour.
        axis:  slicing axis for 3D arrays.
        Returns float32 [0, 1] with the MRI's shape (grey), or uint8 RGB with a last
        axis of 3 (colour). ``cancel()`` returning True raises FusionCancelled.
        """
        colour = other.shape == mri.shape + (3,) or colour_table is not None
        self._check_shapes(mri, other, axis, colour_table)
        volume = mri.ndim == 3
        mri_slices = np.moveaxis(mri, axis, 0) if volume else mri[np.newaxis]
        other_slices = np.moveaxis(other, axis, 0) if volume else other[np.newaxis]
        if colour:
            output = np.empty(mri.shape + (3,), dtype=np.uint8)
        else:
            output = np.empty(mri.shape, dtype=np.float32)
        output_slices = np.moveaxis(output, axis, 0) if volume else output[np.newaxis]

        total = mri_slices.shape[0]
        with _freed_memory_kept(self.device == "cpu" and self.method.needs_model):
            for start in range(0, total, self.batch_size):
                if cancel is not None and cancel():
                    raise FusionCancelled("fusion cancelled")
                stop = min(start + self.batch_size, total)
                mri01 = mri_window.apply(mri_slices[start:stop])
                if not colour:
                    output_slices[start:stop] = self.fuse_grey(mri01, other_window.apply(other_slices[start:stop]))
                else:
                    rgb = other_window.apply(other_slices[start:stop])
                    if colour_table is not None:
                        rgb = apply_colour_table(rgb, colour_table)
                    output_slices[start:stop] = delivered_8bit(self.fuse_grey(mri01, luma(rgb)), rgb)
                if progress is not None:
                    progress(stop, total)
        return output

    def fuse_grey(self, mri01: np.ndarray, other01: np.ndarray) -> np.ndarray:
        """Fuse a batch of slices (B, H, W) in [0, 1] -> (B, H, W) float32 in [0, 1]."""
        if not self.method.needs_model:
            from .baselines import PIXEL_METHODS

            fuse = PIXEL_METHODS[self.method.name]
            return np.stack([fuse(a, b) for a, b in zip(mri01, other01)]).astype(np.float32, copy=False)
        return self._fuse_latent(mri01, other01)

    # ---------------------------------------------------------------- internals

    def _fuse_latent(self, mri01: np.ndarray, other01: np.ndarray) -> np.ndarray:
        import torch

        from .rules import CompensatedRule, DecisionMapRule
        from .salient import GuardedCompensatedRule, guard_salient

        device = torch.device(self.device)
        with torch.inference_mode():
            height, width = mri01.shape[-2:]
            images, latents = [], []
            for image in (mri01, other01):
                tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device).unsqueeze(1)
                images.append(tensor)
                latents.append(self._encoder(pad_to_even(tensor))[..., :height, :width])
            if isinstance(self._rule, DecisionMapRule):
                # w1 is 0 or 1, and lerp returns its end points exactly: each pixel is a source pixel.
                fused = torch.lerp(images[1], images[0], self._rule.select(*images, *latents))
            elif isinstance(self._rule, CompensatedRule):
                fused = self._fuse_compensated(images, latents)
                if isinstance(self._rule, GuardedCompensatedRule):
                    fused = guard_salient(fused.clamp_(0, 1), *images)
            else:
                fused = self._decode(self._rule(*latents))
            return fused.clamp_(0, 1)[:, 0].float().cpu().numpy()

    def _fuse_compensated(self, images, latents):
        """D(w1 f1 + w2 f2) + w1 (I1 - D(f1)) + w2 (I2 - D(f2)), w2 = 1 - w1 per slice (see CompensatedRule).

        The decoder's first layer is affine, so it commutes with mixing by one number per slice:
        D(w1 f1 + w2 f2) starts from w1 L(f1) + w2 L(f2), and L(f1), L(f2) also start the reconstructions.
        """
        import torch

        w1 = self._rule.weights(*latents).view(-1, 1, 1, 1)
        hidden = [self._decoder_first(self._channels_last(latent)) for latent in latents]
        fused = self._decoder_rest(torch.lerp(hidden[1], hidden[0], w1)).contiguous()
        for weight, image, h in zip((w1, 1 - w1), images, hidden):
            fused += weight * (image - self._decoder_rest(h))
        return fused

    def _decode(self, latent):
        return self._decoder_rest(self._decoder_first(self._channels_last(latent))).contiguous()

    @staticmethod
    def _channels_last(tensor):
        import torch

        return tensor.contiguous(memory_format=torch.channels_last)

    def _check_shapes(self, mri: np.ndarray, other: np.ndarray, axis: int, colour_table) -> None:
        if mri.ndim not in (2, 3):
            raise InputError(f"the MRI must be a 2D image or a 3D volume of scalars, got an array of shape {mri.shape}")
        if other.shape not in (mri.shape, mri.shape + (3,)):
            raise InputError(f"the images have different sizes: MRI {mri.shape}, other {other.shape}")
        if colour_table is not None and other.shape != mri.shape:
            raise InputError("a colour table applies to a scalar image, but the other image is already RGB")
        if mri.ndim != 3:
            return
        if axis not in (0, 1, 2):
            raise InputError(f"slice axis must be 0, 1 or 2, got {axis}")
        slice_shape = mri.shape[:axis] + mri.shape[axis + 1:]
        if min(slice_shape) < 2 < max(mri.shape):  # e.g. sagittal lines through one axial slice
            raise InputError(f"the slices along axis {axis} are {slice_shape[0]} x {slice_shape[1]} pixels, lines rather "
                             "than images; slice across the volume's thinnest axis instead")


def pad_to_even(images):
    """Reflect-pad (B, 1, H, W) at the bottom/right to even H and W (replicate for size 1).

    The attention mask pools 2x2, so EH-DRAN needs even sizes; callers crop back.
    """
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    pad = (0, width % 2, 0, height % 2)
    if pad == (0, 0, 0, 0):
        return images
    mode = "reflect" if min(height, width) > 1 else "replicate"
    return F.pad(images, pad, mode=mode)


#: mallopt(3) parameters of glibc.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: While fusing, freed blocks below this size stay mapped for reuse.
_KEEP_FREED_BELOW = 1 << 30
#: Afterwards: where glibc's own dynamic thresholds settle once large blocks have been freed
#: (mmap 32 MiB, DEFAULT_MMAP_THRESHOLD_MAX on 64-bit; trim twice that). Setting a threshold ends
#: the dynamic adjustment, and glibc's initial 128 KiB would then map every larger block afresh:
#: measured, that made the plain PyTorch reference 16-42 % slower in the same process.
_MMAP_THRESHOLD_AFTER, _TRIM_THRESHOLD_AFTER = 32 << 20, 64 << 20


@contextlib.contextmanager
def _freed_memory_kept(enabled: bool = True):
    """Keep freed memory mapped while fusing on CPU, then give it back (glibc; elsewhere nothing).

    Every slice allocates the same large temporaries (17-50 MB each for 256x256). glibc maps
    blocks that large afresh on each allocation and unmaps them when freed, and faulting in
    the fresh pages took about a quarter of the CPU fusion time (benchmarks/results.md). Raised
    mmap and trim thresholds let each encoder pass reuse the memory of the previous one; on exit
    the thresholds go to the values glibc's dynamic scheme reaches by itself, and malloc_trim hands
    the kept memory back. Process-wide while it lasts.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_FREED_BELOW)
    libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BELOW)
    try:
        yield
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_AFTER)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_AFTER)
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library when it is glibc (which has mallopt and malloc_trim), else None."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
