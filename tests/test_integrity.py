"""Issue 14: output integrity. One run at a time per output folder (a second fails at once
naming the holder; a stale lock is taken over), every part verified by its SHA-256 when read
(a damaged one is named, set aside and computed again; the merge re-checks every part against
the plan), absurd sizes refused at once, every check before any work, Ctrl-C ends with one
line saying how to resume, orphan temporary files removed, a spec mismatch lists every
affected cell and keeps the parts that still match."""
import contextlib
import hashlib
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dlnmc import executors, runner
from dlnmc.cli import main
from dlnmc.study import Cell

from . import reference as ref
from .test_runner import _study

TINY = Path(__file__).parent / "studies" / "tiny.py"
QUICK = dict(quick=True, chunk_runs=4, progress=False)


@pytest.fixture(scope="module")
def tiny():
    return runner.load_study(TINY)


@pytest.fixture(scope="module")
def baseline(tiny, tmp_path_factory):
    """The quick tiny study, in-process, 4 runs per chunk (cells of 4 to 6 runs)."""
    return runner.run_study(tiny, out=tmp_path_factory.mktemp("baseline"), **QUICK)


@pytest.fixture
def copy(baseline, tmp_path):
    """A finished copy of the baseline's folder, without its merged tables."""
    out = shutil.copytree(baseline, tmp_path / "out")
    for name in ("final.parquet", "history.parquet"):
        (out / name).unlink()
    return out


class Recording:
    """An executor that runs the items in order and records them."""

    def __init__(self):
        self.done = []

    def map(self, fn, items):
        for item in items:
            self.done.append((item.cell, item.chunk))
            yield fn(item)


def _identical(out_a, out_b):
    for a, b in zip(runner.load_tables(out_a), runner.load_tables(out_b)):
        ref.assert_tables_identical(a, b)


def _mtimes(out):
    return {p: p.stat().st_mtime_ns for p in (out / "parts").rglob("*") if p.is_file()}


