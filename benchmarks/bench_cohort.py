"""Cohort throughput: this process vs a local Dask cluster of 1 and 2 workers, on the same pairs.

    python benchmarks/bench_cohort.py [--pairs 6] [--slices 100] [--size 256] [--method local-activity]
                                      [--work /tmp/edgefusion-bench-cohort]

Writes a cohort of synthetic 256x256xN pairs (MRI float32 and CT int16 in Hounsfield units, .nii.gz,
on one grid) under ``--work`` and fuses it four times with ``run_cohort``: in this process, on a
``LocalCluster`` of 1 worker (all cores to torch) and of 2 workers (one core each), then in this
process again (the overhead is taken against the mean of the two in-process runs). Each run starts
from an empty output folder; the times include starting and stopping the cluster. Then:

* the cluster's start and stop alone, so that the overhead can be split into start-up and per pair;
* the same pairs with ``pixel-average`` in this process: what a pair costs besides the network
  (reading and decompressing, hashing, resampling, compressing and writing, the sidecar);
* ``--tiny`` pairs of 16x16x2 on 2 workers vs this process: the scheduler's cost per pair;
* bytes per pair that a worker reads and writes on the shared file system, and that the client and
  scheduler send (the pickled row and result).

Prints a markdown report; every output of the four runs must be byte-identical (checked).
Weights: the bundled ones (``edgefusion info``).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from EdgeFusionLib.cohort import read_cohort, run_cohort  # noqa: E402
from EdgeFusionLib.cohort.sidecar import sidecar_path  # noqa: E402
from EdgeFusionLib.fusion.options import FusionOptions  # noqa: E402


def phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A head-like volume in [0, 1]: an ellipsoid with inner structures and noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    r = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.1) ** 2
    head = np.where(r < 1, 0.5, 0.0) + np.where(r < 0.4, 0.3 * np.cos(8 * x + seed) ** 2, 0.0)
    return np.clip(head + 0.03 * rng.standard_normal(shape, dtype=np.float32), 0, 1).astype(np.float32)


def write_cohort(folder: Path, pairs: int, shape: tuple[int, int, int]) -> Path:
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["mri,other,modality"]
    for index in range(pairs):
        patient = folder / f"sub-{index:03d}"
        patient.mkdir(exist_ok=True)
        if not (patient / "ct.nii.gz").exists():
            mri = sitk.GetImageFromArray(phantom(shape, index) * 800)
            ct = sitk.GetImageFromArray((phantom(shape, 100 + index) * 1800 - 1000).astype(np.int16))
            for image in (mri, ct):
                image.SetSpacing((0.9, 0.9, 1.5))
            sitk.WriteImage(mri, str(patient / "T1w.nii.gz"), useCompression=True)
            sitk.WriteImage(ct, str(patient / "ct.nii.gz"), useCompression=True)
        lines.append(f"{patient.name}/T1w.nii.gz,{patient.name}/ct.nii.gz,ct")
    csv = folder / "cohort.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def timed_run(csv: Path, out: Path, method: str | None, **where) -> tuple[float, object]:
    shutil.rmtree(out, ignore_errors=True)
    # Synthetic pairs of unrelated phantoms: placed as they are (what is measured is the cluster's cost).
    cohort = read_cohort(csv, out, FusionOptions(method=method, registration="none"), check_device=True)
    started = time.perf_counter()
    report = run_cohort(cohort, **where)
    seconds = time.perf_counter() - started
    bad = [entry for entry in report.entries if entry["status"] != "done"]
    if bad:
        raise SystemExit(f"benchmark run failed: {bad[0]}")
    return seconds, report


def cluster_start_stop(workers: int) -> float:
    from EdgeFusionLib.cohort.cluster import dask_client

    started = time.perf_counter()
    with dask_client(workers=workers) as client:
        client.submit(_import_engine, pure=False).result()  # a worker is ready once torch is imported
    return time.perf_counter() - started


def _import_engine() -> bool:
    import EdgeFusionLib.fusion.engine  # noqa: F401

    return True


def noop_tasks_per_second(tasks: int) -> float:
    """Dask's own rate on this machine: empty tasks through the scheduler of a 2-worker local cluster."""
    from EdgeFusionLib.cohort.cluster import dask_client

    with dask_client(workers=2) as client:
        client.gather(client.map(_noop, range(50), pure=False))  # warm
        started = time.perf_counter()
        client.gather(client.map(_noop, range(tasks), pure=False))
        return tasks / (time.perf_counter() - started)


