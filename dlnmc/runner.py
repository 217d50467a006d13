"""Run a study: cells -> chunks -> executor -> parquet parts -> merged tables.

A study (:mod:`dlnmc.study`) declares cells; each cell's run ids ``0 .. runs - 1`` are cut into
chunks of ``chunk_runs`` consecutive ids, keyed by ``(cell key, chunk id)``.  Every chunk is one
engine call and writes one pair of parquet parts, atomically, under
``out/parts/<cell>/<chunk>.final.parquet`` and ``.history.parquet``, then their SHA-256
digests to ``<chunk>.sha256`` (the format of ``sha256sum``), which marks the chunk finished.
Because a trajectory's result depends only on (parameters, seed, run id), the merged tables do
not depend on the chunking, the executor or the thread counts, and a killed run resumes where it
stopped.

A run is :func:`prepare` (options, grid and the size of the tables against this machine,
checked without touching the disk or the engines), then :func:`execute` under :func:`locked`
(one run at a time in an output folder): every cell's parameters checked by its engine,
temporary files of killed runs removed, finished chunks verified, the others computed, every
part verified again as it is merged.  Everything that can fail before the first chunk runs
fails there, in one line.

The executor is injected: anything whose ``.map(fn, items)`` yields ``fn(item)`` for every item
(in any order), see :mod:`dlnmc.executors`.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import socket
import threading
import warnings
from dataclasses import asdict, dataclass, replace
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from dlnmc import __version__, executors
from dlnmc.engines import ENGINES
from dlnmc.executors import CHUNK_RUNS, WRITE_MODES
from dlnmc.results import versions, write_parquet
from dlnmc.study import (DEFAULT_OUT, Cell, default_out, jsonable, list_studies, load_study,
                         make_problem, studies_dir)

__all__ = ["CHUNK_RUNS", "WRITE_MODES", "LOCK", "DamagedPartWarning", "Chunk", "Plan",
           "studies_dir", "list_studies", "load_study", "study_cells", "plan", "prepare",
           "check_params", "locked", "run_chunk", "execute", "run_study", "DEFAULT_OUT",
           "default_out", "load_tables"]

LOCK = ".lock"
"""The lock file in an output folder while a run holds it (see :func:`locked`)."""

_FIXED_COLUMNS = ("study", "cell")
_RESERVED_LABELS = {*_FIXED_COLUMNS, "run", "step", "seed"}
_TEMPORARY = ".*.parquet.*.tmp"
"""The temporary files of :func:`dlnmc.results.write_parquet`, left behind by a killed run."""


class DamagedPartWarning(UserWarning):
    """A finished part no longer matches the digest recorded when it was written: it was set
    aside (renamed ``<part>.damaged``) and its chunk is computed again."""


# -- the grid -----------------------------------------------------------------------------

def study_cells(study, quick=False, runs=None) -> list[Cell]:
    """The validated grid ``study.cells(quick)``, every cell's ``runs`` replaced by ``runs``
    when given.

    Checks, before any work: a non-empty list of :class:`~dlnmc.study.Cell` with unique keys;
    each problem a catalogue name constructible from its ``problem_args``, or an inline
    problem; each engine of :data:`dlnmc.engines.ENGINES` available and accepting the cell's
    ``params`` (unknown keys are named); params and labels JSON-serialisable (they are stored
    as provenance); labels not clashing with the ``study``, ``cell``, ``run``, ``step`` or
    ``seed`` columns.

    Raises
    ------
    ValueError
        The first problem found, naming the study and cell.
    """
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, Integral) or runs < 1):
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    cells = study.cells(bool(quick))
    if not isinstance(cells, (list, tuple)) or not cells:
        raise ValueError(f"study {study.NAME}: cells({bool(quick)}) must return a non-empty list")
    seen = set()
    for cell in cells:
        if not isinstance(cell, Cell):
            raise ValueError(f"study {study.NAME}: cells must be dlnmc.study.Cell, got {cell!r}")
        where = f"study {study.NAME}, cell {cell.key}"
        if cell.key in seen:
            raise ValueError(f"{where}: duplicate cell key")
        seen.add(cell.key)
        try:
            cell.make_problem()
            ENGINES[cell.engine].check(cell.params)
            cell.spec()
        except (TypeError, ValueError, ImportError) as err:
            raise ValueError(f"{where}: {err}") from None
        clash = sorted(_RESERVED_LABELS.intersection(cell.labels))
        if clash:
            raise ValueError(f"{where}: labels may not be named {clash}")
        if not all(isinstance(v, (str, int, float, bool)) for v in cell.labels.values()):
            raise ValueError(f"{where}: label values must be str, int, float or bool")
    return [replace(c, runs=runs) for c in cells] if runs is not None else list(cells)


# -- chunks -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    """One unit of work: run ids ``first_run .. first_run + runs - 1`` of one cell.

    Plain data (picklable, sent to workers).  ``problem``: the cell's
    :attr:`~dlnmc.study.Cell.problem_spec`, a catalogue name or an inline problem's shape and
    observed entries, rebuilt by the worker (:func:`dlnmc.study.make_problem`); being part
    of :meth:`spec`, a changed problem never reuses old parts.  ``threads``: Numba threads
    (None: the worker's default, see :func:`dlnmc.executors.worker_threads`); ``parts``:
    folder the worker writes the parts to (None: it returns the tables).
    """

    study: str
    cell: str
    chunk: int
    problem: str | dict
    problem_args: dict
    engine: str
    params: dict
    labels: dict
    seed: int
    first_run: int
    runs: int
    threads: int | None = None
    parts: str | None = None

    def spec(self) -> dict:
        """What determines the chunk's tables, as stored in its parts' provenance."""
        spec = asdict(self)
        del spec["threads"], spec["parts"]
        return jsonable(spec)

    def paths(self, parts) -> tuple[Path, Path]:
        """``(final, history)`` part files under the folder ``parts``."""
        base = self.checksums(parts)
        return base.with_suffix(".final.parquet"), base.with_suffix(".history.parquet")

    def checksums(self, parts) -> Path:
        """The file under ``parts`` holding the SHA-256 digests of the chunk's two parts, one
        ``<hex>  <file name>`` line each (``sha256sum -c`` checks it); written after the
        parts, it marks the chunk finished."""
        return Path(parts) / self.cell / f"{self.chunk:06d}.sha256"


@dataclass(frozen=True)
class Plan:
    """The chunks of a study's grid, made on demand: nothing is held per chunk or per run,
    whatever the number of runs.

    Attributes
    ----------
    study : str
        The study's ``NAME``.
    cells : tuple of Cell
        The grid, validated (:func:`study_cells`).
    seed, chunk_runs, threads
        As for :func:`run_study` (``chunk_runs`` resolved to an int).
    out : Path
        The output folder (absolute); the parts go to ``out/parts``.
    write : {"client", "workers"}
        Who writes the parts, see :data:`WRITE_MODES`.
    """

    study: str
    cells: tuple
    seed: int
    chunk_runs: int
    threads: int | None
    out: Path
    write: str

    @property
    def parts(self) -> Path:
        return self.out / "parts"

    @property
    def total(self) -> int:
        """Number of chunks."""
        return sum(self.chunks_of(cell) for cell in self.cells)

    def chunks_of(self, cell) -> int:
        """Number of chunks of ``cell``."""
        return -(-cell.runs // self.chunk_runs)

    def chunk(self, cell, k) -> Chunk:
        """Chunk ``k`` of ``cell`` (``0 <= k < chunks_of(cell)``)."""
        first = k * self.chunk_runs
        return Chunk(self.study, cell.key, k, cell.problem_spec, dict(cell.problem_args),
                     cell.engine, dict(cell.params), dict(cell.labels), self.seed, first,
                     min(self.chunk_runs, cell.runs - first), self.threads,
                     str(self.parts) if self.write == "workers" else None)

    def cell_chunks(self, cell):
        """The chunks of ``cell`` in run order (an iterator)."""
        return (self.chunk(cell, k) for k in range(self.chunks_of(cell)))

    def __iter__(self):
        """Every chunk, chunk id first and grid order second, so that the first chunk of every
        cell runs early."""
        for k in itertools.count():
            cells = [cell for cell in self.cells if k < self.chunks_of(cell)]
            if not cells:
                return
            yield from (self.chunk(cell, k) for cell in cells)


def plan(name, cells, seed=0, chunk_runs=None, threads=None, out=".", write="client") -> Plan:
    """The :class:`Plan` of the validated grid ``cells`` of the study ``name``.

    Raises
    ------
    ValueError
        ``seed``, ``chunk_runs``, ``threads`` or ``write`` out of range.
    """
    if write not in WRITE_MODES:
        raise ValueError(f"write must be one of {WRITE_MODES}, got {write!r}")
    chunk_runs = CHUNK_RUNS if chunk_runs is None else chunk_runs
    for label, value, low in (("seed", seed, 0), ("chunk_runs", chunk_runs, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, Integral)
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return Plan(name, tuple(cells), int(seed), int(chunk_runs),
                None if threads is None else int(threads), Path(out).resolve(), write)


# -- checks before any work ---------------------------------------------------------------

class _Probed(Exception):
    """Raised by :data:`_PROBE` where an engine is about to run its kernels."""


class _Probe:
    """A ``progress`` argument that stops an engine where it reads it.

    Both engines read ``progress`` once, after validating every argument and drawing the
    initial factors, just before their kernels: called with it, an engine checks a cell's
    parameters without simulating anything.  (An engine that never read it would simply
    simulate its one run, still a valid check.)
    """

    def __eq__(self, other):
        raise _Probed

    def __bool__(self):
        raise _Probed

    __hash__ = object.__hash__


_PROBE = _Probe()


def check_params(plan):
    """Pass every cell's parameters through its engine, one run stopped before the kernels
    (nothing is simulated; the kernels are compiled).

    Raises
    ------
    ValueError
        The first cell the engine rejects, naming the study and the cell.
    """
    for cell in plan.cells:
        try:
            ENGINES[cell.engine].run(cell.params, problem=cell.make_problem(), runs=1,
                                     seed=0, first_run=0, n_threads=None, progress=_PROBE)
        except _Probed:
            pass
        except (TypeError, ValueError) as err:
            raise ValueError(f"study {plan.study}, cell {cell.key}: {err}") from None


def _bytes(n) -> str:
    """``n`` bytes in decimal units (``"12 GB"``)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} YB"


