"""Run a study: cells -> chunks -> executor -> parquet parts -> merged tables.

A study (:mod:`dlnmc.study`) declares cells; each cell's run ids ``0 .. runs - 1`` are cut into
chunks of ``chunk_runs`` consecutive ids, keyed by ``(cell key, chunk id)``.  Every chunk is one
engine call and writes one pair of parquet parts, atomically, under
``out/parts/<cell>/<chunk>.final.parquet`` and ``.history.parquet``.  Because a trajectory's
result depends only on (parameters, seed, run id), the merged tables do not depend on the
chunking, the executor or the thread counts, and a killed run resumes where it stopped.

The executor is injected: anything whose ``.map(fn, items)`` yields ``fn(item)`` for every item
(in any order), see :mod:`dlnmc.executors`.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from dlnmc import __version__, executors
from dlnmc.problems import CATALOGUE
from dlnmc.results import versions, write_parquet
from dlnmc.study import Cell

__all__ = ["STUDIES", "CHUNK_RUNS", "WRITE_MODES", "Chunk", "studies_dir", "list_studies",
           "load_study", "study_cells", "plan", "run_chunk", "run_study", "load_tables"]

STUDIES = Path(__file__).resolve().parent.parent / "studies"
"""The repository's folder of study modules, next to the package's source tree (a checkout
or an editable install); see :func:`studies_dir`."""

CHUNK_RUNS = 500
"""Default trajectories per chunk."""

WRITE_MODES = ("client", "workers")
"""Who writes the parts: ``"client"`` (default; results travel back to the process that called
:func:`run_study`, no shared filesystem needed) or ``"workers"`` (each worker writes its parts
under ``out``, which must then be the same path on a filesystem shared by all workers)."""

_STUDY_ATTRS = {"NAME": str, "DESCRIPTION": str, "cells": callable, "analyse": callable,
                "figures": callable}
_FIXED_COLUMNS = ("study", "cell")
_RESERVED_LABELS = {*_FIXED_COLUMNS, "run", "step", "seed"}


def _engine(name):
    """The engine function of a cell (imported lazily: ``flow`` is optional)."""
    if name == "gd":
        from dlnmc.simulate import simulate
        return simulate
    from dlnmc.flow import simulate_flow
    return simulate_flow


def _jsonable(value):
    """``value`` as plain JSON types (tuples -> lists, NumPy scalars/arrays -> Python)."""
    def default(obj):
        if isinstance(obj, (np.ndarray, np.generic)):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
    return json.loads(json.dumps(value, default=default, allow_nan=True))


# -- studies ------------------------------------------------------------------------------

def studies_dir() -> Path:
    """Where studies are looked up by name: :data:`STUDIES`, or ``./studies`` when the package
    was installed away from its source tree (``pip install .`` from a checkout)."""
    return STUDIES if STUDIES.is_dir() else Path.cwd() / "studies"


def list_studies() -> dict[str, Path]:
    """Study modules of :func:`studies_dir`, by name."""
    return {p.stem: p for p in sorted(studies_dir().glob("*.py")) if not p.stem.startswith("_")}


def load_study(name_or_path):
    """Import a study module by name (a module of ``studies/``) or by path to a ``.py`` file.

    Raises
    ------
    ValueError
        No such study, or the module lacks ``NAME``, ``DESCRIPTION``, ``cells``, ``analyse``
        or ``figures`` (see :mod:`dlnmc.study`).
    """
    path = Path(name_or_path)
    if path.suffix != ".py":
        path = studies_dir() / f"{name_or_path}.py"
        if not path.is_file():
            known = ", ".join(list_studies()) or "none"
            raise ValueError(f"no study named {str(name_or_path)!r} in {path.parent} "
                             f"(known: {known})")
    elif not path.is_file():
        raise ValueError(f"study file {path} does not exist")
    module_name = f"_dlnmc_study_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    for attr, kind in _STUDY_ATTRS.items():
        value = getattr(module, attr, None)
        if not (callable(value) if kind is callable else isinstance(value, kind)):
            what = getattr(kind, "__name__", kind)
            raise ValueError(f"study {path}: {attr} missing or not a {what}")
    if not Path(module.NAME).name == module.NAME or module.NAME in ("", ".", ".."):
        raise ValueError(f"study {path}: NAME {module.NAME!r} must be usable as a folder name")
    return module


def study_cells(study, quick=False, runs=None) -> list[Cell]:
    """The validated grid ``study.cells(quick)``, every cell's ``runs`` replaced by ``runs``
    when given.

    Checks, before any work: a non-empty list of :class:`~dlnmc.study.Cell` with unique keys;
    each problem in :data:`dlnmc.CATALOGUE` and constructible from its ``problem_args``; each
    engine available and accepting the cell's ``params`` (unknown keys are named); params and
    labels JSON-serialisable (they are stored as provenance); labels not clashing with the
    ``study``, ``cell``, ``run``, ``step`` or ``seed`` columns.

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
        if cell.problem not in CATALOGUE:
            raise ValueError(f"{where}: unknown problem {cell.problem!r} "
                             f"(known: {', '.join(CATALOGUE)})")
        try:
            problem = CATALOGUE[cell.problem](**cell.problem_args)
            engine = _engine(cell.engine)
        except (TypeError, ValueError, ImportError) as err:
            raise ValueError(f"{where}: {err}") from None
        signature = inspect.signature(engine)
        unknown = sorted(set(cell.params) - set(signature.parameters))
        if unknown:
            raise ValueError(f"{where}: unknown {cell.engine} engine parameter(s) {unknown}")
        try:
            signature.bind(problem=problem, runs=1, seed=0, first_run=0, n_threads=None,
                           progress=False, **cell.params)
            _jsonable([dict(cell.params), dict(cell.problem_args), dict(cell.labels)])
        except TypeError as err:
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

    Plain data (picklable, sent to workers).  ``threads``: Numba threads (None: the worker's
    default, see :func:`dlnmc.executors.worker_threads`); ``parts``: folder the worker writes
    the parts to (None: it returns the tables).
    """

    study: str
    cell: str
    chunk: int
    problem: str
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
        return _jsonable(spec)

    def paths(self, parts) -> tuple[Path, Path]:
        """``(final, history)`` part files under the folder ``parts``."""
        base = Path(parts) / self.cell / f"{self.chunk:06d}"
        return base.with_suffix(".final.parquet"), base.with_suffix(".history.parquet")


def plan(name, cells, seed=0, chunk_runs=None, threads=None, parts=None) -> list[Chunk]:
    """Chunks of every cell, ordered chunk id first and cell order second, so that the first
    chunk of every cell runs early (an engine that rejects a cell's values fails fast)."""
    chunk_runs = CHUNK_RUNS if chunk_runs is None else chunk_runs
    for label, value, low in (("seed", seed, 0), ("chunk_runs", chunk_runs, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, Integral)
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    chunks = []
    for cell in cells:
        for k in range(math.ceil(cell.runs / chunk_runs)):
            first = k * chunk_runs
            chunks.append(Chunk(name, cell.key, k, cell.problem, dict(cell.problem_args),
                                cell.engine, dict(cell.params), dict(cell.labels), int(seed),
                                first, min(chunk_runs, cell.runs - first),
                                None if threads is None else int(threads),
                                None if parts is None else str(parts)))
    order = {cell.key: i for i, cell in enumerate(cells)}
    return sorted(chunks, key=lambda c: (c.chunk, order[c.cell]))


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


def _write(chunk, parts, final, history):
    """Write a chunk's parts; ``final`` last, so its presence marks the pair complete."""
    final_path, history_path = chunk.paths(parts)
    write_parquet(history, history_path)
    write_parquet(final, final_path)


def run_chunk(chunk: Chunk):
    """Run one chunk (on whatever worker): returns ``(chunk, final, history)``, or
    ``(chunk, None, None)`` after writing the parts itself when ``chunk.parts`` is set."""
    threads = chunk.threads if chunk.threads is not None else executors.worker_threads()
    problem = CATALOGUE[chunk.problem](**chunk.problem_args)
    result = _engine(chunk.engine)(problem=problem, runs=chunk.runs, seed=chunk.seed,
                                   first_run=chunk.first_run, n_threads=threads, progress=False,
                                   **chunk.params)
    attrs = {"spec": chunk.spec(), "versions": versions(), "engine": _jsonable(result.provenance)}
    final = _labelled(result.final, chunk, attrs)
    history = _labelled(result.history, chunk, attrs)
    if chunk.parts is None:
        return chunk, final, history
    _write(chunk, chunk.parts, final, history)
    return chunk, None, None


def _stored_attrs(path) -> dict:
    """A parquet file's ``DataFrame.attrs``, read from its schema alone (pandas keeps them
    under the ``PANDAS_ATTRS`` key)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"PANDAS_ATTRS", b"{}"))


def _finished(chunk, parts) -> bool:
    """Whether the chunk's parts exist; ValueError when they were made by another spec."""
    paths = chunk.paths(parts)
    if not all(p.is_file() for p in paths):
        return False
    want = chunk.spec()
    for path in paths:
        got = _stored_attrs(path).get("dlnmc", {})
        spec, version = got.get("spec", {}), got.get("versions", {}).get("dlnmc")
        if spec != want:
            changed = sorted(k for k in want if spec.get(k) != want[k])
            raise ValueError(f"{path} was made by a different spec (changed: {changed}); "
                             f"use another --out or delete {path.parent}")
        if version != __version__:
            raise ValueError(f"{path} was made by dlnmc {version}, this is {__version__}; "
                             f"use another --out or delete {path.parent}")
    return True


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


def _without_attrs(df):
    """``df`` with empty ``attrs`` (pandas deep-copies them on every column access)."""
    df.attrs = {}
    return df


def _merge(cells, chunks, parts, provenance):
    order = {cell.key: i for i, cell in enumerate(cells)}
    ordered = sorted(chunks, key=lambda c: (order[c.cell], c.chunk))
    frames = [[_without_attrs(pd.read_parquet(p)) for p in c.paths(parts)] for c in ordered]
    return tuple(_concat([f[i] for f in frames], cells, provenance) for i in range(2))


# -- the runner ---------------------------------------------------------------------------

def run_study(study, out=None, quick=False, runs=None, seed=0, threads=None, executor=None,
              chunk_runs=None, progress=True, write="client") -> Path:
    """Simulate every cell of ``study`` and merge the tables into ``out``.

    Parameters
    ----------
    study : module, str or path
        A study module or what :func:`load_study` accepts.
    out : path, optional
        Output folder (default :func:`default_out`).
    quick : bool
        Use the reduced grid ``study.cells(True)``.
    runs : int, optional
        Trajectories per cell, replacing every cell's ``runs``.
    seed : int
        Study seed: trajectory r of a cell depends only on (cell, seed, r).
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

    Notes
    -----
    Resume: a rerun skips chunks whose parts exist and were made by the same spec (cell,
    problem, engine, params, labels, seed, run ids) and dlnmc version; a part made by another
    spec is an error (nothing is recomputed or overwritten silently).  A killed run loses only
    the chunks in flight.  Parts not in the current plan are left alone and not merged.
    """
    if write not in WRITE_MODES:
        raise ValueError(f"write must be one of {WRITE_MODES}, got {write!r}")
    study = study if inspect.ismodule(study) else load_study(study)
    out = (default_out(study, quick) if out is None else Path(out)).resolve()
    parts = out / "parts"
    cells = study_cells(study, quick, runs)
    chunks = plan(study.NAME, cells, seed, chunk_runs, threads,
                  parts if write == "workers" else None)
    todo = [c for c in chunks if not _finished(c, parts)]
    run = executors.as_executor(executor)
    with tqdm(total=len(chunks), initial=len(chunks) - len(todo), unit="chunk",
              desc=study.NAME, disable=not progress, smoothing=0.1) as bar:
        for chunk, final, history in run.map(run_chunk, todo):
            if final is not None:
                _write(chunk, parts, final, history)
            bar.update()
    grid = [_jsonable({"key": c.key, "problem": c.problem, "problem_args": dict(c.problem_args),
                       "engine": c.engine, "params": dict(c.params), "runs": c.runs,
                       "labels": dict(c.labels)}) for c in cells]
    provenance = {"study": study.NAME, "seed": int(seed), "grid": grid, "versions": versions()}
    final, history = _merge(cells, chunks, parts, provenance)
    write_parquet(final, out / "final.parquet")
    write_parquet(history, out / "history.parquet")
    return out


def default_out(study, quick=False) -> Path:
    """``data/<NAME>/`` (``data/<NAME>-quick/`` for the quick grid) under the current directory,
    so a quick run never meets the full grid's parts."""
    return Path("data") / (f"{study.NAME}-quick" if quick else study.NAME)


def load_tables(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(final, history)`` as merged by :func:`run_study` into the folder ``out``."""
    out = Path(out)
    return pd.read_parquet(out / "final.parquet"), pd.read_parquet(out / "history.parquet")
