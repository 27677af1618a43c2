"""Running a fusion job in a separate Python process, so the application never freezes.

The GUI starts a :class:`BackgroundFusion` and calls :meth:`BackgroundFusion.poll`
from a timer; between polls the event loop runs, the progress bar moves and the
Cancel button works, however long the fusion takes. (Running the network in the
application's own thread would block the event loop for a whole batch of slices,
and torch work cannot be interrupted half-way.) The process is
:mod:`EdgeFusionMRML.worker`; files in a temporary job folder carry the images in
and out, its stdout carries progress.

Nothing here touches the scene: the caller turns the result into a volume node
with ``VolumeFusionLogic.finish``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from . import environment, worker

WORKER_SCRIPT = Path(worker.__file__).resolve()

#: A cancelled worker stops at its next batch; one that has not stopped after this long is killed.
CANCEL_GRACE_SECONDS = 15.0


@dataclasses.dataclass
class FusionStatus:
    """What :meth:`BackgroundFusion.poll` reports."""

    state: str = "starting"  # "starting" | "running" | "finished" | "failed" | "cancelled"
    slices_done: int = 0  # progress steps (alignment, then slices) done, of slices_total
    slices_total: int = 0
    registration: str = ""  # summary line of the alignment, once it is done
    device: str = ""  # e.g. "cuda"
    device_name: str = ""  # e.g. "NVIDIA RTX A4000"
    seconds: float = 0.0  # fusion time reported by the worker
    message: str = ""  # why it failed (one line, for the user)

    @property
    def is_over(self) -> bool:
        return self.state in ("finished", "failed", "cancelled")


def default_launch(command: list[str]) -> subprocess.Popen:
    """Start the worker with its output piped to us (line-buffered text)."""
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",  # a stray byte in a library's message must not stop the reader
        bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"},
    )


def kill_process_tree(process: subprocess.Popen) -> None:
    """Kill a process and every process it started, at once.

    Slicer starts the worker through ``PythonSlicer``, a launcher whose child is the real Python:
    killing the launcher alone would leave the worker running (and holding the GPU).
    """
    import psutil

    if process.poll() is not None:  # ended and reaped: its pid may already belong to another process
        return
    try:
        root = psutil.Process(process.pid)
        family = [root, *root.children(recursive=True)]  # before any kill: orphans are re-parented
    except psutil.NoSuchProcess:
        return
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=5)


class BackgroundFusion:
    """One fusion job in a worker process: start, poll, cancel, result.

    :param job: a ``FusionJob`` from ``VolumeFusionLogic.prepare``.
    :param python_executable: the Python that runs the worker (Slicer: ``PythonSlicer``).
    :param launch: starts a command and returns a ``subprocess.Popen`` with text stdout;
        inside Slicer ``slicer.util.launchConsoleProcess``, which sets up Slicer's environment.
    :param work_folder: where the temporary job folder is created (default: the system's).
    :param log: receives every line the worker prints that is not a progress message.
    """

    def __init__(self, job, python_executable: str | None = None, launch: Callable | None = None,
                 work_folder: str | Path | None = None, log: Callable[[str], None] | None = None):
        self.job = job
        self.python_executable = python_executable or sys.executable
        self.launch = launch or default_launch
        self.work_folder = work_folder
        self.log = log or (lambda line: None)
        self.job_folder: Path | None = None
        self.status = FusionStatus()
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._cancel_requested_at: float | None = None

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        """Write the job's inputs to a temporary folder and start the worker process.

        If that fails (disk full, no interpreter), nothing is left behind and the error is raised.
        """
        self.job_folder = Path(tempfile.mkdtemp(prefix="EdgeFusion-", dir=self.work_folder))
        try:
            self._write_job_and_launch()
        except BaseException:
            self.close()
            raise
        self.status.state = "running"

    def _write_job_and_launch(self) -> None:
        import SimpleITK as sitk

        job = self.job
        sitk.WriteImage(job.mri_image, str(self.job_folder / "mri.nrrd"), useCompression=False)
        sitk.WriteImage(job.other_image, str(self.job_folder / "other.nrrd"), useCompression=False)
        parameters = {
            "library_path": environment.library_search_path(),
            "modality": job.modality,
            "options": job.options.to_json(),
        }
        (self.job_folder / "job.json").write_text(json.dumps(parameters), encoding="utf-8")
        self._process = self.launch([self.python_executable, str(WORKER_SCRIPT), str(self.job_folder)])
        self._reader = threading.Thread(target=self._read_output, name="EdgeFusion worker output", daemon=True)
        self._reader.start()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested_at is not None

    def cancel(self) -> None:
        """Ask the worker to stop at its next batch of slices (it is killed if it does not)."""
        # Only the first request counts: asking again must not postpone the kill of a stuck worker.
        if self.job_folder is not None and not self.status.is_over and not self.cancel_requested:
            (self.job_folder / "cancel").touch()
            self._cancel_requested_at = time.monotonic()

    def poll(self) -> FusionStatus:
        """Take in the worker's new output and return the current status (never blocks long)."""
        self._take_new_lines()
        if self._process is None or self.status.is_over:
            return self.status
        if self._cancel_requested_at is not None and time.monotonic() - self._cancel_requested_at > CANCEL_GRACE_SECONDS:
            kill_process_tree(self._process)
        return_code = self._process.poll()
        if return_code is not None:
            # The pipe closes when the process ends; wait briefly for the last lines.
            self._reader.join(timeout=1.0)
            self._take_new_lines()
            if not self._reader.is_alive() or self._cancel_requested_at is not None:
                self._handle_exit(return_code)
        return self.status

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> FusionStatus:
        """Poll until the job is over (for scripts and tests; the GUI polls from a timer instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll().is_over:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"fusion still running after {timeout} s")
            time.sleep(interval)
        return self.status

    def result(self):
        """The ``FusionResult`` of a finished job: the fused image, and the alignment if there was one."""
        import SimpleITK as sitk

        from EdgeFusionLib.registration import read_transform

        from .logic import FusionResult

        if self.status.state != "finished":
            raise RuntimeError(f"no result: the fusion is {self.status.state}")
        fused = sitk.ReadImage(str(self.job_folder / "fused.nrrd"))
        if not (self.job_folder / "registration.tfm").exists():
            return FusionResult(fused)
        # The summary came with the worker's "registered" line (poll takes every line before the exit).
        return FusionResult(fused, read_transform(self.job_folder / "registration.tfm"), self.status.registration)

    def close(self) -> None:
        """Stop the worker if it still runs and delete the job folder."""
        if self._process is not None and self._process.poll() is None:
            kill_process_tree(self._process)
            self._process.wait()
        if self.job_folder is not None:
            shutil.rmtree(self.job_folder, ignore_errors=True)

    # ---------------------------------------------------------------- internals

    def _take_new_lines(self) -> None:
        while True:
            try:
                self._handle_line(self._lines.get_nowait())
            except queue.Empty:
                return

    def _read_output(self) -> None:
        # In a thread, because reading a pipe blocks; poll() takes the lines from the queue.
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))

    def _handle_line(self, line: str) -> None:
        words = line.split()
        if len(words) < 2 or words[0] != worker.MESSAGE_PREFIX:
            self.log(line)
            return
        kind, values = words[1], words[2:]
        if kind == "progress":
            self.status.slices_done, self.status.slices_total = int(values[0]), int(values[1])
        elif kind == "registered":
            summary = json.loads((self.job_folder / "registration.json").read_text(encoding="utf-8"))["summary"]
            self.status.registration = summary
        elif kind == "device":
            self.status.device, self.status.device_name = values[0], " ".join(values[1:])
        elif kind == "done":
            self.status.seconds = float(values[0])

    def _handle_exit(self, return_code: int) -> None:
        error_file = self.job_folder / "error.json"
        error = json.loads(error_file.read_text(encoding="utf-8")) if error_file.exists() else None
        # A cancel counts even when the worker finished first: the user no longer wants this result.
        if self.cancel_requested or (error and error["kind"] == "cancelled"):
            self.status.state = "cancelled"
            self.status.message = "Fusion cancelled."
        elif return_code == 0 and (self.job_folder / "fused.nrrd").exists():
            self.status.state = "finished"
        else:
            self.status.state = "failed"
            self.status.message = error["message"] if error else f"The fusion process stopped unexpectedly (exit code {return_code}); see the log."
