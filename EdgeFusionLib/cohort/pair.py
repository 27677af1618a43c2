"""Fusing one cohort row where it runs: in the command's own process or on a cluster worker.

:func:`fuse_pair` reads the two inputs itself and writes the output and its sidecar itself (no
volume travels to or from the client), keeps its engines (weights loaded and folded once per
task, method and device) for the next pairs of the same process, and is idempotent: a pair whose
output is already up to date is not fused again, so a retry after a worker died just after
writing finds the work done.
"""

from __future__ import annotations

import functools
import time

from ..errors import InputError
from ..io.files import partial_files_of
from .rows import CohortRow
from .sidecar import fingerprint, is_up_to_date, sidecar_path, write_sidecar

#: Outcomes of a row, in the order the summary counts them.
DONE, SKIPPED, INVALID, FAILED, ERROR, NOT_RUN = "done", "up to date", "invalid", "failed", "error", "not run"
#: The outcomes that count as success for the exit status.
SUCCEEDED = (DONE, SKIPPED)

#: The GPU a cluster worker was given (``cluster.EngineWorker``); None: as the row asks.
_assigned_device: str | None = None


def assign_device(device: str | None) -> None:
    """Make 'auto' and 'cuda' rows of this process run on ``device`` (one GPU per worker)."""
    global _assigned_device
    _assigned_device = device


def fuse_pair(row_json: dict) -> dict:
    """Fuse one row (``CohortRow.to_json()``) unless its output is up to date; returns a result dict.

    A problem of the row's own (unreadable file, constant image, missing weights, a volume for a
    .png output, a file that cannot be read or written) is a FAILED result with its reason; other
    exceptions propagate.
    Keys: line, status, reason, seconds, device.
    """
    row = CohortRow.from_json(row_json)
    started = time.perf_counter()
    device = ""
    try:
        task, method = _task_and_method(row)
        weights_sha256 = _weights_sha256(task) if method.needs_model else None
        engine = _engine(task, method.name, _device_for(row.options.device), row.options.batch_size, weights_sha256)
        device = engine.device
        expected = fingerprint(row, method.name, weights_sha256, engine.device)
        if is_up_to_date(row.output, expected):
            return _result(row, SKIPPED, started, device)
        fused, registration = _fuse(row, engine)
        _write(row, fused, registration, expected, engine.device, started)
    except InputError as error:
        return _result(row, FAILED, started, device, str(error))
    except OSError as error:  # e.g. an input deleted since the rows were checked, an output folder gone read-only
        return _result(row, FAILED, started, device, f"{error.strerror or error}: {error.filename}")
    return _result(row, DONE, started, device)


def _result(row: CohortRow, status: str, started: float, device: str, reason: str = "") -> dict:
    return {"line": row.line, "status": status, "reason": reason,
            "seconds": round(time.perf_counter() - started, 3), "device": device}


def _device_for(requested: str) -> str:
    return _assigned_device if _assigned_device is not None and requested in ("auto", "cuda") else requested


def _task_and_method(row: CohortRow):
    """The row's task ('MRI-CT') and its method, the task's default when the row names none."""
    from ..fusion.methods import DEFAULT_METHOD, get_method
    from ..modality import check_modality

    task = check_modality(row.modality).task
    return task, get_method(row.options.method or DEFAULT_METHOD[task])


def _weights_sha256(task: str) -> str | None:
    """The manifest's sha256 of ``task``'s weights, None when there are none (the engine then says so)."""
    from ..model.weights import read_manifest

    entry = read_manifest()["models"].get(task)
    return entry["sha256"] if entry is not None else None


@functools.lru_cache(maxsize=8)
def _engine(task: str, method: str, device: str, batch_size: int | None, weights_sha256: str | None):
    """One engine per (task, method, device, batch size, weights) and process, kept for the next pairs.

    The weights' sha256 is part of the key so that a process never fuses with weights other than
    those its sidecars record (the models folder may change while a worker lives).
    """
    from ..fusion.engine import FusionEngine

    return FusionEngine(method, task, device, batch_size)


def _fuse(row: CohortRow, engine):
    """(the fused image, the Registration or None), as ``edgefusion fuse`` makes them for the same pair and options."""
    from ..fusion.pipeline import align_to_mri, fuse_prepared, prepare_inputs
    from ..io.images import check_output_format, read_image
    from ..modality import check_modality

    arguments = row.options.arguments()
    for chosen_by_the_engine_or_here in ("method", "device", "batch_size", "registration"):
        del arguments[chosen_by_the_engine_or_here]
    mri = read_image(row.mri, "MRI")
    check_output_format(row.output, mri)  # a volume cannot become a PNG: say so before the work
    other = read_image(row.other, check_modality(row.modality).label)
    other, registration, _ = align_to_mri(mri, other, row.modality, row.options.registration)
    mri, other = prepare_inputs(mri, other, row.modality, arguments["colour_table"])
    return fuse_prepared(mri, other, row.modality, engine, **arguments), registration


def _write(row: CohortRow, fused, registration, expected: dict, device: str, started: float) -> None:
    """Output (and its transform) first, then its sidecar, each atomically: a sidecar never vouches for a file
    that is not complete."""
    from ..io.images import write_image
    from ..registration import transform_path_for, write_transform

    row.output.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of an attempt whose worker was killed while writing: this task is now the only writer.
    for leftover in partial_files_of(row.output) + partial_files_of(sidecar_path(row.output)):
        leftover.unlink(missing_ok=True)
    write_image(fused, row.output)
    if registration is not None:
        write_transform(registration, transform_path_for(row.output))
    write_sidecar(row.output, row, expected, device, time.perf_counter() - started, registration)