def _check_size(plan):
    """Refuse a grid whose tables cannot fit on this machine, before any work.

    The tables need at least 8 bytes for each of the ``2 rows cols + 10`` numbers every run
    adds (its end-to-end matrix in ``final`` and in the last row of ``history``, its run id,
    steps, loss, status and settings); the merge holds them in memory and writes them to the
    disk of ``out``.  Being a lower bound, this never refuses a grid that fits.

    Raises
    ------
    ValueError
        The lower bound exceeds this machine's physical memory or the size of the disk.
    """
    problems = (cell.make_problem() for cell in plan.cells)
    need = sum(cell.runs * 8 * (2 * problem.rows * problem.cols + 10)
               for cell, problem in zip(plan.cells, problems))
    disk = next(p for p in (plan.out, *plan.out.parents) if p.exists())
    limits = {"of memory": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
              f"of disk at {disk}": shutil.disk_usage(disk).total}
    what, limit = min(limits.items(), key=lambda item: item[1])
    if need > limit:
        runs = sum(cell.runs for cell in plan.cells)
        raise ValueError(f"{runs:,} runs in {len(plan.cells)} cells need at least {_bytes(need)} "
                         f"for their tables, more than this machine's {_bytes(limit)} {what}; "
                         "use fewer runs")


def prepare(study, out=None, quick=False, runs=None, seed=None, threads=None, chunk_runs=None,
            write="client") -> Plan:
    """The study's :class:`Plan`, after every check that needs neither the output folder nor
    the engines (those follow in :func:`execute`, before any chunk runs).

    In this order: the study (:func:`load_study`) and its grid (:func:`study_cells`);
    ``seed``, ``chunk_runs``, ``threads``, ``write`` (:func:`plan`); the size of the tables
    against this machine (refused with one line, without allocating anything per run).
    Nothing is written and nothing compiled.

    Parameters
    ----------
    study, out, quick, runs, seed, threads, chunk_runs, write
        As for :func:`run_study`.

    Returns
    -------
    Plan

    Raises
    ------
    ValueError
        The first problem found, in one line naming the option, the cell or the size.
    """
    study = load_study(study)
    cells = study_cells(study, quick, runs)
    seed = getattr(study, "SEED", 0) if seed is None else seed
    work = plan(study.NAME, cells, seed, chunk_runs, threads,
                default_out(study, quick) if out is None else out, write)
    _check_size(work)
    return work


