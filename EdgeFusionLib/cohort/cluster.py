"""Running cohort rows on a Dask cluster: an existing one (``--scheduler``) or a local one (``--workers``).

Imported only for those two options: ``import EdgeFusionLib`` and the Slicer module never need Dask.
The client sends each worker a row (file paths and options, under 2 KB) and gets a result dict
back; workers read and write the files themselves, so every worker must see the inputs and the
output folder under the same paths as the client (a shared file system). At most
``IN_FLIGHT_PER_THREAD`` pairs per worker thread are submitted at a time, so the client and the
scheduler hold a bounded number of tasks whatever the size of the cohort.

Dask retries a pair elsewhere when its worker dies (up to ``distributed.scheduler.allowed-failures``
times, 3 by default); :func:`~EdgeFusionLib.cohort.pair.fuse_pair` is idempotent, so a pair whose
worker died after writing is found up to date, not fused twice.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import uuid
from collections.abc import Callable, Iterator

import dask
from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from ..errors import InputError
from .pair import ERROR, assign_device, fuse_pair
from .rows import CohortRow

#: Pairs submitted per worker thread at a time: one running, one queued so the worker never waits.
IN_FLIGHT_PER_THREAD = 2
#: Seconds to wait for a scheduler given with ``--scheduler``.
CONNECT_TIMEOUT_S = 30
#: Dask settings of a local cluster (``--workers``), whose scheduler, client and workers share this
#: machine's cores with the workers' torch threads: with Dask's defaults its timers took 9 % of a
#: core while no pair ran, 1.6 % with these (2-core VM). A cohort needs none of them at their default
#: rate: each pair is one long task.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,  # stack samples of the running task every 10 ms
    "distributed.admin.tick.interval": "1s",  # the event-loop watchdog, every 20 ms in each process
    "distributed.worker.memory.monitor-interval": "1s",  # the workers' memory polls, every 100 ms
    "distributed.scheduler.work-stealing": False,  # pairs are submitted a few at a time: nothing to steal
}


class EngineWorker(WorkerPlugin):
    """Sets a worker up for fusion: its torch threads, and its own GPU on a local multi-GPU cluster.

    ``torch_threads`` None leaves the worker's own setting (Dask's nanny starts workers with
    OMP_NUM_THREADS=1: one thread per pair, as many pairs as the worker has Dask threads).
    ``gpu_per_worker``: local cluster workers (named 0, 1, ...) take ``cuda:<name mod GPUs>`` for rows
    on 'auto' or 'cuda'; on other clusters give each worker its GPU with CUDA_VISIBLE_DEVICES (as
    dask-cuda does).
    """

    def __init__(self, torch_threads: int | None = None, gpu_per_worker: bool = False):
        self.torch_threads = torch_threads
        self.gpu_per_worker = gpu_per_worker

    def setup(self, worker) -> None:
        import torch

        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if self.gpu_per_worker and gpus > 1 and isinstance(worker.name, int):
            assign_device(f"cuda:{worker.name % gpus}")


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                torch_threads: int | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a new local cluster of ``workers`` processes.

    The local cluster listens on the loopback interface only, runs one pair per worker at a time
    and gives each worker ``torch_threads`` threads (default: this machine's cores / workers).
    """
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT_S))
            except (OSError, TimeoutError) as error:
                raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
        else:
            torch_threads = torch_threads or max(1, usable_cores() // workers)
            stack.enter_context(dask.config.set(LOCAL_CLUSTER_CONFIG))  # spawned workers take it with them
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=":0",  # a free port, on the host above
                silence_logs=logging.CRITICAL))  # pairs report their own errors; Dask's shutdown races are noise
            client = stack.enter_context(Client(cluster))
        client.register_plugin(EngineWorker(torch_threads, gpu_per_worker=scheduler is None), name="edgefusion-engine")
        yield client


def run_on_dask(client: Client, rows: list[CohortRow], record: Callable[[dict], None]) -> None:
    """Fuse ``rows`` on ``client``'s cluster; ``record(result)`` for each as it finishes (in any order)."""
    run = uuid.uuid4().hex[:8]  # keys unique to this run: other clients may share the scheduler
    waiting = iter(rows)
    submitted: dict = {}

    def submit(row: CohortRow):
        future = client.submit(fuse_pair, row.to_json(), key=f"edgefusion-{run}-row-{row.line}", pure=False)
        submitted[future] = row
        return future

    finished = as_completed([submit(row) for row in itertools.islice(waiting, _in_flight_limit(client))])
    try:
        for future in finished:
            row = submitted.pop(future)
            record(_result_of(future, row))
            future.release()
            for row in itertools.islice(waiting, max(0, _in_flight_limit(client) - len(submitted))):
                finished.add(submit(row))
    finally:
        if submitted:  # interrupted: take back what was not done
            client.cancel(list(submitted))


def usable_cores() -> int:
    """The cores this process may run on (a batch system's allocation, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _in_flight_limit(client: Client) -> int:
    """Pairs to keep submitted: the cluster's threads now (clusters grow and shrink) times IN_FLIGHT_PER_THREAD."""
    return IN_FLIGHT_PER_THREAD * max(1, sum(client.nthreads().values()))


def _result_of(future, row: CohortRow) -> dict:
    """The pair's result dict; a task that raised (or whose workers kept dying) becomes an ERROR result."""
    if future.status == "finished":
        return future.result()
    error = future.exception()
    reason = f"{type(error).__name__}: {error}".splitlines()[0]
    return {"line": row.line, "status": ERROR, "reason": reason, "seconds": 0.0, "device": ""}
