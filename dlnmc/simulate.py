"""The public engine: validate -> init -> Numba kernel -> tidy tables.

Plain full-batch gradient descent on the factors of W = W_N ... W_1 (mathematics.md section 1.2),
optionally with Gaussian noise (noisy GD, section 4), for a batch of independent trajectories.
"""
from __future__ import annotations

import contextlib
import math
import sys
from numbers import Integral, Real

import numba
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dlnmc.init import init_factors, layer_dims, noise_keys, product
from dlnmc.kernels import block, gd
from dlnmc.problems import CompletionProblem
from dlnmc.results import STATUSES, SimulationResult, entry_columns, spectral_columns, versions

__all__ = ["simulate", "checkpoint_steps", "thread_count"]

_BATCH = 4096
"""Runs per kernel call; results do not depend on it (trajectories are independent)."""


def checkpoint_steps(checkpoints, max_steps) -> np.ndarray:
    """Sorted unique checkpoint steps in ``[0, max_steps]``.

    ``"log"``: step 0 and about ten log-spaced steps per decade up to ``max_steps``;
    an int n: n log-spaced steps from 1 (plus step 0); a sequence: those steps;
    ``None``: none (no history beyond each trajectory's final state).
    """
    if checkpoints is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(checkpoints, str):
        if checkpoints != "log":
            raise ValueError(f"checkpoints must be 'log', an int, steps or None, got {checkpoints!r}")
        checkpoints = int(10 * math.log10(max(max_steps, 1))) + 1
    if isinstance(checkpoints, Integral):
        if checkpoints < 0:
            raise ValueError(f"number of checkpoints must be >= 0, got {checkpoints}")
        grid = np.geomspace(1, max(max_steps, 1), int(checkpoints)) if checkpoints else []
        steps = np.concatenate([[0], np.rint(grid)]).astype(np.int64)
    else:
        steps = np.asarray(checkpoints)
        if steps.ndim != 1 or not np.issubdtype(steps.dtype, np.integer):
            raise ValueError("checkpoints must be a 1-D sequence of integer steps")
        if np.any(steps < 0) or np.any(steps > max_steps):
            raise ValueError(f"checkpoint steps must lie in [0, max_steps={max_steps}]")
        steps = steps.astype(np.int64)
    return np.unique(steps)


