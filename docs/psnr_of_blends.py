"""PSNR of plain blends (1 - t) MRI + t CT on the MRI-CT validation cases, for the note in results.md.

    python docs/psnr_of_blends.py ../shared/data/harvard

PSNR is the mean of the two per-source values in dB; the table shows which blend
weights reach the paper's MRI-CT headline (16.83 dB). Each blend is scored as the
8-bit image ``edgefusion batch`` would write, like every method in results.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from EdgeFusionLib import atlas, evaluate, metrics  # noqa: E402

CT_SHARES = (0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8)


def main(data_dir: str) -> None:
    pairs = evaluate.select_pairs(data_dir, "MRI-CT", atlas.VALIDATION_CASES["MRI-CT"])
    scores = {t: [] for t in CT_SHARES}
    for pair in pairs:
        loaded = evaluate.load_pair(pair)
        for t in CT_SHARES:
            fused = evaluate.as_written((1 - t) * loaded.mri + t * loaded.other, loaded)
            scores[t].append(metrics.psnr(fused, loaded.mri, loaded.other))
    print(f"| CT share t ({len(pairs)} pairs) | " + " | ".join(f"{t:g}" for t in CT_SHARES) + " |")
    print("|---|" + "---:|" * len(CT_SHARES))
    print("| PSNR (dB) | " + " | ".join(f"{np.mean(scores[t]):.2f}" for t in CT_SHARES) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/harvard")
