"""Engine vs a straightforward reference, in one process, on the same inputs.

Reference = what the paper's released code does: one slice at a time through the
plain (unfolded) EH-DRAN, one ``torch.norm(channel, "nuc")`` per channel (singular
values only) followed by a host sync (``.item()``) for the softmax nuclear norms. Engine = ``FusionEngine`` with its
defaults for the device. Both use the same weights and the same rule, and both
outputs are compared (they must agree to float precision).

    python benchmarks/bench_engine.py [--device cpu|cuda] [--pairs 5] [--slices 160] [--method sfnn]

Prints a markdown table: seconds per 256x256 pair, seconds for a 256x256xN volume,
peak extra memory (RSS sampled every 2 ms above the level before the run), and the
ratios. Weights: the bundled MRI-CT model when present, else a seeded random model
(speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from EdgeFusionLib.errors import MissingWeightsError  # noqa: E402
from EdgeFusionLib.fusion.engine import FusionEngine, resolve_device  # noqa: E402
from EdgeFusionLib.fusion.methods import DEFAULT_METHOD  # noqa: E402
from EdgeFusionLib.fusion.rules import SFNN_REDUCTIONS  # noqa: E402
from EdgeFusionLib.model.network import EHDRAN  # noqa: E402
from EdgeFusionLib.model.weights import load_model  # noqa: E402


def reference_fuse(model, mri01: np.ndarray, other01: np.ndarray, device: str, reduction: str = "max2") -> np.ndarray:
    """The paper's way, slice by slice: (N, H, W) float32 in [0, 1] -> fused (N, H, W)."""
    out = np.empty_like(mri01)
    with torch.no_grad():
        for index in range(mri01.shape[0]):
            latents, activities = [], []
            for image in (mri01[index], other01[index]):
                latent = model.encoder(torch.from_numpy(image).to(device)[None, None])
                softmax = torch.softmax(latent, dim=1)[0]
                # As the released code: torch.norm(..., "nuc") per channel, each followed by .item() (a host sync).
                norms = torch.tensor([torch.norm(channel, "nuc").item() for channel in softmax], dtype=torch.float64)
                latents.append(latent)
                activities.append(SFNN_REDUCTIONS[reduction](norms[None])[0].item())
            w1 = activities[0] / (activities[0] + activities[1])
            fused = model.decoder(w1 * latents[0] + (1 - w1) * latents[1]).clamp(0, 1)
            out[index] = fused[0, 0].cpu().numpy()
    return out


class PeakMemory:
    """Peak resident memory above the level at entry, sampled by a thread (MiB)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * 4096

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.base) / 2**20
        return False


def atlas_like_volume(slices: int, seed: int) -> np.ndarray:
    """Smooth random brain-sized structures in [0, 1] (the atlas images may not be copied)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, slices // 8), 32, 32)).astype(np.float32)
    tensor = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None, None], size=(slices, 256, 256),
                                             mode="trilinear", align_corners=False)[0, 0].numpy()
    y, x = np.mgrid[0:256, 0:256]
    head = (((y - 128) / 110.0) ** 2 + ((x - 128) / 95.0) ** 2) < 1
    return np.ascontiguousarray(tensor * head, dtype=np.float32)


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--slices", type=int, default=160)
    parser.add_argument("--method", default="sfnn", choices=["sfnn"])
    parser.add_argument("--skip-reference-volume", action="store_true",
                        help="time the reference volume from its per-pair time instead of running it")
    args = parser.parse_args()
    device = resolve_device(args.device)
    try:
        model, weights = load_model("MRI-CT", device), "bundled MRI-CT"
    except MissingWeightsError:
        torch.manual_seed(0)
        model, weights = EHDRAN().to(device).eval(), "random (seeded)"
    engine = FusionEngine(args.method, model=model, device=device)

    pairs_mri, pairs_other = atlas_like_volume(args.pairs, 1), atlas_like_volume(args.pairs, 2)
    reference_fuse(model, pairs_mri[:1], pairs_other[:1], device)  # warm-up both paths
    engine.fuse(pairs_mri[:1], pairs_other[:1])

    rows = []
    with PeakMemory() as ref_memory:
        ref_out, ref_pairs = timed(lambda: reference_fuse(model, pairs_mri, pairs_other, device))
    with PeakMemory() as eng_memory:
        eng_out, eng_pairs = timed(lambda: engine.fuse(pairs_mri, pairs_other))
    agreement = float(np.abs(ref_out - eng_out).max())
    rows.append(("256x256 pair (s / pair)", ref_pairs / args.pairs, eng_pairs / args.pairs))
    default_engine = FusionEngine(DEFAULT_METHOD["MRI-CT"], model=model, device=device)
    default_engine.fuse(pairs_mri[:1], pairs_other[:1])
    _, default_pairs = timed(lambda: default_engine.fuse(pairs_mri, pairs_other))
    rows.append((f"  engine with the default `{DEFAULT_METHOD['MRI-CT']}` (s / pair)", ref_pairs / args.pairs,
                 default_pairs / args.pairs))
    rows.append(("  peak extra memory (MiB)", ref_memory.mib, eng_memory.mib))

    volume_mri, volume_other = atlas_like_volume(args.slices, 3), atlas_like_volume(args.slices, 4)
    if args.skip_reference_volume:
        ref_volume = ref_pairs / args.pairs * args.slices
        ref_volume_memory = float("nan")
    else:
        with PeakMemory() as memory:
            _, ref_volume = timed(lambda: reference_fuse(model, volume_mri, volume_other, device))
        ref_volume_memory = memory.mib
    with PeakMemory() as memory:
        _, eng_volume = timed(lambda: engine.fuse(volume_mri, volume_other))
    rows.append((f"256x256x{args.slices} volume (s)", ref_volume, eng_volume))
    rows.append(("  peak extra memory (MiB)", ref_volume_memory, memory.mib))

    print(f"device: {device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads); weights: {weights}; method: {args.method}; "
          f"engine batch size {engine.batch_size}; max |reference - engine| = {agreement:.2e}\n")
    print("| measurement | reference | engine | reference / engine |")
    print("|---|---|---|---|")
    for name, ref, eng in rows:
        print(f"| {name} | {ref:.3f} | {eng:.3f} | {ref / eng:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