@contextlib.contextmanager
def thread_count(n_threads):
    """Run the enclosed kernels on ``n_threads`` Numba threads (None: all)."""
    if n_threads is None:
        yield
        return
    limit = numba.config.NUMBA_NUM_THREADS
    if not isinstance(n_threads, Integral) or not 1 <= n_threads <= limit:
        raise ValueError(f"n_threads must be an integer in [1, {limit}], got {n_threads!r}")
    before = numba.get_num_threads()
    numba.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _check_number(name, value, low, *, integer=False, strict=False):
    kind = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite {'integer' if integer else 'number'}, got {value!r}")
    if value < low or (strict and value == low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return int(value) if integer else float(value)


def _check_batch(problem, runs, tol, seed, first_run, temperature):
    """Validate the arguments every engine shares; return them coerced."""
    if not isinstance(problem, CompletionProblem):
        raise ValueError(f"problem must be a CompletionProblem, got {type(problem).__name__}")
    return (_check_number("runs", runs, 1, integer=True), _check_number("tol", tol, 0.0),
            _check_number("seed", seed, 0, integer=True),
            _check_number("first_run", first_run, 0, integer=True),
            _check_number("temperature", temperature, 0.0))


def simulate(problem, depth, runs, lr, init="balanced", init_scale=1e-3, widths=None,
             max_steps=10**5, tol=1e-8, seed=0, first_run=0, temperature=0.0,
             checkpoints="log", n_threads=None, progress="auto", det_sign=None) -> SimulationResult:
    """Run ``runs`` gradient-descent trajectories of a depth-``depth`` factorization.

    Each trajectory trains W = W_N ... W_1 on l(W) = 1/2 sum_Omega (W_ij - b_ij)^2 by plain
    full-batch GD, all factors stepped at once from the old ones (mathematics.md section 1.2),
    in float64.  With ``temperature > 0`` every factor entry also receives
    ``sqrt(2 lr temperature) xi`` per step, xi standard normal from a per-trajectory
    counter-based stream (noisy GD, mathematics.md section 4.3).

    Parameters
    ----------
    problem : CompletionProblem
    depth : int
        Number of factors N >= 1.
    runs : int
        Number of trajectories; their run ids are ``first_run, ..., first_run + runs - 1``.
    lr : float
        Step size eta > 0.
    init, init_scale, widths, det_sign
        Initialization, see :func:`dlnmc.init.init_factors`.  ``det_sign`` (square problems)
        keeps only inits with ``sign(det W(0)) == det_sign``.
    max_steps : int
        Step budget per trajectory.
    tol : float
        A trajectory stops as ``converged`` once its loss is <= tol; ``tol=0`` runs every
        trajectory for ``max_steps`` steps.
    seed : int
        Study seed.  Run r's result depends only on (parameters, seed, run id): bitwise the
        same for any ``n_threads`` and any split of the runs over calls.
    temperature : float
        Noise temperature 1/beta >= 0.
    checkpoints : "log", int, sequence of int or None
        Steps at which loss and W are recorded in ``history`` (see :func:`checkpoint_steps`);
        each trajectory's final state is always recorded too.
    n_threads : int, optional
        Numba threads (default: all).
    progress : bool or "auto"
        Progress bar over batches of runs ("auto": when stderr is a terminal).

    Returns
    -------
    SimulationResult
        ``final``: one row per trajectory with ``run``, ``seed``, ``depth``, ``lr``, ``init``,
        ``init_scale``, ``temperature``, ``steps``, ``loss``, ``status`` (categorical:
        converged / max_steps / diverged), ``w_<i>_<j>``, ``sv_<k>`` (descending), ``erank``
        and, for square problems, ``det_init`` and ``det``.  ``history``: ``run``, ``step``,
        ``loss``, ``w_<i>_<j>``.  ``factors``: the final factors.

    Notes
    -----
    A trajectory is ``diverged`` when its end-to-end matrix stops being finite or its loss
    exceeds ``1e12 * max(1, initial loss)``; it stops there and does not affect the others.
    """
    runs, tol, seed, first_run, temperature = _check_batch(problem, runs, tol, seed, first_run,
                                                           temperature)
    depth = _check_number("depth", depth, 1, integer=True)
    lr = _check_number("lr", lr, 0.0, strict=True)
    max_steps = _check_number("max_steps", max_steps, 0, integer=True)
    ckpt = checkpoint_steps(checkpoints, max_steps)
    dims = layer_dims(problem.shape, depth, widths)
    factors = init_factors(problem.shape, depth, runs, init, init_scale, widths, seed,
                           first_run, det_sign)
    run_ids = np.arange(first_run, first_run + runs, dtype=np.int64)
    keys = noise_keys(seed, run_ids) if temperature > 0 else np.zeros(runs, dtype=np.uint64)
    W0 = product(factors)

    theta = np.concatenate([F.reshape(runs, -1) for F in factors], axis=1)
    sizes = [dims[p + 1] * dims[p] for p in range(depth)]
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    i, j = problem.indices
    fast = _block_kernel(dims)
    if fast is None:  # the generic kernel: runtime shapes, each factor's own layout
        state, (height, width) = theta, problem.shape
    else:  # the block kernel: every factor padded with zeros to d x d
        height = width = max(dims)
        slots = block.padding(dims)
        real = slots >= 0
        state = np.zeros((runs, slots.size))
        state[:, real] = theta[:, slots[real]]
    obs = (i * width + j).astype(np.int64)
    hist_loss = np.full((runs, len(ckpt)), np.nan)
    hist_w = np.full((runs, len(ckpt), height * width), np.nan)
    w_end = np.empty((runs, height * width))
    steps = np.empty(runs, dtype=np.int64)
    loss = np.empty(runs)
    status = np.empty(runs, dtype=np.int8)
    noise_std = math.sqrt(2.0 * lr * temperature)
    stop = (max_steps, tol if tol > 0 else -np.inf, ckpt)

    show = sys.stderr.isatty() if progress == "auto" else bool(progress)
    # Threads take a few parallel iterations at a time as they free up (trajectory lengths
    # vary, other jobs may hold a core); results do not depend on the schedule.
    with thread_count(n_threads), numba.parallel_chunksize(4), \
            tqdm(total=runs, disable=not show or runs <= _BATCH, unit="traj",
                 desc="simulate") as bar:
        for lo in range(0, runs, _BATCH):
            s = slice(lo, min(lo + _BATCH, runs))
            out = (hist_loss[s], hist_w[s], w_end[s], steps[s], loss[s], status[s])
            if fast is None:
                gd.gd_batch(state[s], np.asarray(dims, dtype=np.int64), off, obs, problem.values,
                            lr, noise_std, keys[s], *stop, *out)
            else:
                fast(state[s], obs, problem.values, lr, noise_std, keys[s], slots,
                     theta.shape[1], *stop, *out)
            bar.update(s.stop - s.start)
    if fast is not None:
        theta[:, slots[real]] = state[:, real]
        entries = np.add.outer(np.arange(problem.rows) * width, np.arange(problem.cols)).ravel()
        hist_w, w_end = hist_w[:, :, entries], w_end[:, entries]

    final_factors = [theta[:, o:o + n].reshape(runs, dims[p + 1], dims[p])
                     for p, (o, n) in enumerate(zip(off, sizes))]
    W = w_end.reshape(runs, problem.rows, problem.cols)
    params = dict(problem=problem.describe(), depth=depth, runs=runs, lr=lr,
                  init=init if isinstance(init, str) else "explicit", init_scale=float(init_scale),
                  widths=list(dims[1:-1]), max_steps=max_steps, tol=tol, seed=seed,
                  first_run=first_run, temperature=temperature, det_sign=det_sign,
                  checkpoints=ckpt.tolist())
    final = _final_table(problem, W, W0, run_ids, steps, loss, status, params)
    history = _history_table(problem, run_ids, ckpt, hist_loss, hist_w, steps, loss, w_end)
    provenance = {"kind": "gd", "params": params, "versions": versions()}
    final.attrs = {"dlnmc": provenance}
    history.attrs = {"dlnmc": provenance}
    return SimulationResult(final, history, final_factors)


_PAD_LIMIT = 4
"""The block kernel runs factors padded to d x d, d = max(dims), when that holds at most this
many times the real number of factor entries (it is some 10x faster per entry than the generic
kernel)."""


def _block_kernel(dims):
    """The block kernel for d = max(dims) if d is in ``block.SIZES`` and padding every factor to
    d x d costs at most ``_PAD_LIMIT`` times the real entries, else None.  Depends on the layer
    dimensions only, so a run's result never depends on how many runs share the call."""
    d = max(dims)
    real = sum(n * m for n, m in zip(dims[1:], dims[:-1]))
    if d in block.SIZES and (len(dims) - 1) * d * d <= _PAD_LIMIT * real:
        return block.block_kernel(d)
    return None


def _status_column(codes) -> pd.Categorical:
    return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int8), categories=list(STATUSES))


