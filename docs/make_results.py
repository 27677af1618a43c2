"""Assemble docs/results.md from the reports of ``edgefusion evaluate`` on the validation cases.

    for task in MRI-CT MRI-SPECT MRI-PET; do
        edgefusion evaluate --task $task --data ../shared/data/harvard --validation-cases \\
            --methods sfnn sfnn-compensated local-activity average max energy-ratio l1-weighting \\
                      pixel-average pixel-max laplacian-pyramid dwt guided-filter \\
            --examples 0 --out out/evaluate-$task
    done
    python docs/make_results.py out   # writes docs/results.md and docs/results-<task>.png

``--examples 0``: the figures hold bar charts only; atlas images must not enter the repository.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
TASKS = ("MRI-CT", "MRI-SPECT", "MRI-PET")


def main(reports: Path) -> int:
    intro = (DOCS / "results_intro.md").read_text(encoding="utf-8")
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
        sections.append(f"## {task}\n{body.rstrip()}\n")
        shutil.copyfile(folder / "figure.png", DOCS / f"results-{task.lower()}.png")
    (DOCS / "results.md").write_text("\n".join(sections), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "out")))