@pytest.fixture
def dlnmc_run():
    """Start ``dlnmc run TINY *argv --no-progress`` in a subprocess (killed at teardown if
    still running)."""
    procs = []

    def start(*argv):
        # SIGINT restored to its default in the child: a parent that ignores it (nohup, some
        # CI runners) would otherwise pass the ignore on and Ctrl-C would never arrive
        procs.append(subprocess.Popen([sys.executable, "-m", "dlnmc", "run", str(TINY), *argv,
                                       "--no-progress"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True,
                                      preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                       signal.SIG_DFL)))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _wait_for(condition, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition(), proc.poll()


# -- 1. one run at a time -------------------------------------------------------------------

def test_a_second_run_into_a_busy_folder_fails_at_once_and_ctrl_c_says_how_to_resume(tmp_path,
                                                                                    dlnmc_run):
    out = tmp_path / "out"
    # The full tiny grid (5000 steps per run), one run per chunk: 800 chunks, several seconds
    # of work, so that the second run and the Ctrl-C find the first one still running.
    argv = ["--runs", "200", "--chunk-runs", "1", "--threads", "1", "--out", str(out)]
    first = dlnmc_run(*argv)
    lock = out / runner.LOCK
    _wait_for(lambda: lock.is_file() and lock.read_text().endswith("}"), first)
    started = time.monotonic()
    second = dlnmc_run(*argv[:3], "2", *argv[4:])  # --chunk-runs 2: the parts would clash
    _, err = second.communicate(timeout=60)
    assert first.poll() is None, "the first run ended before the second was refused"
    assert second.returncode == 2 and time.monotonic() - started < 30
    assert err.count("\n") == 1 and err.startswith(f"dlnmc: error: {out} is in use by another run")
    assert f"(pid {first.pid} on {socket.gethostname()}, started " in err

    # Ctrl-C in the middle of the chunks: one line saying how to resume.
    _wait_for(lambda: any(out.glob("parts/*/*.sha256")), first)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130
    command = shlex.join(["dlnmc", "run", str(TINY), *argv, "--no-progress"])
    assert err == f"dlnmc: interrupted; finished chunks are kept: run `{command}` again to resume\n"
    assert not lock.exists() and not list(out.rglob("*.tmp"))
    assert main(["run", str(TINY), *argv, "--no-progress"]) == 0
    final = pd.read_parquet(out / "final.parquet")
    assert not final.duplicated(["cell", "run"]).any() and len(final) == 800


def test_a_folder_held_in_this_process_is_refused_naming_the_holder(tiny, tmp_path):
    out = tmp_path / "out"
    holding, release = threading.Event(), threading.Event()

    def hold():
        with runner.locked(out):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(30)
        holder = rf"\(pid {os.getpid()} on {re.escape(socket.gethostname())}, started \d{{4}}-"
        with pytest.raises(ValueError, match=rf"{re.escape(str(out))} is in use by another run "
                                             f"{holder}"):
            runner.run_study(tiny, out=out, **QUICK)
    finally:
        release.set()
        thread.join()
    assert not out.exists()  # created by the holder, left empty, removed on release


def test_a_stale_lock_of_a_killed_run_is_taken_over(tiny, baseline, copy):
    (copy / runner.LOCK).write_text('{"pid": 999999999, "host": "gone", "started": "2000"}')
    runner.run_study(tiny, out=copy, **QUICK)
    assert not (copy / runner.LOCK).exists()
    _identical(copy, baseline)


# -- 2. every part verified -----------------------------------------------------------------

def _flip_a_value(path):
    """Flip one bit of the last value in the ``loss`` column's dictionary page (the page that
    holds its values; footer and page headers intact)."""
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(0).column(meta.schema.names.index("loss"))
    assert column.dictionary_page_offset is not None and column.compression == "SNAPPY"
    data = bytearray(path.read_bytes())
    data[column.data_page_offset - 2] ^= 0x10  # a snappy literal: the value's bytes as they are
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_part_is_named_set_aside_and_computed_again(tiny, baseline, copy, damage):
    part = copy / "parts" / "diag-d2" / "000001.final.parquet"
    if damage == "flip":
        _flip_a_value(part)
        # What the merge used to take silently: the file reads, with another value.
        assert not pd.read_parquet(part).equals(pd.read_parquet(baseline / part.relative_to(copy)))
    elif damage == "truncate":
        part.write_bytes(part.read_bytes()[:-100])
    else:
        part.write_bytes(b"garbage")
    executor = Recording()
    with pytest.warns(runner.DamagedPartWarning, match=re.escape(f"{part} is damaged")):
        runner.run_study(tiny, out=copy, executor=executor, **QUICK)
    assert executor.done == [("diag-d2", 1)]
    assert (part.parent / "000001.final.parquet.damaged").is_file()
    _identical(copy, baseline)
    for name in ("final.parquet", "history.parquet"):
        assert (copy / name).read_bytes() == (baseline / name).read_bytes()


def test_the_cli_names_a_damaged_part_in_one_line(copy, capsys):
    part = copy / "parts" / "rc-d3-noisy" / "000000.history.parquet"
    part.write_bytes(part.read_bytes()[:-1])
    assert main(["run", str(TINY), "--quick", "--chunk-runs", "4", "--out", str(copy),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"dlnmc: warning: {part} is damaged") and err.count("\n") == 1


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("intruder", ["copies chunk 0 over chunk 1", "forges chunk 1's spec"])
def test_the_merge_rechecks_every_part_against_the_plan(tiny, baseline, copy, intruder):
    folder = copy / "parts" / "diag-d2"
    for path in (copy / "parts" / "rc-d3-noisy").glob("000000.*"):
        path.unlink()  # work to do, during which another writer ignores the lock

    class Intruder:
        def map(self, fn, items):
            for kind in ("final", "history"):
                target = folder / f"000001.{kind}.parquet"
                if intruder.startswith("copies"):
                    shutil.copy(folder / f"000000.{kind}.parquet", target)
                else:
                    df = pd.read_parquet(folder / f"000000.{kind}.parquet")
                    df.attrs = pd.read_parquet(target).attrs
                    df.to_parquet(target, index=False)
            (folder / "000001.sha256").write_text("".join(
                f"{_sha256(folder / f'000001.{k}.parquet')}  000001.{k}.parquet\n"
                for k in ("final", "history")))
            return map(fn, items)

    problem = r"changed: \['chunk', 'first_run', 'runs'\]" if intruder.startswith("copies") \
        else "does not hold run ids 4 to 5 once each"
    with pytest.raises(ValueError, match=rf"diag-d2/000001.final.parquet {problem} .*run again"):
        runner.run_study(tiny, out=copy, executor=Intruder(), **QUICK)
    assert (folder / "000001.final.parquet.damaged").is_file()
    executor = Recording()
    runner.run_study(tiny, out=copy, executor=executor, **QUICK)
    assert executor.done == [("diag-d2", 1)]
    _identical(copy, baseline)


# -- 3. absurd sizes ------------------------------------------------------------------------

@contextlib.contextmanager
def _bounded(seconds):
    """Run a block under a ``seconds`` alarm (TimeoutError: the code as it was would plan
    until the OOM killer stops it) with tracemalloc on; yields a dict that receives the
    block's ``elapsed`` seconds and ``peak`` traced bytes."""
    def too_slow(*_):
        raise TimeoutError(f"still running after {seconds} s")

    alarm = signal.signal(signal.SIGALRM, too_slow)
    # Repeated: an alarm that lands in a finalizer is swallowed ("Exception ignored in").
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.1)
    tracemalloc.start()
    measured = {}
    started = time.perf_counter()
    try:
        yield measured
    finally:
        measured["elapsed"] = time.perf_counter() - started
        measured["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, alarm)


def test_absurd_runs_are_refused_at_once_without_allocating(tmp_path, capsys):
    out = tmp_path / "out"
    with _bounded(1.0) as measured, pytest.raises(SystemExit) as exit_:
        main(["run", str(TINY), "--runs", "99999999999999999999", "--out", str(out),
              "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and measured["elapsed"] < 1 and measured["peak"] < 20e6
    assert re.fullmatch(r"dlnmc: error: 399,999,999,999,999,999,996 runs in 4 cells need at "
                        r"least \S+ [kMGTPEZY]?B for their tables, more than this machine's .*; "
                        r"use fewer runs\n", err)
    assert not out.exists()


def test_planning_is_lazy(tiny):
    with _bounded(1.0) as measured:
        plan = runner.plan("tiny", runner.study_cells(tiny, runs=10**15), chunk_runs=1)
        assert plan.total == 4 * 10**15
        assert [(c.cell, c.chunk) for c in itertools.islice(plan, 5)] == [
            ("diag-d2", 0), ("diag-d3-gauss", 0), ("rc-d3-noisy", 0), ("lowrank-d2", 0),
            ("diag-d2", 1)]
    assert measured["peak"] < 1e6


def test_the_dask_executor_takes_items_lazily(monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(executors, "IN_FLIGHT", 2)
    taken = []

    def items():
        for i in range(6):
            taken.append(i)
            yield i

    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None) as client:
        results = executors.DaskExecutor(client, threads=1).map(lambda i: 10 * i, items())
        first = next(results)
        assert len(taken) == 3  # two in flight, then one more per result
        assert sorted([first, *results]) == [0, 10, 20, 30, 40, 50]


# -- 4. every check before any work, Ctrl-C, temporary files, spec mismatch ------------------

@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch, capsys,
                                                                   where):
    if where == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "ro").mkdir(mode=0o500)
    out = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "out",
           "read-only": tmp_path / "ro" / "out"}[where]

    def no_work(*args):
        raise AssertionError("work started")

    monkeypatch.setattr(runner, "check_params", no_work)  # not even the engines' compile
    monkeypatch.setattr(runner, "run_chunk", no_work)
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(TINY), "--quick", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"dlnmc: error: cannot write the outputs to {out}: ")


