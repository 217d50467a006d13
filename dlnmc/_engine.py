"""What the engines (:func:`dlnmc.simulate`, :func:`dlnmc.flow.simulate_flow`) share: argument
checks, the thread count, checkpoint grids, the ``final`` and ``history`` tables and their
provenance.  Private: the engines import it, nothing else does."""
from __future__ import annotations

import contextlib
import math
from numbers import Integral, Real

import numba
import numpy as np
import pandas as pd

from dlnmc.kernels.task import STATUSES
from dlnmc.problems import CompletionProblem
from dlnmc.results import entry_columns, spectral_columns, versions

__all__ = ["check_number", "check_batch", "check_threads", "thread_count", "log_grid",
           "final_table", "history_table", "stamp"]


def check_number(name, value, low, *, integer=False, strict=False):
    """``value`` as int (``integer``) or float, if finite and >= ``low`` (> with ``strict``);
    else ValueError naming ``name``."""
    kind = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite {'integer' if integer else 'number'}, got {value!r}")
    if value < low or (strict and value == low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return int(value) if integer else float(value)


def check_batch(problem, runs, tol, seed, first_run, temperature):
    """Validate the arguments every engine shares; return them coerced."""
    if not isinstance(problem, CompletionProblem):
        raise ValueError(f"problem must be a CompletionProblem, got {type(problem).__name__}")
    return (check_number("runs", runs, 1, integer=True), check_number("tol", tol, 0.0),
            check_number("seed", seed, 0, integer=True),
            check_number("first_run", first_run, 0, integer=True),
            check_number("temperature", temperature, 0.0))


def check_threads(n_threads) -> int:
    """``n_threads`` checked against Numba's thread limit (None: Numba's current count)."""
    limit = numba.config.NUMBA_NUM_THREADS
    if n_threads is None:
        return numba.get_num_threads()
    if isinstance(n_threads, bool) or not isinstance(n_threads, Integral) \
            or not 1 <= n_threads <= limit:
        raise ValueError(f"n_threads must be an integer in [1, {limit}], got {n_threads!r}")
    return int(n_threads)


@contextlib.contextmanager
def thread_count(n_threads):
    """Run the enclosed kernels on ``n_threads`` Numba threads (None: all)."""
    n = check_threads(n_threads)
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def log_grid(checkpoints, start, end, unit) -> np.ndarray:
    """Sorted unique checkpoints in ``[0, end]``: ``"log"``: 0 and about ten log-spaced points
    per decade from ``start`` to ``end``; an int n: 0 and n log-spaced points over that range;
    a sequence: those points; ``None``: none.  ``unit`` names the points in errors
    (``"steps"``: integers, rounded; ``"times"``: floats)."""
    integer = unit == "steps"
    if checkpoints is None:
        return np.zeros(0, dtype=np.int64 if integer else np.float64)
    if isinstance(checkpoints, str):
        if checkpoints != "log":
            raise ValueError(f"checkpoints must be 'log', an int, {unit} or None, got {checkpoints!r}")
        checkpoints = int(round(10 * math.log10(max(end, start) / start))) + 1
    if isinstance(checkpoints, Integral) and not isinstance(checkpoints, bool):
        if checkpoints < 0:
            raise ValueError(f"number of checkpoints must be >= 0, got {checkpoints}")
        grid = np.geomspace(start, max(end, start), int(checkpoints)) if checkpoints else []
        points = np.concatenate([[0], np.rint(grid) if integer else grid])
    else:
        points = np.asarray(checkpoints)
        ok = (np.issubdtype(points.dtype, np.integer) if integer
              else np.issubdtype(points.dtype, np.number) and np.all(np.isfinite(points)))
        if points.ndim != 1 or not ok:
            kind = "integer steps" if integer else "finite times"
            raise ValueError(f"checkpoints must be a 1-D sequence of {kind}")
        if np.any(points < 0) or np.any(points > end):
            raise ValueError(f"checkpoint {unit} must lie in [0, {end}]")
    return np.unique(points.astype(np.int64 if integer else np.float64))


def final_table(problem, W, W0, run_ids, steps, loss, status, params) -> pd.DataFrame:
    """One row per trajectory: its settings (``params``), ``steps``, ``loss``, ``status``,
    the entries of W, ``det_init`` (square), singular values and effective rank."""
    n = len(run_ids)
    cols = {
        "run": run_ids,
        "seed": np.full(n, params["seed"], dtype=np.int64),
        "depth": np.full(n, params["depth"]),  # int64; float64 for the flow's N = inf
        "lr": np.full(n, params["lr"]),
        "init": _constant_category(params["init"], n),
        "init_scale": np.full(n, params["init_scale"]),
        "widths": _constant_category(_widths_label(params.get("widths")), n),
        "temperature": np.full(n, params["temperature"]),
        "steps": steps,
        "loss": loss,
        "status": pd.Categorical.from_codes(np.asarray(status, dtype=np.int8),
                                            categories=list(STATUSES)),
    }
    tail = {"det_init": np.linalg.det(W0)} if problem.is_square else {}
    tail.update(spectral_columns(W))
    return _with_entries(cols, problem.shape, W.reshape(n, -1), tail)


def _with_entries(head, shape, entries, tail) -> pd.DataFrame:
    """Columns ``head``, then ``w_<i>_<j>`` from the rows of ``entries``, then ``tail``; the
    entries as one block (a 100 x 100 problem has 10^4 of them)."""
    return pd.concat([pd.DataFrame(head), pd.DataFrame(entries, columns=entry_columns(shape)),
                      pd.DataFrame(tail, index=pd.RangeIndex(len(entries)))], axis=1)


def _constant_category(value, n) -> pd.Categorical:
    """A categorical column holding ``value`` n times (from codes: no list of n strings)."""
    return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[value])


def _widths_label(widths) -> str:
    """Hidden widths as text, ``"3x3"`` (``""`` without hidden layers or for the flow)."""
    return "x".join(str(w) for w in widths or ())


def history_table(problem, run_ids, reached, extra, series) -> pd.DataFrame:
    """Checkpoints reached by each run plus its final state where ``extra`` (no checkpoint
    holds it), sorted by run: a run's checkpoints in their order, then its final state.

    ``series`` maps each column (``"w"`` for the entries of W) to a pair (values at the
    checkpoints, ``runs x C [x k]``; values at the end, ``runs [x k]``); ``reached`` (runs x C)
    marks the checkpoints a run reached.
    """
    runs, C = reached.shape
    at = np.flatnonzero(reached)  # flat indices: ten times faster than a boolean mask here
    ends = np.flatnonzero(extra)

    def rows(checkpointed, final):
        flat = np.reshape(checkpointed, (runs * C, *np.shape(checkpointed)[2:])).take(at, axis=0)
        return np.concatenate([flat, final[ends]]) if len(ends) else flat

    cols = {"run": rows(np.broadcast_to(run_ids[:, None], (runs, C)), run_ids)}
    cols.update((name, rows(*pair)) for name, pair in series.items())
    if len(ends):
        # checkpoint rows come run by run, each run's final state after them: a stable sort
        # by run puts every final state after its run's checkpoints
        order = np.argsort(cols["run"], kind="stable")
        cols = {name: values[order] for name, values in cols.items()}
    return _with_entries(cols, problem.shape, cols.pop("w"), {})


def stamp(kind, params, *tables) -> dict:
    """Provenance (engine kind, parameters, package versions) set as ``attrs`` of ``tables``."""
    provenance = {"kind": kind, "params": params, "versions": versions()}
    for table in tables:
        table.attrs = {"dlnmc": provenance}
    return provenance