# -- the lock -----------------------------------------------------------------------------

_HELD = {}
"""Output folders locked by this process: folder -> [holding thread, depth, lock file
descriptor, folders created for it]."""
_HELD_LOCK = threading.Lock()


def _holder(path) -> str:
    """Who holds the lock file ``path``, as it says (it may be mid-write)."""
    try:
        who = json.loads(Path(path).read_text())
        return f"pid {who['pid']} on {who['host']}, started {who['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _take(fd, path) -> bool:
    """Lock the open file ``fd`` and write this process into it; False (unlocked on close) when
    ``path`` no longer names that file: a holder unlinked it on release meanwhile."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return False
    except FileNotFoundError:
        return False
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": started}).encode())
    os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))
    return True


def _acquire(out) -> int:
    """Create the folder ``out`` and take its lock; return the lock file's descriptor."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot write the outputs to {out}: it is not a directory")
    path = out / LOCK
    try:
        out.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if _take(fd, path):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
    except BlockingIOError:
        raise ValueError(f"{out} is in use by another run ({_holder(path)}); wait for it to "
                         "finish or pass another --out") from None
    except OSError as err:
        raise ValueError(f"cannot write the outputs to {out}: {err.strerror}") from None


@contextlib.contextmanager
def locked(out):
    """Hold the exclusive lock on the output folder ``out`` (created if needed).

    The lock is ``fcntl.flock`` on ``out/.lock``, which names the holder (pid, host, start
    time).  A second run into ``out``, from any process, fails at once naming the holder.  A
    lock left by a killed run is stale and taken over: the kernel drops a flock when the
    process holding it ends, however it ends (SIGKILL included), so a lock file whose flock
    can be taken belongs to no live run, whatever it says.  Reentrant in the holding thread;
    the file is removed on release.  ``out`` must be on a filesystem with working ``flock``
    (local disks; NFS through its lock manager).  Folders it created are removed on release
    if still empty (a run that failed before writing anything leaves no trace).

    Raises
    ------
    ValueError
        ``out`` is held by another run, is not a directory or cannot be written.
    """
    out = Path(out).resolve()
    me = threading.get_ident()
    with _HELD_LOCK:
        held = _HELD.get(out)
        if held is None or held[0] != me:
            created = [p for p in (out, *out.parents) if not p.exists()]
            held = _HELD[out] = [me, 0, _acquire(out), created]
        held[1] += 1
    try:
        yield out
    finally:
        with _HELD_LOCK:
            held[1] -= 1
            if not held[1]:
                del _HELD[out]
                (out / LOCK).unlink(missing_ok=True)  # before unlocking: see _take
                os.close(held[2])
                for folder in held[3]:
                    with contextlib.suppress(OSError):
                        folder.rmdir()