@pytest.mark.parametrize("bad, message", [
    (Cell("c", "diagonal_2x2", params=dict(depth=0, lr=0.1)), "depth must be >= 1, got 0"),
    (Cell("c", "diagonal_2x2", params=dict(depth=2, lr=-0.1)), "lr must be > 0"),
    (Cell("c", "diagonal_2x2", engine="flow", params=dict(depth=0)), "depth .* got 0"),
])
def test_invalid_params_are_refused_naming_the_cell_before_any_cell_runs(tiny, tmp_path, bad,
                                                                         message):
    executor = Recording()
    with pytest.raises(ValueError, match=f"study bad, cell c: {message}"):
        runner.run_study(_study([*tiny.cells(True)[:2], bad]), out=tmp_path / "out",
                         executor=executor, progress=False)
    assert executor.done == [] and not (tmp_path / "out").exists()


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(tiny, copy):
    orphans = [copy / ".final.parquet.k2j4.tmp", copy / "tables" / ".t.parquet.x1.tmp",
               copy / "parts" / "diag-d2" / ".000000.history.parquet.8fz.tmp"]
    for path in orphans:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"partial")
    mine = copy / "notes.tmp"
    mine.write_text("not dlnmc's")
    runner.run_study(tiny, out=copy, **QUICK)
    assert not any(path.exists() for path in orphans) and mine.exists()


