"""Assemble docs/results.md from the reports of ``edgefusion evaluate`` on all development cases.

    for task in MRI-CT MRI-SPECT MRI-PET; do
        edgefusion evaluate --task $task --data ../shared/data/harvard --every 4 --cache out/cache \\
            --methods salient-activity sfnn-guarded local-activity sfnn sfnn-compensated \\
                      pixel-average pixel-max laplacian-pyramid dwt guided-filter \\
            --examples 0 --out out/evaluate-$task
    done
    python docs/make_results.py out   # writes docs/results.md and docs/results-<task>.png

Each task's section holds the 13-metric table, the salient-structure table and the
leave-one-case-out table that chose the default (``EdgeFusionLib.evaluation.selection``).

``--examples 0``: the figures hold bar charts only; atlas images must not enter the repository.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from EdgeFusionLib.evaluation import selection  # noqa: E402
from EdgeFusionLib.evaluation.metrics import mean_rank  # noqa: E402
from EdgeFusionLib.fusion.baselines import PIXEL_METHODS  # noqa: E402

TASKS = ("MRI-CT", "MRI-SPECT", "MRI-PET")


def one_against_baselines(results: dict) -> str:
    """Markdown table: each network method ranked alone against the classical baselines.

    An external comparison puts one EdgeFusion configuration among other methods; ranking all our
    rules together splits the places among them, so each is also ranked with the baselines only.
    """
    means = {method: results["summary"][method]["mean"] for method in results["methods"]}
    baselines = [method for method in results["methods"] if method in PIXEL_METHODS]
    lines = [
        "| method | mean rank among it and the baselines | pixel-max's mean rank | metrics better than pixel-max | PSNR (dB) |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = []
    for method in results["methods"]:
        if method in PIXEL_METHODS:
            continue
        ranks = mean_rank({name: means[name] for name in [method, *baselines]})
        wins = sum(means[method][name] > means["pixel-max"][name] for name in results["metrics"])
        rows.append((ranks[method], f"| `{method}` | {ranks[method]:.2f} | {ranks['pixel-max']:.2f} | "
                                    f"{wins} of {len(results['metrics'])} | {means[method]['psnr']:.2f} |"))
    return "\n".join(lines + [row for _, row in sorted(rows)])


def summary_row(task: str, results: dict) -> str:
    """One row of the summary table: the default's ranks, salient losses and cross-validated rank."""
    from EdgeFusionLib.fusion.methods import DEFAULT_METHOD

    default = DEFAULT_METHOD[task]
    summary = results["summary"]
    means = {method: summary[method]["mean"] for method in results["methods"]}
    baselines = [method for method in results["methods"] if method in PIXEL_METHODS]
    place = sorted(results["methods"], key=lambda m: summary[m]["mean_rank"]).index(default) + 1
    alone = mean_rank({name: means[name] for name in [default, *baselines]})
    best = min(baselines, key=alone.get)
    wins = sum(means[default][name] > means[best][name] for name in results["metrics"])
    cv = selection.leave_one_case_out(results["per_pair"], results["metrics"])
    held = cv["summary"][default]
    mean = means[default]
    return (f"| {task} | `{default}` | {summary[default]['mean_rank']:.2f} ({place} of {len(results['methods'])}) | "
            f"{alone[default]:.2f}; best baseline `{best}` {alone[best]:.2f} ({wins} of 13 metrics higher than it) | "
            f"{held['mean']:.2f} ({held['min']:.2f}–{held['max']:.2f}), `{cv['default']}` | "
            f"{100 * mean['salient_loss_mri']:.2f} % / {100 * mean['salient_loss_other']:.2f} % "
            f"(worst pair {100 * mean['salient_loss_mri_max']:.1f} / {100 * mean['salient_loss_other_max']:.1f} %) | "
            f"{mean['isolated_pixels']:.2f} (max {mean['isolated_pixels_max']:.0f}) | {mean['psnr']:.2f} / {mean['ssim']:.3f} |")


def summary_table(all_results: dict[str, dict]) -> str:
    header = ("| task | default | mean rank among all methods (place) | mean rank against the 5 classical baselines | "
              "held-out mean rank, leave one case out (min–max); CV's choice | salient loss MRI / other | "
              "isolated pixels per pair | PSNR / SSIM |\n|---|---|---:|---:|---:|---:|---:|---:|")
    return header + "\n" + "\n".join(summary_row(task, results) for task, results in all_results.items())


def main(reports: Path) -> int:
    intro = (DOCS / "results_intro.md").read_text(encoding="utf-8")
    all_results = {task: json.loads((reports / f"evaluate-{task}" / "results.json").read_text(encoding="utf-8"))
                   for task in TASKS if (reports / f"evaluate-{task}" / "results.json").is_file()}
    if len(all_results) == len(TASKS):
        intro = intro.replace("<!-- summary table -->", summary_table(all_results))
    sections = [intro.rstrip() + "\n"]
    for task in TASKS:
        folder = reports / f"evaluate-{task}"
        if not (folder / "results.md").is_file():
            print(f"missing {folder / 'results.md'}", file=sys.stderr)
            return 1
        text = (folder / "results.md").read_text(encoding="utf-8")
        body = text.split("\n", 1)[1]  # drop the report's own title
        body = body.replace("](figure.png)", f"](results-{task.lower()}.png)")
        body = body.split("\n## Metrics", 1)[0]  # the metric definitions are given once, in the intro
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        alone = ("Each network method ranked alone against the classical baselines (as one configuration "
                 "would be in an outside comparison):\n\n" + one_against_baselines(results))
        cross_validation = selection.markdown(selection.leave_one_case_out(results["per_pair"], results["metrics"]), task)
        sections.append(f"## {task}\n{body.rstrip()}\n\n{alone}\n\n### Choosing the default: leave one case out\n\n"
                        f"{cross_validation}\n")
        shutil.copyfile(folder / "figure.png", DOCS / f"results-{task.lower()}.png")
    (DOCS / "results.md").write_text("\n".join(sections), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "out")))
