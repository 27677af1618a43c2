"""Runs one fusion job in a separate Python process (started by :mod:`EdgeFusionMRML.background`).

Usage: ``python worker.py JOB_FOLDER``. The folder holds ``job.json`` (parameters),
``mri.nrrd`` and ``other.nrrd`` (already in the MRI's frame) and, for scalar
SPECT/PET, ``colour_table.npy``. The worker writes ``fused.nrrd`` on success or
``error.json`` (``{"kind": "input" | "cancelled" | "internal", "message": ...}``)
otherwise, and reports on stdout, one message per line::

    EDGEFUSION device <device> <device name>
    EDGEFUSION progress <slices done> <slices in total>
    EDGEFUSION done <seconds>

Cancelling: the parent creates the file ``cancel`` in the job folder; the worker
notices it between batches of slices and stops without writing a result.

Only EdgeFusionLib, SimpleITK and numpy are used here (no Slicer, no Qt), so the
process can be Slicer's own ``PythonSlicer`` or any Python with EdgeFusionLib's
dependencies.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

MESSAGE_PREFIX = "EDGEFUSION"
EXIT_INPUT_ERROR = 3
EXIT_CANCELLED = 4
EXIT_INTERNAL_ERROR = 1


def report(*words) -> None:
    print(MESSAGE_PREFIX, *words, flush=True)


def write_error(job_folder: Path, kind: str, message: str) -> None:
    (job_folder / "error.json").write_text(json.dumps({"kind": kind, "message": message}), encoding="utf-8")


def device_description(device: str) -> tuple[str, str]:
    """(resolved device, human-readable name) for the status line."""
    from EdgeFusionLib.fusion.engine import available_devices, resolve_device

    resolved = resolve_device(device)
    for entry in available_devices():  # "cuda:0", "cuda:1", ...: torch uses the first
        if entry["device"].split(":")[0] == resolved:
            return resolved, entry["name"]
    return resolved, resolved


def run(job_folder: Path) -> int:
    parameters = json.loads((job_folder / "job.json").read_text(encoding="utf-8"))
    sys.path.insert(0, parameters["library_path"])

    import numpy as np
    import SimpleITK as sitk

    from EdgeFusionLib.errors import FusionCancelled, InputError
    from EdgeFusionLib.fusion.pipeline import fuse_images

    cancel_file = job_folder / "cancel"
    start = time.perf_counter()
    try:
        device, device_name = device_description(parameters["device"])
        report("device", device, device_name)
        colour_table_file = job_folder / "colour_table.npy"
        colour_range = parameters.get("colour_range")
        fused = fuse_images(
            sitk.ReadImage(str(job_folder / "mri.nrrd")),
            sitk.ReadImage(str(job_folder / "other.nrrd")),
            parameters["modality"],
            method=parameters.get("method"),
            axis=parameters.get("axis"),
            device=device,
            batch_size=parameters["batch_size"],
            colour_table=np.load(colour_table_file) if colour_table_file.exists() else None,
            colour_range=tuple(colour_range) if colour_range else None,
            progress=lambda done, total: report("progress", done, total),
            cancel=cancel_file.exists,
        )
        # Written under a temporary name and renamed, so the parent never reads half a file.
        partial = job_folder / "fused.partial.nrrd"
        sitk.WriteImage(fused, str(partial), useCompression=False)
        partial.replace(job_folder / "fused.nrrd")
    except FusionCancelled:
        write_error(job_folder, "cancelled", "Fusion cancelled.")
        return EXIT_CANCELLED
    except InputError as error:
        write_error(job_folder, "input", str(error))
        return EXIT_INPUT_ERROR
    except Exception as error:  # reported to the user; the traceback goes to Slicer's log
        traceback.print_exc(file=sys.stdout)
        write_error(job_folder, "internal", f"{type(error).__name__}: {error}")
        return EXIT_INTERNAL_ERROR
    report("done", f"{time.perf_counter() - start:.2f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {Path(sys.argv[0]).name} JOB_FOLDER")
    sys.exit(run(Path(sys.argv[1])))
