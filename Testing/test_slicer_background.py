"""Fusion in a separate process (what the panel does so that Slicer never freezes).

The worker is started with this interpreter, as the panel starts it with
``PythonSlicer``; the Qt timer that polls it in Slicer is replaced by ``wait``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="Slicer's MRML libraries (pip install slicer-core) are not installed")

from edgefusion_slicer_support import app, logic  # noqa: E402,F401  (pytest fixtures)

from EdgeFusionMRML import background, sampledata  # noqa: E402
from EdgeFusionMRML.background import BackgroundFusion  # noqa: E402

WORKER_TIMEOUT = 180  # seconds; starting Python and importing torch dominates


@pytest.fixture
def phantom(app, logic):
    mri = sampledata.load_sample_volume("EdgeFusionPhantom-MRI", app.volumes_logic)
    spect = sampledata.load_sample_volume("EdgeFusionPhantom-SPECT", app.volumes_logic)
    return logic, mri, spect


def run_in_background(job, tmp_path, cancel_at_start=False):
    logged = []
    run = BackgroundFusion(job, work_folder=tmp_path, log=logged.append)
    run.start()
    if cancel_at_start:
        run.cancel()
    status = run.wait(timeout=WORKER_TIMEOUT)
    return run, status, logged


def test_background_process_gives_the_in_process_result(app, phantom, tmp_path):
    logic, mri, spect = phantom
    job = logic.prepare(mri, spect, "spect", method="pixel-average", colour_node=app.colour_node("PET-Heat"))
    ids_while_running = app.node_ids()

    run, status, logged = run_in_background(job, tmp_path)
    try:
        assert status.state == "finished", (status.message, logged)
        assert (status.slices_done, status.slices_total) == (24, 24)
        assert status.device == "cpu" and status.device_name and status.seconds > 0
        assert app.node_ids() == ids_while_running, "the worker must not touch the scene"
        fused = logic.finish(job, run.result(), {"Device": status.device})
    finally:
        run.close()
    assert not run.job_folder.exists()

    in_process = logic.fuse(mri, spect, "spect", method="pixel-average", colour_node=app.colour_node("PET-Heat"))
    assert fused.GetClassName() == in_process.GetClassName() == "vtkMRMLVectorVolumeNode"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(fused), slicer.util.arrayFromVolume(in_process))
    assert fused.GetAttribute("EdgeFusion.Device") == "cpu"


def test_cancelled_background_run_ends_without_a_result(app, phantom, tmp_path):
    logic, mri, spect = phantom
    job = logic.prepare(mri, spect, "spect", method="pixel-average")
    ids_before = app.node_ids()

    run, status, _ = run_in_background(job, tmp_path, cancel_at_start=True)
    try:
        assert status.state == "cancelled"
        assert status.slices_done < status.slices_total or status.slices_total == 0
        with pytest.raises(RuntimeError, match="cancelled"):
            run.result()
    finally:
        run.close()
    assert app.node_ids() == ids_before


def test_a_cancel_after_the_worker_finished_still_discards_its_result(app, phantom, tmp_path):
    """Cancel pressed (or the scene closed) while the finished worker's exit was not yet seen."""
    logic, mri, spect = phantom
    run = BackgroundFusion(logic.prepare(mri, spect, "spect", method="pixel-average"), work_folder=tmp_path)
    run.start()
    try:
        run._process.wait(timeout=WORKER_TIMEOUT)
        assert (run.job_folder / "fused.nrrd").exists()  # the worker did finish
        run.cancel()
        status = run.wait(timeout=10)
        assert status.state == "cancelled"
        with pytest.raises(RuntimeError, match="cancelled"):
            run.result()
    finally:
        run.close()


def test_errors_in_the_worker_reach_the_user_as_one_line(app, phantom, tmp_path, monkeypatch):
    logic, mri, spect = phantom
    job = logic.prepare(mri, spect, "spect", method="sfnn")
    empty_models = tmp_path / "no-models"
    empty_models.mkdir()
    monkeypatch.setenv("EDGEFUSION_MODELS_DIR", str(empty_models))  # the worker finds no weights

    run, status, _ = run_in_background(job, tmp_path)
    run.close()

    assert status.state == "failed"
    assert "no weights for task MRI-SPECT" in status.message
    assert "\n" not in status.message


def test_an_unknown_method_is_refused_before_a_worker_starts(phantom):
    from EdgeFusionLib.errors import InputError

    logic, mri, spect = phantom
    with pytest.raises(InputError, match="^Unknown fusion method 'no-such-rule'.*[.]$"):
        logic.prepare(mri, spect, "spect", method="no-such-rule")


def test_cancelling_again_does_not_postpone_killing_a_stuck_worker(phantom, tmp_path, monkeypatch):
    logic, mri, spect = phantom
    grace = 4.0
    monkeypatch.setattr(background, "CANCEL_GRACE_SECONDS", grace)

    def launch_stuck_worker(command):  # never looks at the cancel file
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True)

    run = BackgroundFusion(logic.prepare(mri, spect, "spect", method="pixel-average"), work_folder=tmp_path, launch=launch_stuck_worker)
    run.start()
    try:
        run.cancel()
        assert run.cancel_requested
        time.sleep(0.75 * grace)
        run.cancel()  # e.g. the Cancel button pressed again
        time.sleep(0.35 * grace)
        # Past the first request's deadline, well before a deadline counted from the second one.
        status = run.wait(timeout=0.4 * grace)
    finally:
        run.close()
    assert status.state == "cancelled"


def test_a_worker_that_cannot_start_leaves_no_job_folder(phantom, tmp_path):
    logic, mri, spect = phantom

    def launch_without_interpreter(command):
        raise FileNotFoundError("PythonSlicer")

    run = BackgroundFusion(logic.prepare(mri, spect, "spect", method="pixel-average"), work_folder=tmp_path,
                           launch=launch_without_interpreter)
    with pytest.raises(FileNotFoundError):
        run.start()
    assert list(tmp_path.iterdir()) == []


def test_a_stuck_worker_behind_a_launcher_is_killed_with_the_launcher(phantom, tmp_path, monkeypatch):
    """Slicer starts ``PythonSlicer``, a launcher whose child is the real Python: cancel must stop both."""
    import psutil

    logic, mri, spect = phantom
    monkeypatch.setattr(background, "CANCEL_GRACE_SECONDS", 1.0)
    pid_file = tmp_path / "worker.pid"
    stuck_worker = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    launcher = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"

    def launch_through_a_launcher(command):  # ignores the real worker command: this one never looks at "cancel"
        return subprocess.Popen([sys.executable, "-c", launcher, sys.executable, "-c", stuck_worker, str(pid_file)],
                                stdout=subprocess.PIPE, text=True)

    run = BackgroundFusion(logic.prepare(mri, spect, "spect", method="pixel-average"), work_folder=tmp_path / "jobs",
                           launch=launch_through_a_launcher)
    (tmp_path / "jobs").mkdir()
    run.start()
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker behind the launcher did not start"
            time.sleep(0.05)
        worker = psutil.Process(int(pid_file.read_text()))
        assert worker.ppid() == run._process.pid  # really a grandchild, behind the launcher
        run.cancel()
        status = run.wait(timeout=30)
    finally:
        run.close()
    assert status.state == "cancelled"
    worker_gone = not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert worker_gone, "the real worker outlived its launcher"
    assert list((tmp_path / "jobs").iterdir()) == []