def test_a_spec_mismatch_lists_every_affected_cell_and_keeps_the_parts_that_match(
        tiny, copy, tmp_path):
    before = _mtimes(copy)
    # 7 runs per cell: chunk 1 of the cells of 5 and 6 runs now holds 3 runs; chunk 0 and the
    # 4-run cell's only chunk are unchanged.
    with pytest.raises(ValueError) as err:
        runner.run_study(tiny, out=copy, **{**QUICK, "runs": 7})
    message = str(err.value)
    assert "\n" not in message and "3 cells" in message and "lowrank-d2" not in message
    for cell in ("diag-d2", "diag-d3-gauss", "rc-d3-noisy"):
        assert f"{cell} chunk 1 changed: ['runs']" in message
    assert _mtimes(copy) == before
    # As the message says: delete those chunks; only they (and the new ones) are computed.
    for cell in ("diag-d2", "diag-d3-gauss", "rc-d3-noisy"):
        for path in (copy / "parts" / cell).glob("000001.*"):
            path.unlink()
    executor = Recording()
    runner.run_study(tiny, out=copy, executor=executor, **{**QUICK, "runs": 7})
    assert sorted(executor.done) == [(cell, 1) for cell in
                                     ("diag-d2", "diag-d3-gauss", "lowrank-d2", "rc-d3-noisy")]
    assert all(_mtimes(copy)[p] == t for p, t in before.items() if "000000" in p.name)
    whole = runner.run_study(tiny, out=tmp_path / "whole", quick=True, runs=7, chunk_runs=7,
                             progress=False)
    _identical(copy, whole)


def test_a_spec_mismatch_in_two_cells_names_both(tiny, copy):
    changed = ("diag-d2", "lowrank-d2")
    cells = [Cell(c.key, c.problem, c.problem_args, c.engine,
                  {**c.params, "lr": 0.04} if c.key in changed else c.params, c.runs, c.labels)
             for c in tiny.cells(True)]
    with pytest.raises(ValueError, match=r"other settings in 2 cells: diag-d2 chunks 0-1 "
                                         r"changed: \['params'\]; lowrank-d2 chunk 0 changed: "
                                         r"\['params'\]; delete those chunks"):
        runner.run_study(_study(cells, name="tiny"), out=copy, **QUICK)