def _noop(value: int) -> int:
    return value


def output_hashes(report) -> list[str]:
    return [hashlib.sha256(Path(entry["output"]).read_bytes()).hexdigest() for entry in report.entries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tiny", type=int, default=100, help="pairs of 16x16x2 for the per-pair scheduler cost")
    parser.add_argument("--method", default=None, help="default: the MRI-CT default (fusion.methods.DEFAULT_METHOD)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgefusion-bench-cohort"))
    args = parser.parse_args()

    import torch

    shape = (args.slices, args.size, args.size)
    csv = write_cohort(args.work / "data", args.pairs, shape)
    print(f"{args.pairs} pairs of {args.size}x{args.size}x{args.slices}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}", flush=True)

    runs = {}
    # This process again at the end: the VM's speed drifts (shared host), and the overhead is taken
    # against the mean of the two in-process runs, which bracket the cluster runs.
    for label, where in (("this process", {}), ("local cluster, 1 worker x 2 threads", {"workers": 1}),
                         ("local cluster, 2 workers x 1 thread", {"workers": 2}), ("this process, again", {})):
        seconds, report = timed_run(csv, args.work / "out", args.method, **where)
        runs[label] = (seconds, output_hashes(report), report)
        fusing = [entry["seconds"] for entry in report.entries]
        print(f"{label}: {seconds:.1f} s, {60 * args.pairs / seconds:.2f} pairs/min, seconds per pair on its worker "
              f"{np.mean(fusing):.1f} (min {min(fusing):.1f}, max {max(fusing):.1f})", flush=True)
    reference = runs["this process"][1]
    identical = all(hashes == reference for _, hashes, _ in runs.values())
    print(f"outputs byte-identical across the {len(runs)} runs: {identical}")
    in_process = (runs["this process"][0] + runs["this process, again"][0]) / 2
    for label in ("local cluster, 1 worker x 2 threads", "local cluster, 2 workers x 1 thread"):
        print(f"{label}: {100 * (runs[label][0] / in_process - 1):+.1f} % wall time against this process "
              f"(mean of its two runs, {in_process:.1f} s)")

    for workers in (1, 2):
        print(f"cluster of {workers} start + first task + stop: {cluster_start_stop(workers):.1f} s", flush=True)

    seconds, report = timed_run(csv, args.work / "out-pixel", "pixel-average")
    print(f"pixel-average in this process (I/O, hashing, resampling, writing): {seconds / args.pairs:.2f} s per pair")

    first = report.entries[0]
    read = Path(first["mri"]).stat().st_size + Path(first["other"]).stat().st_size
    output = Path(runs["this process"][2].entries[0]["output"])
    written = output.stat().st_size + sidecar_path(output).stat().st_size
    cohort = read_cohort(csv, args.work / "out", FusionOptions(method=args.method, registration="none"))
    row_bytes = len(pickle.dumps(cohort.rows[0].to_json()))
    result_bytes = len(pickle.dumps({key: first[key] for key in ("line", "status", "reason", "seconds", "device")}))
    print(f"per pair: inputs {read / 1e6:.1f} MB (read twice: hashed, then decoded; the output once more to hash "
          f"it), output + sidecar {written / 1e6:.1f} MB; row sent {row_bytes} B, result back {result_bytes} B")

    tiny_csv = write_cohort(args.work / "tiny", args.tiny, (2, 16, 16))
    local, _ = timed_run(tiny_csv, args.work / "out-tiny", "pixel-average")
    start = cluster_start_stop(2)
    cluster, _ = timed_run(tiny_csv, args.work / "out-tiny", "pixel-average", workers=2)
    print(f"{args.tiny} tiny pairs: this process {1000 * local / args.tiny:.1f} ms per pair; 2 workers "
          f"{1000 * (cluster - start) / args.tiny:.1f} ms per pair after the cluster's start ({start:.1f} s)")
    print(f"Dask alone: {noop_tasks_per_second(2000):.0f} empty tasks per second (2 local workers)")


if __name__ == "__main__":  # the local cluster starts worker processes that import this file
    main()
