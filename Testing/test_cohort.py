"""Cohorts (`edgefusion batch --cohort`): rows checked before any work, outputs as `edgefusion fuse` writes them,
in this process and on a real Dask LocalCluster of 2 worker processes, a worker killed mid-pair, resume, bad rows."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from EdgeFusionLib.cli import main
from EdgeFusionLib.cohort import read_cohort, run_cohort
from EdgeFusionLib.cohort.sidecar import input_sha256, sidecar_path
from EdgeFusionLib.errors import InputError
from EdgeFusionLib.fusion.methods import DEFAULT_METHOD, get_method
from EdgeFusionLib.fusion.options import FusionOptions
from EdgeFusionLib.io.files import atomic_path, partial_files_of
from EdgeFusionLib.io.images import full_suffix

from conftest import make_random_model, phantom_slice

distributed = pytest.importorskip("distributed")  # installed by scripts/setup.sh (the [cluster] extra)

HEADER = "mri,other,modality,output,method,register\n"
# The synthetic "patients" below are random phantoms, not one head per modality: their volume rows say
# register none (a cohort row that is aligned: test_a_row_is_aligned_and_its_transform_written).


# ---------------------------------------------------------------- data


def volume(seed: int, shape=(8, 32, 32), scale=500.0, offset=0.0, dtype=np.float32, spacing=(1.0, 1.0, 3.0),
           origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray((np.stack([phantom_slice(*shape[1:], seed + s) for s in range(shape[0])]) * scale
                                    + offset).astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder with seeded random MRI-CT and MRI-PET weights and their manifest, for this process and
    for the cluster workers (which inherit the environment when they start)."""
    from EdgeFusionLib.model.weights import register_weights, save_weights

    folder = tmp_path_factory.mktemp("models")
    for seed, task in enumerate(("MRI-CT", "MRI-PET")):
        path = folder / f"{task.lower()}.safetensors"
        save_weights(make_random_model(seed), path)
        register_weights(task, path, {"data": "seeded random weights (test)"}, folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEFUSION_MODELS_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Patient folders under one root: CT NIfTI on the MRI grid, PET NRRD on its own coarser grid, 2D pictures."""
    root = tmp_path_factory.mktemp("cohort")
    for index in range(3):
        patient = root / f"sub-{index}"
        patient.mkdir()
        sitk.WriteImage(volume(index), str(patient / "T1w.nii.gz"))
        sitk.WriteImage(volume(10 + index, scale=1500, offset=-1000, dtype=np.int16), str(patient / "ct.nii.gz"))
        sitk.WriteImage(volume(20 + index, shape=(6, 24, 24), scale=8000, spacing=(1.4, 1.4, 4.0),
                               origin=(-1.0, -1.0, 0.5)), str(patient / "pet.nrrd"))
    pictures = root / "atlas"
    pictures.mkdir()
    Image.fromarray((phantom_slice(24, 24, 7) * 255).astype(np.uint8)).save(pictures / "mri.png")
    Image.fromarray((phantom_slice(24, 24, 8) ** 2 * 255).astype(np.uint8)).save(pictures / "ct.png")
    return root


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


#: Rows on every kind of input and method (columns of HEADER); their lines are 2, 3, ... in a cohort file.
GOOD_ROWS = [
    "sub-0/T1w.nii.gz,sub-0/ct.nii.gz,ct,,pixel-average,none",
    "sub-1/T1w.nii.gz,sub-1/ct.nii.gz,ct,,,none",  # the task's default (a latent rule): needs the weights
    "sub-2/T1w.nii.gz,sub-2/pet.nrrd,pet,sub-2/pet_fused.nrrd,sfnn-compensated,none",  # resampled onto the MRI grid
    "sub-0/T1w.nii.gz,sub-0/pet.nrrd,PET,sub-0/pet_sfnn.mha,sfnn,none",
    "atlas/mri.png,atlas/ct.png,ct,,guided-filter,",
]


#: Rows with pixel methods only (no weights), for what does not depend on the method.
PIXEL_ROWS = [
    GOOD_ROWS[0],
    GOOD_ROWS[4],
    "sub-1/T1w.nii.gz,sub-1/ct.nii.gz,ct,,pixel-max,none",
    "sub-2/T1w.nii.gz,sub-2/pet.nrrd,pet,,dwt,none",
    "sub-2/T1w.nii.gz,sub-2/ct.nii.gz,ct,b.nrrd,laplacian-pyramid,none",
]


@pytest.fixture(scope="module")
def references(tmp_path_factory, data, models) -> dict[str, bytes]:
    """Row -> the bytes `edgefusion fuse` writes for it in this process (each fused once for the module)."""
    folder = tmp_path_factory.mktemp("references")
    found = {}
    for index, row in enumerate(GOOD_ROWS):
        mri, other, modality, output, method, _ = row.split(",")
        suffix = "".join(Path(output).suffixes) if output else ".png" if mri.endswith(".png") else ".nii.gz"
        out = folder / f"{index}{suffix}"
        argv = ["fuse", str(data / mri), str(data / other), "-o", str(out), "--modality", modality.lower(),
                "--register", "none"]
        assert main(argv + (["--method", method] if method else [])) == 0, row
        found[row] = out.read_bytes()
    return found


def statuses(report) -> dict[int, str]:
    return {entry["line"]: entry["status"] for entry in report.entries}


@pytest.fixture(scope="module")
def cluster(models):
    """A real Dask cluster: 2 worker processes of 1 thread, on the loopback interface."""
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=logging.CRITICAL) as local:
        yield local


# ---------------------------------------------------------------- the cohort file


def test_relative_paths_and_the_default_output_rule(tmp_path, data):
    csv = write_csv(data / "paths.csv", [
        "sub-0/T1w.nii.gz,sub-0/ct.nii.gz,ct,,,none",
        f"{data / 'sub-1' / 'T1w.nii.gz'},sub-1/ct.nii.gz,ct,named/out.mha,,none",
        "atlas/mri.png,atlas/ct.png,ct,,,",
        f"{data / 'sub-2' / 'T1w.nii.gz'},sub-2/ct.nii.gz,ct,{tmp_path / 'elsewhere' / 'x.nrrd'},,none",
    ])
    out = tmp_path / "out"
    cohort = read_cohort(csv, out)
    assert cohort.problems == []
    assert [row.mri for row in cohort.rows] == [data / "sub-0/T1w.nii.gz", data / "sub-1/T1w.nii.gz",
                                                data / "atlas/mri.png", data / "sub-2/T1w.nii.gz"]
    assert [row.output for row in cohort.rows] == [
        out / "sub-0" / "T1w_fused.nii.gz",  # mirrors the MRI's folder under the CSV's folder
        out / "named" / "out.mha",  # a relative output is under --out-dir
        out / "atlas" / "mri_fused.png",  # a 2D picture stays a picture
        tmp_path / "elsewhere" / "x.nrrd",  # absolute: as written
    ]
    outside = write_csv(tmp_path / "outside.csv", [f"{data / 'sub-0/T1w.nii.gz'},{data / 'sub-0/ct.nii.gz'},ct,,,none"])
    assert read_cohort(outside, out).rows[0].output == out / "T1w_fused.nii.gz"  # MRI outside the CSV's folder


def test_every_bad_row_is_rejected_with_its_reason_and_the_others_are_kept(tmp_path, data):
    csv = write_csv(data / "bad.csv", [
        "sub-0/T1w.nii.gz,sub-0/ct.nii.gz,ct,,,none",  # 2: good
        "sub-9/T1w.nii.gz,sub-0/ct.nii.gz,ct,,,none",  # 3: missing MRI
        "sub-0/T1w.nii.gz,sub-0/ct.nii.gz,mr,,,none",  # 4: unknown modality
        "sub-0/T1w.nii.gz,sub-0/ct.nii.gz,,,,none",  # 5: no modality
        "sub-1/T1w.nii.gz,sub-1/ct.nii.gz,ct,,no-such-method,none",  # 6: unknown method
        "sub-1/T1w.nii.gz,sub-1/ct.nii.gz,ct,,,sideways",  # 7: no such registration
        "sub-1/T1w.nii.gz,sub-1/ct.nii.gz,ct,same.nii.gz,,none",  # 8 and 9: the same output
        "sub-2/T1w.nii.gz,sub-2/ct.nii.gz,ct,same.nii.gz,,none",
        f"sub-2/T1w.nii.gz,sub-2/ct.nii.gz,ct,{data / 'sub-1' / 'ct.nii.gz'},,none",  # 10: output is row 8's input
        "sub-2/T1w.nii.gz,sub-2/ct.nii.gz,ct,out.jpg,,none",  # 11: a format that is not written
        "sub-2/T1w.nii.gz,sub-2/ct.nii.gz",  # 12: fields missing
    ])
    cohort = read_cohort(csv, tmp_path / "out")
    assert [row.line for row in cohort.rows] == [2]
    reasons = {problem.line: problem.reason for problem in cohort.problems}
    assert sorted(reasons) == list(range(3, 13))
    assert "mri not found" in reasons[3] and "sub-9" in reasons[3]
    assert "unknown modality 'mr'" in reasons[4]
    assert "modality column is empty" in reasons[5]
    assert "unknown fusion method 'no-such-method'" in reasons[6]
    assert "unknown registration 'sideways'" in reasons[7]
    assert "rows 8 and 9 write the same file" in reasons[8] and "rows 9 and 8" in reasons[9]
    assert "is the other input of row 8" in reasons[10]
    assert "cannot write" in reasons[11] and ".jpg" in reasons[11]
    assert "has 2 fields but the header has 6" in reasons[12]


@pytest.mark.parametrize("content, words", [
    ("mri;other;modality\na;b;ct\n", "is it comma-separated?"),
    ("mri,other\na,b\n", "lacks the column(s) modality"),
    ("mri,other,modality,methd\na,b,ct,sfnn\n", "unknown column(s) 'methd'"),
    ("mri,other,modality,mri\na,b,ct,c\n", "names the column(s) mri more than once"),
    ("mri,other,modality\n", "has a header but no rows"),
    (b"mri,other,modality\n\xff\xfe,b,ct\n", "not UTF-8"),
])
def test_a_file_that_is_not_a_cohort_stops_everything(tmp_path, capsys, content, words):
    csv = tmp_path / "cohort.csv"
    csv.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match="cohort file"):
        read_cohort(csv, tmp_path / "out")
    assert main(["batch", "--cohort", str(csv), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_two_batch_forms_do_not_mix(tmp_path, capsys, data):
    csv = write_csv(data / "one.csv", [GOOD_ROWS[0]])
    assert main(["batch", "--cohort", str(csv), "--task", "MRI-CT", "--out-dir", str(tmp_path)]) == 2
    assert "--cohort replaces --task" in capsys.readouterr().err
    assert main(["batch", "--mri-dir", str(data), "--other-dir", str(data), "--task", "MRI-CT", "--workers", "2",
                 "--out-dir", str(tmp_path)]) == 2
    assert "without --scheduler, --workers" in capsys.readouterr().err
    assert main(["batch", "--cohort", str(csv), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1",
                 "--out-dir", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_dicom_folder_is_hashed_by_its_sorted_files(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "b.dcm").write_bytes(b"second")
    (folder / "a.dcm").write_bytes(b"first")
    first = input_sha256(folder)
    expected = hashlib.sha256(b"a.dcm\x005\x00first" + b"b.dcm\x006\x00second").hexdigest()
    assert first == expected
    (folder / "b.dcm").write_bytes(b"secend")
    assert input_sha256(folder) != first
    assert input_sha256(folder / "a.dcm") == hashlib.sha256(b"first").hexdigest()


def test_partial_files_are_found_beside_their_output_only(tmp_path):
    output = tmp_path / "a.nii.gz"
    with atomic_path(output) as temporary:
        temporary.write_bytes(b"half")
        with atomic_path(sidecar_path(output)) as sidecar_temporary:
            sidecar_temporary.write_bytes(b"{")
            assert partial_files_of(output) == [temporary]
            assert partial_files_of(sidecar_path(output)) == [sidecar_temporary]
            assert partial_files_of(tmp_path / "a.nii") == []
    assert partial_files_of(output) == [] and output.read_bytes() == b"half"


# ---------------------------------------------------------------- in this process


def test_each_row_is_fused_as_edgefusion_fuse_fuses_it_with_a_sidecar(tmp_path, data, models, references):
    csv = write_csv(data / "good.csv", GOOD_ROWS)
    report = run_cohort(read_cohort(csv, tmp_path / "out"))
    assert statuses(report) == {line: "done" for line in range(2, 7)}
    manifest = json.loads((models / "manifest.json").read_text())
    for entry, row in zip(report.entries, GOOD_ROWS):
        output = Path(entry["output"])
        assert output.read_bytes() == references[row], row
        sidecar = json.loads(sidecar_path(output).read_text())
        mri, other, modality, _, method, _ = row.split(",")
        assert sidecar["fingerprint"]["mri_sha256"] == hashlib.sha256((data / mri).read_bytes()).hexdigest()
        assert sidecar["fingerprint"]["other_sha256"] == hashlib.sha256((data / other).read_bytes()).hexdigest()
        assert sidecar["output"]["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
        task = f"MRI-{modality.upper()}"
        assert sidecar["fingerprint"]["method"] == (method or DEFAULT_METHOD[task])  # the task's default, resolved
        latent = get_method(sidecar["fingerprint"]["method"]).needs_model
        assert sidecar["fingerprint"]["weights_sha256"] == (manifest["models"][task]["sha256"] if latent else None)
        assert sidecar["device"] == "cpu" and sidecar["seconds"] > 0
    fused = sitk.ReadImage(report.entries[2]["output"])
    assert fused.GetSize() == (32, 32, 8) and fused.GetNumberOfComponentsPerPixel() == 1  # the MRI's grid


def test_an_interrupted_run_resumes_and_redoes_only_what_is_not_up_to_date(tmp_path, data):
    csv = write_csv(data / "resume.csv", PIXEL_ROWS)
    out = tmp_path / "a" / "b"  # parents created

    def interrupt_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cohort(read_cohort(csv, out), progress=interrupt_after_two)
    summary = (out / "summary.csv").read_text().splitlines()
    assert [line.split(",")[5] for line in summary[1:]] == ["done", "done", "not run", "not run", "not run"]
    cohort = read_cohort(csv, out)
    written = {row.line: row.output.stat().st_mtime_ns for row in cohort.rows[:2]}
    assert not cohort.rows[2].output.exists()

    report = run_cohort(cohort)
    assert statuses(report) == {2: "up to date", 3: "up to date", 4: "done", 5: "done", 6: "done"}
    assert {row.line: row.output.stat().st_mtime_ns for row in cohort.rows[:2]} == written  # not rewritten

    cohort.rows[3].output.write_bytes(cohort.rows[3].output.read_bytes()[:-10])  # a damaged output
    changed = read_cohort(csv, out, FusionOptions(batch_size=2))  # other options for every row
    assert set(statuses(run_cohort(changed)).values()) == {"done"}
    report = run_cohort(read_cohort(csv, out))  # back to the first options: all redone, then nothing
    assert set(statuses(report).values()) == {"done"}
    assert set(statuses(run_cohort(read_cohort(csv, out))).values()) == {"up to date"}
    assert not list(out.rglob("*.partial*"))


def test_new_weights_make_old_outputs_stale_and_are_the_ones_used(tmp_path, data, models, references, monkeypatch):
    from EdgeFusionLib.model.weights import register_weights, save_weights

    csv = write_csv(data / "weights.csv", [GOOD_ROWS[1]])  # the default method: needs the weights
    out = tmp_path / "out"
    assert statuses(run_cohort(read_cohort(csv, out))) == {2: "done"}
    output = read_cohort(csv, out).rows[0].output
    assert output.read_bytes() == references[GOOD_ROWS[1]]
    retrained = tmp_path / "retrained"
    save_weights(make_random_model(5), retrained / "mri-ct.safetensors")
    register_weights("MRI-CT", retrained / "mri-ct.safetensors", {"data": "other seeded weights (test)"}, retrained)
    monkeypatch.setenv("EDGEFUSION_MODELS_DIR", str(retrained))
    assert statuses(run_cohort(read_cohort(csv, out))) == {2: "done"}  # not "up to date"
    expected = tmp_path / "expected.nii.gz"
    assert main(["fuse", str(data / "sub-1/T1w.nii.gz"), str(data / "sub-1/ct.nii.gz"), "-o", str(expected),
                 "--modality", "ct", "--register", "none"]) == 0
    assert output.read_bytes() == expected.read_bytes() != references[GOOD_ROWS[1]]  # new weights, no kept engine
    sidecar = json.loads(sidecar_path(output).read_text())
    assert sidecar["fingerprint"]["weights_sha256"] == hashlib.sha256(
        (retrained / "mri-ct.safetensors").read_bytes()).hexdigest()


def test_a_row_is_aligned_and_its_transform_written(tmp_path):
    """An empty register column takes the command's default (auto): two volumes without a shared DICOM frame
    of reference are registered rigidly; the transform lies beside the output and the sidecar records it."""
    import EdgeFusionLib
    from EdgeFusionLib.registration import read_transform

    samples = EdgeFusionLib.RESOURCES_DIR / "SampleData"
    patient = tmp_path / "pat"
    patient.mkdir()
    ct = sitk.ReadImage(str(samples / "EdgeFusionPhantom-CT.nrrd"))
    ct.SetOrigin(tuple(np.add(ct.GetOrigin(), (6.0, -4.0, 3.0))))  # another scanner's frame: moved 7.8 mm
    sitk.WriteImage(ct, str(patient / "ct.nrrd"))
    sitk.WriteImage(sitk.ReadImage(str(samples / "EdgeFusionPhantom-MRI.nrrd")), str(patient / "mri.nrrd"))
    csv = write_csv(tmp_path / "aligned.csv", ["pat/mri.nrrd,pat/ct.nrrd,ct,,pixel-max,"])

    report = run_cohort(read_cohort(csv, tmp_path / "out"))

    assert statuses(report) == {2: "done"}
    output = tmp_path / "out" / "pat" / "mri_fused.nii.gz"
    transform = read_transform(tmp_path / "out" / "pat" / "mri_fused.tfm")
    centre = (0.0, -10.0, 0.0)  # about the middle of the head
    np.testing.assert_allclose(np.subtract(transform.TransformPoint(centre), centre), (6.0, -4.0, 3.0), atol=1.0)
    record = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    assert record["fingerprint"]["options"]["registration"] == "auto"
    assert record["registration"]["kind"] == "rigid" and record["registration"]["summary"].startswith("rigid: metric")


def test_a_failing_pair_is_reported_and_the_others_are_fused(tmp_path, data, models):
    (data / "broken.nii.gz").write_bytes(b"not a volume")
    csv = write_csv(data / "failing.csv", [GOOD_ROWS[0], "broken.nii.gz,sub-0/ct.nii.gz,ct,,,none",
                                           "sub-1/T1w.nii.gz,atlas/ct.png,ct,,pixel-max,none",
                                           "sub-1/T1w.nii.gz,sub-1/ct.nii.gz,ct,v.png,pixel-max,none"])
    report = run_cohort(read_cohort(csv, tmp_path / "out"))
    assert statuses(report) == {2: "done", 3: "failed", 4: "failed", 5: "failed"}
    reasons = {entry["line"]: entry["reason"] for entry in report.entries}
    assert "cannot read MRI" in reasons[3] and "broken.nii.gz" in reasons[3]
    assert "the MRI is 3D but the CT is 2D" in reasons[4]
    assert "cannot write a 3D volume as .png" in reasons[5]
    assert not report.succeeded
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "T1w_fused.nii.gz", "T1w_fused.nii.gz.json", "summary.csv"]


# ---------------------------------------------------------------- on a Dask LocalCluster


def test_the_cluster_writes_the_same_bytes_as_this_process(tmp_path, data, models, cluster, references):
    csv = write_csv(data / "cluster.csv", GOOD_ROWS)
    report = run_cohort(read_cohort(csv, tmp_path / "out"), scheduler=cluster.scheduler_address)
    assert statuses(report) == {line: "done" for line in range(2, 7)}
    for entry, row in zip(report.entries, GOOD_ROWS):
        assert Path(entry["output"]).read_bytes() == references[row], row
    with distributed.Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
    assert os.getpid() not in workers and len(workers) == 2
    # Voxels too, against the library's one entry point:
    from EdgeFusionLib.fusion.pipeline import fuse_images

    expected = fuse_images(sitk.ReadImage(str(data / "sub-2/T1w.nii.gz")), sitk.ReadImage(str(data / "sub-2/pet.nrrd")),
                           "pet", method="sfnn-compensated")
    fused = sitk.ReadImage(report.entries[2]["output"])
    assert np.array_equal(sitk.GetArrayFromImage(fused), sitk.GetArrayFromImage(expected))
    assert fused.GetOrigin() == expected.GetOrigin() and fused.GetSpacing() == expected.GetSpacing()


class StopInFirstWrite(distributed.WorkerPlugin):
    """On every worker: log each image write; the first write of ``target`` writes its temporary file, then
    waits to be killed (the test sends SIGKILL), so the worker dies in the middle of that pair."""

    def __init__(self, target: str, killed_marker: str, log: str):
        self.target, self.killed_marker, self.log = Path(target), Path(killed_marker), Path(log)

    def setup(self, worker):
        self.real = sitk.WriteImage

        def write(image, path, *args, **kwargs):
            self.real(image, path, *args, **kwargs)
            with open(self.log, "a") as log:
                log.write(f"{path}\n")
            if is_temporary_of(Path(path), self.target) and not self.killed_marker.exists():
                self.killed_marker.write_text(str(os.getpid()))
                time.sleep(300)

        sitk.WriteImage = write

    def teardown(self, worker):
        sitk.WriteImage = self.real


def is_temporary_of(path: Path, output: Path) -> bool:
    """``path`` is one of atomic_path's temporary files for ``output``."""
    return path.parent == output.parent and path.name.startswith(f".{output.name}.") and path.name.endswith(
        ".partial" + full_suffix(output))


def test_a_worker_killed_mid_pair_loses_no_pair_and_leaves_no_partial_file(tmp_path, data, models, cluster,
                                                                              references):
    copies = {GOOD_ROWS[0].replace(",,pixel-average", f",copy{i}.nii.gz,pixel-average"): GOOD_ROWS[0] for i in range(3)}
    rows = GOOD_ROWS + list(copies)
    csv = write_csv(data / "killed.csv", rows)
    out = tmp_path / "out"
    target = out / "sub-1" / "T1w_fused.nii.gz"  # line 3: the default method on the random weights
    marker, log = tmp_path / "killed-pid", tmp_path / "writes.log"

    def kill_the_worker_when_it_waits():
        deadline = time.monotonic() + 240
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the pid is written just before the worker sleeps
        os.kill(int(marker.read_text()), signal.SIGKILL)

    with distributed.Client(cluster) as client:
        client.register_plugin(StopInFirstWrite(str(target), str(marker), str(log)), name="stop-in-first-write")
        killer = threading.Thread(target=kill_the_worker_when_it_waits, daemon=True)
        killer.start()
        try:
            report = run_cohort(read_cohort(csv, out), scheduler=cluster.scheduler_address)
        finally:
            killer.join(timeout=250)
            client.unregister_worker_plugin("stop-in-first-write")
    assert marker.exists()  # a worker did die in the middle of the pair, its temporary file written
    assert statuses(report) == {line: "done" for line in range(2, 2 + len(rows))}
    assert not list(out.rglob("*.partial*"))
    writes = [Path(line) for line in log.read_text().splitlines()]
    outputs = [Path(entry["output"]) for entry in report.entries]
    for output in outputs:  # each fused once; the killed pair twice, of which the first never became the output
        assert sum(is_temporary_of(path, output) for path in writes) == (2 if output == target else 1), output
    for output, row in zip(outputs, rows):
        assert output.read_bytes() == references[copies.get(row, row)], row

    # A rerun on the cluster finds every output up to date and writes nothing.
    written = {output: output.stat().st_mtime_ns for output in outputs}
    rerun = run_cohort(read_cohort(csv, out), scheduler=cluster.scheduler_address)
    assert set(statuses(rerun).values()) == {"up to date"}
    assert {output: output.stat().st_mtime_ns for output in outputs} == written


def test_the_command_on_a_local_cluster_reports_bad_rows_and_a_rerun_does_nothing(tmp_path, data, models, capsys):
    (data / "garbage.nrrd").write_bytes(b"NRRD0004\nnonsense\n")
    csv = write_csv(data / "cli.csv", GOOD_ROWS[:2] + [
        "garbage.nrrd,sub-0/ct.nii.gz,ct,,,none",  # unreadable: fails on its worker
        "sub-0/T1w.nii.gz,sub-0/missing.nii.gz,ct,,,none",  # missing: refused before any work
        "sub-2/T1w.nii.gz,sub-2/ct.nii.gz,spect,,,none",  # no MRI-SPECT weights in the models folder
    ])
    out = tmp_path / "deep" / "out"
    argv = ["batch", "--cohort", str(csv), "--out-dir", str(out), "--workers", "2"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "5 pair(s): 2 done, 1 invalid, 2 failed" in err
    lines = {int(row.split(",")[0]): row for row in (out / "summary.csv").read_text().splitlines()[1:]}
    assert ",done," in lines[2] and ",done," in lines[3]
    assert ",failed," in lines[4] and "cannot read MRI" in lines[4]
    assert ",invalid," in lines[5] and "other not found" in lines[5]
    assert ",failed," in lines[6] and "no weights for task MRI-SPECT" in lines[6]
    assert main(argv[:-2]) == 1  # again, in this process: the good rows are up to date
    assert "2 up to date, 1 invalid, 2 failed" in capsys.readouterr().err
