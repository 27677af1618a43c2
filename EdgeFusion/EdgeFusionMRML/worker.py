"""Runs one fusion job in a separate Python process (started by :mod:`EdgeFusionMRML.background`).

Usage: ``python worker.py JOB_FOLDER``. The folder holds ``job.json`` (the modality and
``FusionOptions.to_json()``, colour table and registration included), and ``mri.nrrd`` and
``other.nrrd`` (already in the MRI's frame). The worker writes ``fused.nrrd`` on success, after an
alignment also ``registration.tfm`` (ITK) and ``registration.json`` (its summary), or
``error.json`` (``{"kind": "input" | "cancelled" | "internal", "message": ...}``)
otherwise, and reports on stdout, one message per line::

    EDGEFUSION device <device> <device name>
    EDGEFUSION progress <steps done> <steps in total>
    EDGEFUSION registered             (the summary is in registration.json)
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



def run(job_folder: Path) -> int:
    parameters = json.loads((job_folder / "job.json").read_text(encoding="utf-8"))
    sys.path.insert(0, parameters["library_path"])

    import SimpleITK as sitk

    from EdgeFusionLib.devices import device_name, resolve_device
    from EdgeFusionLib.errors import FusionCancelled, InputError
    from EdgeFusionLib.fusion.options import FusionOptions
    from EdgeFusionLib.fusion.pipeline import fuse_images
    from EdgeFusionLib.io.files import atomic_path, write_json_atomic
    from EdgeFusionLib.registration import write_transform

    cancel_file = job_folder / "cancel"
    start = time.perf_counter()

    def registered(registration) -> None:
        if registration is None:  # the job did not ask for an alignment
            return
        write_transform(registration, job_folder / "registration.tfm")
        write_json_atomic(job_folder / "registration.json", {"summary": registration.summary(), **registration.to_json()})
        # The summary (with its degree sign) is read from the UTF-8 file: the pipe's encoding is the launcher's.
        report("registered")

    try:
        options = FusionOptions.from_json(parameters["options"])
        device = resolve_device(options.device)
        report("device", device, device_name(device))
        fused = fuse_images(
            sitk.ReadImage(str(job_folder / "mri.nrrd")),
            sitk.ReadImage(str(job_folder / "other.nrrd")),
            parameters["modality"],
            **options.arguments(),
            progress=lambda done, total: report("progress", done, total),
            cancel=cancel_file.exists,
            registered=registered,
        )
        # The parent never reads half a file.
        with atomic_path(job_folder / "fused.nrrd") as temporary:
            sitk.WriteImage(fused, str(temporary), useCompression=False)
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
