"""Why the engine keeps oneDNN's direct 3x3 convolutions: a Winograd F(4x4, 3x3) probe.

    python benchmarks/bench_winograd.py

Times one 64 -> 64 channel 3x3 convolution of a 256x256 map (the pyramid's shared
convolution) with ``F.conv2d`` (oneDNN, channels-last) and with Winograd's minimal
filtering written as torch matrix products (Lavin & Gray 2016): 4x fewer
multiplications, but 36 batched products with K = 64 and memory-bound tile
transforms. Prints the times of both and of each Winograd stage. benchmarks/results.md
quotes the result.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

# F(4x4, 3x3): input transform B^T (6x6), filter transform G (6x3), output transform A^T (4x6).
B_T = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
A_T = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                   dtype=torch.float64)
INPUT_TRANSFORM = torch.kron(B_T, B_T).float()  # (36, 36) on flattened 6x6 tiles
OUTPUT_TRANSFORM = torch.kron(A_T, A_T).float()  # (16, 36)


def winograd_filters(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (36, C_in, C_out): G w G^T per channel pair, one matrix per tile position."""
    u = torch.einsum("ij,ocjk,lk->ilco", G, weight.double(), G)
    return u.reshape(36, weight.shape[1], weight.shape[0]).float().contiguous()


def winograd_conv3x3(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor, stages: dict | None = None):
    """Same as F.conv2d(x, weight, bias, padding=1) for (B, C, H, W) with H, W multiples of 4."""
    b, c, h, w = x.shape
    th, tw, out_channels = h // 4, w // 4, filters.shape[-1]
    clock = time.perf_counter()

    def stage(name):
        nonlocal clock
        if stages is not None:
            now = time.perf_counter()
            stages[name] = stages.get(name, 0.0) + now - clock
            clock = now

    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).contiguous()  # (B, H + 2, W + 2, C)
    row = (w + 2) * c
    tiles = padded.as_strided((6, 6, b, th, tw, c), (row, c, (h + 2) * row, 4 * row, 4 * c, 1)).reshape(36, -1)
    stage("gather 6x6 tiles")
    transformed = (INPUT_TRANSFORM @ tiles).view(36, -1, c)
    stage("input transform")
    products = torch.bmm(transformed, filters)  # (36, tiles, C_out)
    stage("36 batched products")
    out = (OUTPUT_TRANSFORM @ products.view(36, -1)).view(4, 4, b, th, tw, out_channels)
    stage("output transform")
    out = out.permute(2, 3, 0, 4, 1, 5).reshape(b, h, w, out_channels) + bias
    return out.permute(0, 3, 1, 2)


def seconds_per_call(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(1, 64, 256, 256).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        filters = winograd_filters(conv.weight)
        error = (conv(x) - winograd_conv3x3(x, filters, conv.bias)).abs().max().item()
        direct = seconds_per_call(lambda: conv(x))
        winograd = seconds_per_call(lambda: winograd_conv3x3(x, filters, conv.bias))
        stages: dict = {}
        for _ in range(10):
            winograd_conv3x3(x, filters, conv.bias, stages)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; max |direct - winograd| = {error:.1e}")
    print(f"direct (oneDNN): {direct * 1e3:.1f} ms; winograd F(4x4,3x3): {winograd * 1e3:.1f} ms")
    for name, total in stages.items():
        print(f"  {name}: {total / 10 * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
