"""Executors the runner can drive: in-process, any ``.map`` object, or a Dask cluster.

The runner only calls ``executor.map(fn, items)`` and consumes the results in whatever order
they come; this module adapts backends to that protocol and fixes Numba's thread count on each
worker (Dask does not): a chunk runs on ``threads`` Numba threads when given, else on its
host's cores divided by the task slots of all the workers on that host.  One task slot per
worker process (``--nthreads 1``) is the intended setup: Numba's ``workqueue`` threading layer
must not launch parallel kernels from several threads of one process.

The work items are chunks of :data:`CHUNK_RUNS` trajectories by default, and their parts are
written by the client or by the workers (:data:`WRITE_MODES`).  ``distributed`` is the optional
extra ``dlnmc[distributed]``, and Numba too is imported only when used.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import os
import sys

__all__ = ["CHUNK_RUNS", "WRITE_MODES", "IN_FLIGHT", "InProcess", "DaskExecutor", "as_executor",
           "local_cluster", "connect", "cores", "worker_threads"]

CHUNK_RUNS = 500
"""Default trajectories per chunk (one work item)."""

WRITE_MODES = ("client", "workers")
"""Who writes the parts: ``"client"`` (default; results travel back to the process that called
:func:`dlnmc.runner.run_study`, no shared filesystem needed) or ``"workers"`` (each worker
writes its parts under ``out``, which must then be the same path on a filesystem shared by all
workers)."""

IN_FLIGHT = 4096
"""Most items a :class:`DaskExecutor` has submitted and not yet yielded: the next is submitted
as one finishes, so the client's memory does not grow with the number of items."""

_THREADS = None


def cores() -> int:
    """CPU cores this process may use (its affinity), at most Numba's thread limit."""
    import numba

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n or 1, numba.config.NUMBA_NUM_THREADS))


def worker_threads():
    """Numba threads for a chunk in this process, as set by the executor (None: all)."""
    return _THREADS


def _host_slots(client) -> dict[str, int]:
    """Task slots of the cluster's workers, summed per host."""
    from distributed.comm import get_address_host

    slots = collections.Counter()
    for address, n in client.nthreads().items():
        slots[get_address_host(address)] += n
    return dict(slots)


def _call(fn, threads, slots, item):
    """Run ``fn(item)`` on a Dask worker with its Numba thread count set: ``threads``, or
    this host's cores divided by the task slots of all workers on the host (``slots``)."""
    global _THREADS
    if threads is None:
        from distributed import get_worker
        from distributed.comm import get_address_host

        worker = get_worker()
        own = slots.get(get_address_host(worker.address), worker.state.nthreads)
        threads = max(1, cores() // own)
    _THREADS = threads
    return fn(item)


class InProcess:
    """Run every item here, one after the other (each chunk still uses Numba's threads)."""

    def map(self, fn, items):
        return map(fn, items)


class DaskExecutor:
    """Submit items to a ``dask.distributed`` cluster and yield results as they complete.

    Items are taken from ``items`` lazily, at most :data:`IN_FLIGHT` at a time.  A task whose
    worker dies is rescheduled by Dask (up to ``distributed.scheduler.allowed-failures``
    times); an exception in a task cancels the rest and is raised here.

    Parameters
    ----------
    client : distributed.Client
    threads : int, optional
        Numba threads per task (default: a host's cores divided by the task slots of the
        workers on it, as the cluster stands when :meth:`map` is called).
    """

    def __init__(self, client, threads=None):
        self.client = client
        self.threads = threads

    def map(self, fn, items):
        from distributed import as_completed

        call = functools.partial(_call, fn, self.threads, _host_slots(self.client))
        items = iter(items)
        pending = set()

        def submit(n):
            futures = self.client.map(call, list(itertools.islice(items, n)), pure=False)
            pending.update(futures)
            return futures

        try:
            done = as_completed(submit(IN_FLIGHT), with_results=True)
            for future, result in done:
                pending.discard(future)
                future.release()
                done.update(submit(1))
                yield result
        finally:
            self.client.cancel(list(pending))


def as_executor(executor):
    """The runner's view of ``executor``: ``None`` -> :class:`InProcess`, a
    ``distributed.Client`` -> :class:`DaskExecutor`, anything else with ``.map`` as is."""
    if executor is None:
        return InProcess()
    distributed = sys.modules.get("distributed")
    if distributed is not None and isinstance(executor, distributed.Client):
        return DaskExecutor(executor)
    if not callable(getattr(executor, "map", None)):
        raise ValueError("executor must have a .map(fn, items) method, "
                         f"got {type(executor).__name__}")
    return executor


@contextlib.contextmanager
def local_cluster(workers, threads=None, **cluster_args):
    """A ``LocalCluster`` of ``workers`` processes with one task slot each, on loopback,
    as a :class:`DaskExecutor`; each worker gets ``threads`` Numba threads (default: this
    machine's cores divided among the workers)."""
    from distributed import Client, LocalCluster

    threads = max(1, cores() // workers) if threads is None else threads
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", **cluster_args) as cluster, Client(cluster) as client:
        yield DaskExecutor(client, threads)


@contextlib.contextmanager
def connect(address, threads=None):
    """A :class:`DaskExecutor` on the running scheduler at ``address`` (``tcp://host:port``)."""
    from distributed import Client

    with Client(address) as client:
        yield DaskExecutor(client, threads)