def _final_table(problem, W, W0, run_ids, steps, loss, status, params) -> pd.DataFrame:
    n = len(run_ids)
    cols = {
        "run": run_ids,
        "seed": np.full(n, params["seed"], dtype=np.int64),
        "depth": np.full(n, params["depth"]),  # int64; float64 for the flow's N = inf
        "lr": np.full(n, params["lr"]),
        "init": pd.Categorical([params["init"]] * n),
        "init_scale": np.full(n, params["init_scale"]),
        "temperature": np.full(n, params["temperature"]),
        "steps": steps,
        "loss": loss,
        "status": _status_column(status),
    }
    cols.update(zip(entry_columns(problem.shape), W.reshape(n, -1).T))
    spectral = spectral_columns(W)
    if problem.is_square:
        cols["det_init"] = np.linalg.det(W0)
    cols.update(spectral)
    return pd.DataFrame(cols)


def _history_table(problem, run_ids, ckpt, hist_loss, hist_w, steps, loss, w_end) -> pd.DataFrame:
    """Checkpoints reached by each run plus its final state, sorted by (run, step)."""
    runs, C = hist_loss.shape
    step_grid = np.broadcast_to(ckpt, (runs, C))
    reached = step_grid <= steps[:, None]
    # The final state, unless it already sits on a checkpoint.
    extra = ~np.any(step_grid == steps[:, None], axis=1)
    run_col = np.concatenate([np.broadcast_to(run_ids[:, None], (runs, C))[reached], run_ids[extra]])
    step_col = np.concatenate([step_grid[reached], steps[extra]])
    loss_col = np.concatenate([hist_loss[reached], loss[extra]])
    w_col = np.concatenate([hist_w[reached], w_end[extra]])
    order = np.lexsort((step_col, run_col))
    cols = {"run": run_col[order], "step": step_col[order].astype(np.int64), "loss": loss_col[order]}
    cols.update(zip(entry_columns(problem.shape), w_col[order].T))
    return pd.DataFrame(cols)