# -- parts --------------------------------------------------------------------------------

def _labelled(df, chunk, attrs) -> pd.DataFrame:
    """``df`` (modified) with the constant columns ``study``, ``cell`` and the labels in front."""
    df.attrs = {}
    for pos, (name, value) in enumerate({"study": chunk.study, "cell": chunk.cell,
                                         **chunk.labels}.items()):
        if name in df.columns:
            raise ValueError(f"cell {chunk.cell}: label {name!r} clashes with an engine column")
        df.insert(pos, name, value)
    df.attrs = {"dlnmc": attrs}
    return df


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(chunk, parts, final, history):
    """Write a chunk's parts, then their digests, which mark the chunk finished."""
    digests = chunk.checksums(parts)
    digests.unlink(missing_ok=True)
    for df, path in zip((final, history), chunk.paths(parts)):
        write_parquet(df, path)
    digests.write_text("".join(f"{_sha256(path.read_bytes())}  {path.name}\n"
                               for path in chunk.paths(parts)))


def run_chunk(chunk: Chunk):
    """Run one chunk (on whatever worker): returns ``(chunk, final, history)``, or
    ``(chunk, None, None)`` after writing the parts itself when ``chunk.parts`` is set."""
    threads = chunk.threads if chunk.threads is not None else executors.worker_threads()
    problem = make_problem(chunk.problem, chunk.problem_args)
    try:
        result = ENGINES[chunk.engine].run(chunk.params, problem=problem, runs=chunk.runs,
                                           seed=chunk.seed, first_run=chunk.first_run,
                                           n_threads=threads, progress=False)
    except ValueError as err:
        raise ValueError(f"cell {chunk.cell}, chunk {chunk.chunk}: {err}") from None
    attrs = {"spec": chunk.spec(), "versions": versions(), "engine": jsonable(result.provenance)}
    final = _labelled(result.final, chunk, attrs)
    history = _labelled(result.history, chunk, attrs)
    if chunk.parts is None:
        return chunk, final, history
    _write(chunk, chunk.parts, final, history)
    return chunk, None, None


