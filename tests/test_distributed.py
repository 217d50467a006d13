"""Issue 6: the tiny study on a Dask LocalCluster (loopback, 2 worker processes, 1 thread each)
gives the in-process tables bitwise, also when a worker process is SIGKILLed mid-run."""
import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from dlnmc import executors, runner
from dlnmc.cli import main

from . import reference as ref

pytest.importorskip("distributed")

TINY = Path(__file__).parent / "studies" / "tiny.py"


@pytest.fixture(scope="module")
def cluster():
    with executors.local_cluster(2, threads=1, dashboard_address=None) as executor:
        yield executor


def _identical(out_a, out_b):
    for a, b in zip(runner.load_tables(out_a), runner.load_tables(out_b)):
        ref.assert_tables_identical(a, b)


def test_workers_use_the_numba_threads_they_are_given(cluster):
    assert list(cluster.map(lambda _: executors.worker_threads(), range(4))) == [1] * 4
    # Default: the host's cores shared among the task slots of its two workers.
    auto = executors.DaskExecutor(cluster.client)
    got = set(auto.map(lambda _: (executors.worker_threads(), executors.cores()), range(4)))
    assert all(threads == max(1, cores // 2) for threads, cores in got)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return runner.run_study(TINY, out=tmp_path_factory.mktemp("local"), quick=True,
                            chunk_runs=2, progress=False)


def test_local_cluster_matches_in_process(cluster, in_process, tmp_path):
    # The Client itself (not the adapter) is accepted too.
    out = runner.run_study(TINY, out=tmp_path, quick=True, chunk_runs=2,
                           executor=cluster.client, progress=False)
    _identical(out, in_process)


@pytest.mark.parametrize("options, factory, args", [
    (["--local-cluster", "2", "--write", "workers"], "local_cluster", (2, None)),
    (["--scheduler", "tcp://127.0.0.1:1", "--threads", "1"], "connect", ("tcp://127.0.0.1:1", 1)),
])
def test_cli_drives_the_cluster(cluster, in_process, tmp_path, monkeypatch, options, factory,
                                args):
    calls = []
    monkeypatch.setattr(executors, factory,
                        lambda *a: calls.append(a) or contextlib.nullcontext(cluster))
    assert main(["run", str(TINY), "--quick", "--chunk-runs", "3", "--out", str(tmp_path),
                 "--no-progress", *options]) == 0
    assert calls == [args]
    _identical(tmp_path, in_process)


def test_an_inline_problem_travels_to_the_workers(cluster, tmp_path):
    # The chunk carries the problem's shape and observed entries; the worker rebuilds it.
    study = tmp_path / "inline.py"
    study.write_text(INLINE)
    out = runner.run_study(study, out=tmp_path / "dask", chunk_runs=2, executor=cluster,
                           progress=False)
    _identical(out, runner.run_study(study, out=tmp_path / "local", progress=False))
    assert runner.load_tables(out)[0].attrs["dlnmc"]["grid"][0]["problem"]["name"] == "hand"


INLINE = """
from dlnmc import CompletionProblem
from dlnmc.study import Cell

NAME, DESCRIPTION = "inline", "A hand-written 2x2 problem (the tiny study's kernels)."
PROBLEM = CompletionProblem((2, 2), {(0, 0): 1.0, (0, 1): 2.0, (1, 1): -1.0}, name="hand")


def cells(quick):
    return [Cell("d2", PROBLEM, params=dict(depth=2, lr=0.05, init_scale=0.1, max_steps=300),
                 runs=4)]


analyse = figures = print
"""


def _lost_tasks(dask_scheduler):
    """Tasks the scheduler took back from a worker that went away while running them."""
    return sum(start == "processing" and finish == "released" and not stimulus.startswith("client")
               for _, start, finish, _, stimulus, _ in dask_scheduler.transition_log)


def test_killed_worker_loses_nothing(cluster, tmp_path):
    out = tmp_path / "dask"
    pids = cluster.client.run(os.getpid)
    finished = []
    run = threading.Thread(target=lambda: finished.append(runner.run_study(
        TINY, out=out, runs=6, chunk_runs=1, executor=cluster, progress=False)))
    run.start()
    deadline = time.monotonic() + 60
    while (len(list(out.glob("parts/*/*.final.parquet"))) < 3 and run.is_alive()
           and time.monotonic() < deadline):
        time.sleep(0.01)
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    at_kill = len(list(out.glob("parts/*/*.final.parquet")))
    run.join(timeout=120)
    assert finished and 3 <= at_kill < 24
    cluster.client.wait_for_workers(2, timeout=30)
    assert set(cluster.client.run(os.getpid).values()) != set(pids.values())  # one was restarted
    assert cluster.client.run_on_scheduler(_lost_tasks) > 0  # it was running a chunk: retried
    local = runner.run_study(TINY, out=tmp_path / "local", runs=6, chunk_runs=6, progress=False)
    _identical(out, local)
