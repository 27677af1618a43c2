"""PSNR of blends on the MRI-CT validation cases, for the note in results.md.

    python docs/psnr_of_blends.py ../shared/data/harvard [out]

PSNR is the mean of the two per-source values in dB. The first table shows which
plain blends (1 - t) MRI + t CT reach the paper's MRI-CT headline (16.83 dB). The
second blends the two network results, (1 - s) local-activity + s sfnn-compensated:
the CT's bone stays at full contrast (both results take it from the CT) and only the
MRI's soft tissue fades. Each blend is also ranked over the 13 metrics with the
methods of ``out/evaluate-MRI-CT/results.json`` (written by ``edgefusion evaluate``,
see results.md). Everything is scored as the 8-bit image ``edgefusion batch`` writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from EdgeFusionLib.evaluation import (
    evaluate,
    metrics,  # noqa: E402
)
from EdgeFusionLib.fusion.engine import FusionEngine  # noqa: E402
from EdgeFusionLib.io import atlas

TASK = "MRI-CT"
CT_SHARES = (0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8)
SFNN_COMPENSATED_SHARES = (0.3, 0.4, 0.5, 0.6)


def main(data_dir: str, out_dir: str) -> None:
    pairs = evaluate.select_pairs(data_dir, TASK, atlas.VALIDATION_CASES[TASK])
    local_activity = FusionEngine("local-activity", task=TASK, device="cpu")
    sfnn_compensated = FusionEngine("sfnn-compensated", task=TASK, device="cpu")
    blend_psnr = {t: [] for t in CT_SHARES}
    mix_scores = {s: [] for s in SFNN_COMPENSATED_SHARES}
    for pair in pairs:
        loaded = evaluate.load_pair(pair)
        for t in CT_SHARES:
            fused = evaluate.as_written((1 - t) * loaded.mri + t * loaded.other, loaded)
            blend_psnr[t].append(metrics.psnr(fused, loaded.mri, loaded.other))
        mri, ct = loaded.mri[None], loaded.other[None]
        la, sc = local_activity.fuse_grey(mri, ct)[0], sfnn_compensated.fuse_grey(mri, ct)[0]
        for s in SFNN_COMPENSATED_SHARES:
            fused = evaluate.as_written((1 - s) * la + s * sc, loaded)
            mix_scores[s].append(metrics.compute_metrics(fused, loaded.mri, loaded.other))

    print(f"| CT share t ({len(pairs)} pairs) | " + " | ".join(f"{t:g}" for t in CT_SHARES) + " |")
    print("|---|" + "---:|" * len(CT_SHARES))
    print("| PSNR (dB) | " + " | ".join(f"{np.mean(blend_psnr[t]):.2f}" for t in CT_SHARES) + " |")
    print()

    evaluated = json.loads((Path(out_dir) / f"evaluate-{TASK}" / "results.json").read_text(encoding="utf-8"))
    table = {method: summary["mean"] for method, summary in evaluated["summary"].items()}
    names = list(metrics.METRICS)
    print(f"| sfnn-compensated share s | PSNR (dB) | mean rank among it and the {len(table)} methods | place |")
    print("|---:|---:|---:|---:|")
    for s, rows in mix_scores.items():
        mix = f"mix {s:g}"
        ranks = metrics.mean_rank({**table, mix: {k: float(np.mean([r[k] for r in rows])) for k in names}}, names)
        place = sorted(ranks, key=ranks.get).index(mix) + 1
        print(f"| {s:g} | {np.mean([r['psnr'] for r in rows]):.2f} | {ranks[mix]:.2f} | {place} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/harvard", sys.argv[2] if len(sys.argv) > 2 else "out")