def _recorded(chunk, parts) -> dict | None:
    """The digests recorded for the chunk's parts, by file name; None when the chunk did not
    finish (no digests, or a file cut short by a killed run)."""
    names = [path.name for path in chunk.paths(parts)]
    line = r"([0-9a-f]{64})  %s\n"
    try:
        found = re.fullmatch("".join(line % re.escape(n) for n in names),
                             chunk.checksums(parts).read_text())
    except (OSError, UnicodeDecodeError):
        return None
    return dict(zip(names, found.groups())) if found else None


def _set_aside(chunk, parts, path) -> Path:
    """Rename ``path``, a damaged part of ``chunk``, to ``<part>.damaged`` and remove the
    chunk's digests (it is no longer finished); return the new path."""
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    chunk.checksums(parts).unlink(missing_ok=True)
    return aside


def _differs(chunk, attrs) -> str | None:
    """How the provenance ``attrs`` of a part differs from ``chunk`` (None: it matches)."""
    got = attrs.get("dlnmc", {})
    spec, version = got.get("spec", {}), got.get("versions", {}).get("dlnmc")
    want = chunk.spec()
    if spec != want:
        return f"changed: {sorted(k for k in want if spec.get(k) != want[k])}"
    if version != __version__:
        return f"made by dlnmc {version}, this is {__version__}"
    return None


def _finished(chunk, parts) -> str | bool:
    """Whether the chunk is finished: its parts and their digests are in place and match.

    A part that no longer matches its digest is set aside (:func:`_set_aside`, with a
    :class:`DamagedPartWarning` naming it) and the chunk is not finished.  Returns the way the
    parts differ from ``chunk`` (:func:`_differs`) when they were made by another spec."""
    digests = _recorded(chunk, parts)
    if digests is None:
        return False
    paths = chunk.paths(parts)
    data = {}
    for path in paths:
        try:
            data[path] = path.read_bytes()
        except FileNotFoundError:
            return False
    for path in paths:
        got = _sha256(data[path])
        if got != digests[path.name]:
            aside = _set_aside(chunk, parts, path)
            warnings.warn(f"{path} is damaged (SHA-256 {got[:12]}..., recorded "
                          f"{digests[path.name][:12]}...): set aside as {aside.name}, "
                          "computing its chunk again", DamagedPartWarning, stacklevel=2)
            return False
    for path in paths:
        meta = pq.read_schema(io.BytesIO(data[path])).metadata or {}
        differs = _differs(chunk, json.loads(meta.get(b"PANDAS_ATTRS", b"{}")))
        if differs:
            return differs
    return True


def _ranges(ids) -> str:
    """Sorted distinct ints as ``0-3, 7``."""
    spans = []
    for k in ids:
        if spans and spans[-1][1] == k - 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def _scan(plan) -> set:
    """The finished chunks of ``plan``, as ``(cell key, chunk id)``, looked up from the
    digest files on disk (chunks outside the plan are left alone).

    Raises
    ------
    ValueError
        Parts made by another spec, listing every affected cell and chunk at once; the parts
        that still match are kept.
    """
    done, differ = set(), {}
    for cell in plan.cells:
        folder = plan.parts / cell.key
        ids = sorted(int(p.stem) for p in folder.glob("[0-9]*.sha256")
                     if p.stem.isdigit()) if folder.is_dir() else []
        for k in ids:
            if k >= plan.chunks_of(cell):
                continue
            state = _finished(plan.chunk(cell, k), plan.parts)
            if state is True:
                done.add((cell.key, k))
            elif state:
                differ.setdefault(cell.key, {}).setdefault(state, []).append(k)
    if differ:
        where = "; ".join(f"{cell} chunk{'s' * (len(ks) > 1)} {_ranges(ks)} {how}"
                          for cell, hows in differ.items() for how, ks in hows.items())
        raise ValueError(f"parts in {plan.parts} were made by other settings in {len(differ)} "
                         f"cell{'s' * (len(differ) > 1)}: {where}; delete those chunks "
                         "(<cell>/<chunk>.*) to compute them again, or pass another --out "
                         "(the other parts match and are kept)")
    return done


