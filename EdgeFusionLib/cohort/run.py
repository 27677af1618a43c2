"""Fusing a checked cohort in this process or on a Dask cluster, and reporting on every row.

Every row ends with one status (``pair.DONE``, ``SKIPPED``, ``INVALID``, ``FAILED``, ``ERROR`` or
``NOT_RUN`` when interrupted) in ``OUT_DIR/summary.csv``, written even when the run is interrupted.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..io.files import partial_files_of, write_bytes_atomic
from ..io.images import check_output_folder
from .pair import DONE, ERROR, FAILED, INVALID, NOT_RUN, SKIPPED, SUCCEEDED, fuse_pair
from .rows import Cohort, CohortRow
from .sidecar import sidecar_path

SUMMARY_NAME = "summary.csv"
SUMMARY_COLUMNS = ("line", "mri", "other", "modality", "output", "status", "seconds", "device", "reason")


@dataclasses.dataclass(frozen=True)
class CohortReport:
    """Every row of a cohort with its outcome, in file order (``entries``: dicts of SUMMARY_COLUMNS)."""

    entries: list[dict]
    summary_path: Path

    @property
    def counts(self) -> Counter:
        return Counter(entry["status"] for entry in self.entries)

    @property
    def succeeded(self) -> bool:
        """True when every row was fused now or was already up to date."""
        return all(entry["status"] in SUCCEEDED for entry in self.entries)

    def text(self) -> str:
        """A few lines for people: the counts, then each row that did not succeed with its reason."""
        counts = self.counts
        order = (DONE, SKIPPED, INVALID, FAILED, ERROR, NOT_RUN)
        lines = [f"{len(self.entries)} pair(s): " + ", ".join(f"{counts[status]} {status}" for status in order
                                                             if counts[status])]
        lines += [f"  line {entry['line']}: {entry['status']}: {entry['reason']}" for entry in self.entries
                  if entry["status"] not in SUCCEEDED]
        lines.append(f"summary: {self.summary_path}")
        return "\n".join(lines)


def run_cohort(cohort: Cohort, *, scheduler: str | None = None, workers: int | None = None,
               torch_threads: int | None = None, progress: Callable[[int, int], None] | None = None) -> CohortReport:
    """Fuse every valid row of ``cohort`` and write ``summary.csv`` into its output folder.

    ``scheduler`` ('tcp://HOST:PORT'): on that Dask cluster; ``workers``: on a new local cluster of
    that many processes; neither: one row after the other in this process. ``torch_threads``: per
    worker (default: cores / workers locally, the workers' own setting on a cluster: 1 for Dask's workers).
    ``progress(done, total)`` counts rows. Rows whose output is up to date are not fused again.
    """
    if scheduler is not None and workers is not None:
        raise InputError("give --scheduler (an existing cluster) or --workers (a local one), not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"--workers must be a positive integer, got {workers!r}")
    if torch_threads is not None and torch_threads < 1:
        raise InputError(f"--threads must be a positive integer, got {torch_threads!r}")
    check_output_folder(cohort.out_dir, "--out-dir")
    cohort.out_dir.mkdir(parents=True, exist_ok=True)
    results = {problem.line: {"line": problem.line, "status": INVALID, "reason": problem.reason, "seconds": 0.0,
                              "device": ""} for problem in cohort.problems}

    def record(result: dict) -> None:
        results[result["line"]] = result
        if progress is not None:
            progress(len(results), cohort.size)

    if progress is not None and results:
        progress(len(results), cohort.size)
    try:
        if not cohort.rows:
            pass
        elif scheduler is None and workers is None:
            for row in cohort.rows:
                record(fuse_pair(row.to_json()))
        else:
            from .cluster import dask_client, run_on_dask  # Dask only for clusters

            with dask_client(scheduler, workers, torch_threads) as client:
                run_on_dask(client, cohort.rows, record)
    finally:
        _remove_partial_files(cohort.rows)  # of workers killed while writing, whose pair was not retried
        report = CohortReport(_entries(cohort, results), cohort.out_dir / SUMMARY_NAME)
        write_summary(report)
    return report


def _remove_partial_files(rows: list[CohortRow]) -> None:
    for row in rows:
        for leftover in partial_files_of(row.output) + partial_files_of(sidecar_path(row.output)):
            leftover.unlink(missing_ok=True)


def _entries(cohort: Cohort, results: dict[int, dict]) -> list[dict]:
    entries = []
    for row in cohort.rows:
        written = {"mri": str(row.mri), "other": str(row.other), "modality": row.modality, "output": str(row.output)}
        entries.append(_entry(row.line, written, results))
    for problem in cohort.problems:
        entries.append(_entry(problem.line, problem.values, results))
    return sorted(entries, key=lambda entry: entry["line"])


def _entry(line: int, values: dict, results: dict[int, dict]) -> dict:
    result = results.get(line, {"status": NOT_RUN, "reason": "the run was interrupted", "seconds": 0.0, "device": ""})
    entry = {column: values.get(column, "") for column in ("mri", "other", "modality", "output")}
    entry.update(line=line, status=result["status"], reason=result["reason"], seconds=result["seconds"],
                 device=result["device"])
    return entry


def write_summary(report: CohortReport) -> None:
    """``summary.csv``: one line per row of the cohort file, columns SUMMARY_COLUMNS."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.entries)
    write_bytes_atomic(report.summary_path, text.getvalue().encode("utf-8"))
