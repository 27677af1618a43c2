"""Choosing a task's default method by leave-one-case-out cross-validation.

One validation case is too little to choose a default on: a method first on it can be second on
unseen patients. Here every development case is held out in turn. For each held-out case:

* the methods are ranked by their mean rank over the 13 metrics on the pairs of the *other*
  cases, and the first is the method that fold would choose (``chosen``);
* every method's mean rank is also computed on the held-out case's own pairs (``held_out``):
  how each method does on a patient that the choice did not see.

A robust default ranks first on held-out cases on average, with a small spread (min/max over the
held-out cases), among the methods that keep both sources' brightest structures on every case
(worst-case salient loss at most ``MAX_SALIENT_LOSS``; a method that loses bone or hot spots is
not eligible however it ranks on the 13 metrics) and leave almost no specks in them (at most
``MAX_ISOLATED_PIXELS`` per pair on every case). Input: the per-pair records of
``evaluate.run_evaluation`` (``results["per_pair"]``, e.g. read from results.json), so the
fusions are computed once (``edgefusion evaluate --cache``) and only scores are re-ranked.

    python -m EdgeFusionLib.evaluation.selection out/evaluate-MRI-CT/results.json [...]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .metrics import METRICS, SALIENT_METRICS, mean_rank

#: A default may lose at most this share of either source's salient region on any held-out case.
MAX_SALIENT_LOSS = 0.01
#: ... and leave at most this many isolated pixels per pair (mean over a held-out case's pairs).
#: Not 0: specks must stay rare, not decide the ranking; `salient-activity` leaves 0.60 per pair on
#: its worst MRI-CT case, `local-activity` 10.7, which does not qualify (docs/results.md).
MAX_ISOLATED_PIXELS = 1.0


def _means(records: Mapping[str, Sequence[dict]], cases: set[str], names: Sequence[str]) -> dict[str, dict[str, float]]:
    """method -> {metric: mean over the pairs of ``cases``} (NaN values skipped)."""
    means = {}
    for method, rows in records.items():
        chosen = [row for row in rows if row["case"] in cases]
        means[method] = {name: float(np.nanmean([row[name] for row in chosen])) if chosen else float("nan")
                         for name in names}
    return means


def leave_one_case_out(records: Mapping[str, Sequence[dict]], metrics: Sequence[str] = tuple(METRICS),
                       max_salient_loss: float = MAX_SALIENT_LOSS, max_isolated_pixels: float = MAX_ISOLATED_PIXELS) -> dict:
    """Cross-validate the choice of method over the cases of ``records`` (method -> per-pair rows with
    'case' and every metric). Returns a dict:

    * ``cases``: the held-out cases, in order; ``folds``: per case, {"chosen", "held_out": {method: rank}};
    * ``summary``: per method, the mean, min and max of its held-out mean rank, how many folds chose it,
      and the worst held-out salient losses and isolated pixels (when the records have them);
    * ``eligible``: the methods whose worst-case salient losses are at most ``max_salient_loss`` and
      whose worst-case isolated pixels per pair are at most ``max_isolated_pixels`` (a measure the
      records lack does not exclude);
    * ``default``: the eligible method with the best mean held-out rank (ties: chosen by more folds).

    Raises ValueError with fewer than two cases or no methods.
    """
    if not records:
        raise ValueError("no methods to cross-validate")
    cases = sorted({row["case"] for rows in records.values() for row in rows})
    if len(cases) < 2:
        raise ValueError(f"leave-one-case-out needs at least two cases, got {len(cases)}")
    metrics = list(metrics)
    folds = {}
    for case in cases:
        training = _means(records, set(cases) - {case}, metrics)
        training_rank = mean_rank(training, metrics)
        held_out = mean_rank(_means(records, {case}, metrics), metrics)
        folds[case] = {"chosen": min(training_rank, key=training_rank.get), "held_out": held_out}
    votes = Counter(fold["chosen"] for fold in folds.values())
    limits = {name: max_isolated_pixels if name == "isolated_pixels" else max_salient_loss
              for name in SALIENT_METRICS if (name.startswith("salient_loss") or name == "isolated_pixels")
              and all(name in row for rows in records.values() for row in rows)}
    summary = {}
    for method in records:
        ranks = np.array([folds[case]["held_out"][method] for case in cases])
        per_case = {case: _means({method: records[method]}, {case}, list(limits))[method] for case in cases}
        summary[method] = {
            "mean": float(ranks.mean()), "min": float(ranks.min()), "max": float(ranks.max()),
            "first_on": int(sum(rank == min(folds[case]["held_out"].values()) for case, rank in zip(cases, ranks))),
            "chosen_by": votes.get(method, 0),
            **{f"{name}_worst_case": max(per_case[case][name] for case in cases) for name in limits},
        }
    eligible = [method for method in records
                if all(summary[method][f"{name}_worst_case"] <= limit for name, limit in limits.items())]
    if not eligible:
        raise ValueError(f"no method keeps its salient losses at or below {max_salient_loss:.0%} and its isolated "
                         f"pixels at or below {max_isolated_pixels:g} per pair on every case")
    default = min(eligible, key=lambda method: (summary[method]["mean"], -summary[method]["chosen_by"]))
    return {"cases": cases, "folds": folds, "summary": summary, "eligible": eligible, "default": default}


_WORST_CASE_LABELS = {
    "salient_loss_mri_worst_case": "MRI salient loss, worst case",
    "salient_loss_other_worst_case": "other salient loss, worst case",
    "isolated_pixels_worst_case": "isolated pixels per pair, worst case",
}


def markdown(result: dict, task: str) -> str:
    """The cross-validation table: methods by mean held-out rank, with the spread and the votes."""
    summary = result["summary"]
    cases = result["cases"]
    worst_cases = [key for key in next(iter(summary.values())) if key.endswith("_worst_case")]
    header = ["method", "held-out mean rank ↓ (mean)", "min", "max", "first on (cases)", "chosen by (folds)",
              *[_WORST_CASE_LABELS[key] for key in worst_cases]]
    title = (f"**{task}**, {len(cases)} cases held out in turn ({', '.join(cases)}); default by cross-validation: "
             f"`{result['default']}` (best held-out mean rank among the methods that lose at most "
             f"{MAX_SALIENT_LOSS:.0%} of either source's salient region and leave at most {MAX_ISOLATED_PIXELS:g} "
             f"isolated pixel per pair, on every case: {', '.join(f'`{m}`' for m in result['eligible'])}).")
    lines = [title, "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method in sorted(summary, key=lambda m: summary[m]["mean"]):
        row = summary[method]
        cells = [f"`{method}`", f"{row['mean']:.2f}", f"{row['min']:.2f}", f"{row['max']:.2f}",
                 f"{row['first_on']} of {len(cases)}", f"{row['chosen_by']} of {len(cases)}",
                 *[f"{row[key]:.2f}" if key == "isolated_pixels_worst_case" else f"{100 * row[key]:.2f} %"
                   for key in worst_cases]]
        lines.append("| " + " | ".join(cells) + " |")
    per_case = ["", "Held-out mean rank per case:", "",
                "| method | " + " | ".join(cases) + " |", "|---|" + "---:|" * len(cases)]
    for method in sorted(summary, key=lambda m: summary[m]["mean"]):
        per_case.append(f"| `{method}` | " + " | ".join(f"{result['folds'][case]['held_out'][method]:.2f}"
                                                          for case in cases) + " |")
    return "\n".join(lines + per_case)


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m EdgeFusionLib.evaluation.selection RESULTS.json [...]", file=sys.stderr)
        return 2
    for path in paths:
        results = json.loads(path.read_text(encoding="utf-8"))
        print(markdown(leave_one_case_out(results["per_pair"], results["metrics"]), results["task"]))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