def _clean(out):
    """Remove the temporary files a killed run left in ``out``."""
    for pattern in (_TEMPORARY, f"tables/{_TEMPORARY}", f"parts/*/{_TEMPORARY}"):
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)


# -- merge --------------------------------------------------------------------------------

def _concat(frames, cells, provenance) -> pd.DataFrame:
    """Concatenate parts (already in cell, run order); categorical columns get the union of
    their categories in order of appearance, ``cell`` the grid's order; ``study``, ``cell``
    and the labels come first."""
    df = pd.concat(frames, ignore_index=True)
    for col in df.columns:
        cats = [f[col].cat.categories for f in frames
                if col in f and isinstance(f[col].dtype, pd.CategoricalDtype)]
        if cats:
            df[col] = pd.Categorical(df[col], categories=pd.unique(np.concatenate(cats)))
    df["study"] = pd.Categorical(df["study"], categories=[provenance["study"]])
    df["cell"] = pd.Categorical(df["cell"], categories=[c.key for c in cells])
    front = list(dict.fromkeys([*_FIXED_COLUMNS, *(k for c in cells for k in c.labels)]))
    df = df[front + [c for c in df.columns if c not in front]]
    df.attrs = {"dlnmc": provenance}
    return df


def _read_part(chunk, parts, path, digest, table) -> pd.DataFrame:
    """A part, verified against its digest, its chunk's spec and its run ids (``table``:
    ``"final"``, one row per run, or ``"history"``); returned with empty ``attrs`` (pandas
    deep-copies them on every column access).

    Raises
    ------
    ValueError
        The part fails a check: it is set aside (:func:`_set_aside`), named, and computed
        again by the next run.
    """
    data = path.read_bytes()
    if _sha256(data) != digest:
        problem = "is damaged (its SHA-256 differs from the one recorded when it was written)"
    else:
        df = pd.read_parquet(io.BytesIO(data))
        problem = _differs(chunk, df.attrs)
        ids = df["run"].to_numpy()
        want = np.arange(chunk.first_run, chunk.first_run + chunk.runs)
        if not problem and not (np.array_equal(np.unique(ids), want)
                                and (table == "history" or len(ids) == len(want))):
            problem = f"does not hold run ids {want[0]} to {want[-1]} once each"
        if not problem:
            df.attrs = {}
            return df
    aside = _set_aside(chunk, parts, path)
    raise ValueError(f"{path} {problem} (changed while this run held its folder?): set aside "
                     f"as {aside.name}; run again to compute it again")


def _merge(plan, provenance):
    """``(final, history)``: every part of the plan, in grid then run order, each verified
    (:func:`_read_part`).  Since each part holds exactly its chunk's run ids and the chunks of
    a cell partition its runs, every (cell, run) appears exactly once."""
    frames = ([], [])
    for cell in plan.cells:
        for chunk in plan.cell_chunks(cell):
            digests = _recorded(chunk, plan.parts)
            if digests is None:
                raise ValueError(f"{chunk.checksums(plan.parts)} is missing or incomplete; "
                                 "run again to compute its chunk")
            for table, frame, path in zip(("final", "history"), frames,
                                          chunk.paths(plan.parts)):
                frame.append(_read_part(chunk, plan.parts, path, digests[path.name], table))
    return tuple(_concat(f, plan.cells, provenance) for f in frames)


# -- the runner ---------------------------------------------------------------------------

def execute(plan, executor=None, progress=True) -> Path:
    """Run a prepared :class:`Plan` under the lock of its output folder and merge the tables.

    In this order: the output folder locked (:func:`locked`), every cell's parameters checked
    (:func:`check_params`), temporary files of killed runs removed, finished chunks verified (a
    damaged part is set aside and computed again; parts of other settings are an error), the
    other chunks run, and every part verified again as it is merged.  See :func:`run_study`
    for the parameters and the result.
    """
    run = executors.as_executor(executor)
    with locked(plan.out) as out:
        check_params(plan)
        _clean(out)
        done = _scan(plan)
        todo = (c for c in plan if (c.cell, c.chunk) not in done)
        with tqdm(total=plan.total, initial=len(done), unit="chunk", desc=plan.study,
                  disable=not progress, smoothing=0.1) as bar:
            for chunk, final, history in run.map(run_chunk, todo):
                if final is not None:
                    _write(chunk, plan.parts, final, history)
                bar.update()
        provenance = {"study": plan.study, "seed": plan.seed,
                      "grid": [cell.spec() for cell in plan.cells],
                      "versions": versions()}
        final, history = _merge(plan, provenance)
        write_parquet(final, out / "final.parquet")
        write_parquet(history, out / "history.parquet")
    return out


def run_study(study, out=None, quick=False, runs=None, seed=None, threads=None, executor=None,
              chunk_runs=None, progress=True, write="client") -> Path:
    """Simulate every cell of ``study`` and merge the tables into ``out``.

    Parameters
    ----------
    study : study, str or path
        A study (a module, a TOML study, ...) or what :func:`load_study` accepts.
    out : path, optional
        Output folder (default :func:`default_out`).
    quick : bool
        Use the reduced grid ``study.cells(True)``.
    runs : int, optional
        Trajectories per cell, replacing every cell's ``runs``.
    seed : int, optional
        Study seed: trajectory r of a cell depends only on (cell, seed, r).  Default: the
        study's ``SEED``, else 0.
    threads : int, optional
        Numba threads per chunk (default: the executor's per-worker count; in-process, all).
    executor : optional
        ``None`` (in-process), an object with ``.map(fn, items)`` yielding ``fn(item)`` in any
        order, or a ``dask.distributed.Client`` (see :func:`dlnmc.executors.as_executor`).
    chunk_runs : int, optional
        Trajectories per chunk (default :data:`CHUNK_RUNS`); the tables do not depend on it.
    progress : bool
        Progress bar over chunks, with ETA.
    write : {"client", "workers"}
        Who writes the parts, see :data:`WRITE_MODES`.

    Returns
    -------
    Path
        ``out``, holding ``final.parquet`` and ``history.parquet`` (rows in grid order, then by
        run, then step; columns ``study``, ``cell``, the labels, then the engine's) with the
        provenance ``{"study", "seed", "grid", "versions"}`` in ``attrs["dlnmc"]``, and the
        parts under ``parts/``.

    Raises
    ------
    ValueError
        A check of :func:`prepare` fails, ``out`` is held by another run or cannot be written
        (:func:`locked`), parts were made by other settings, or a part fails its checks while
        merged; always before any chunk runs, except the last.

    Notes
    -----
    :func:`prepare` checks everything before any work; the run holds the lock of ``out``
    (:func:`locked`) from before the first chunk to the merged tables.  Resume: a rerun skips
    chunks whose parts exist, match the SHA-256 digests recorded when they were written, and
    were made by the same spec (cell, problem, engine, params, labels, seed, run ids) and
    dlnmc version.  A part that no longer matches its digest (a flipped bit, a truncated file)
    is renamed ``<part>.damaged`` with a :class:`DamagedPartWarning` and computed again.  Parts
    made by another spec are an error listing every affected cell and chunk (nothing is
    recomputed or overwritten silently; the parts that match are kept).  A killed run loses
    only the chunks in flight; its temporary files are removed by the next run.  Parts not in
    the current plan are left alone and not merged.
    """
    return execute(prepare(study, out, quick, runs, seed, threads, chunk_runs, write),
                   executor, progress)


def load_tables(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(final, history)`` as merged by :func:`run_study` into the folder ``out``."""
    out = Path(out)
    return pd.read_parquet(out / "final.parquet"), pd.read_parquet(out / "history.parquet")
