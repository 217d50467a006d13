"""The public engine: validate -> init -> Numba kernel -> tidy tables.

Plain full-batch gradient descent on the factors of W = W_N ... W_1 (mathematics.md section 1.2),
optionally with Gaussian noise (noisy GD, section 4), for a batch of independent trajectories.
"""
from __future__ import annotations

import math
import sys

import numpy as np
from tqdm.auto import tqdm

from dlnmc import kernels
from dlnmc._engine import (check_batch, check_number, final_table, history_table, log_grid,
                           stamp, thread_count)
from dlnmc.init import init_factors, layer_dims, noise_keys, product
from dlnmc.kernels.task import OPTIMIZERS, RMSPROP_EPS, Batch, Task
from dlnmc.results import SimulationResult

__all__ = ["simulate", "checkpoint_steps", "thread_count"]

_BATCH = 1 << 16
"""Runs per kernel call (the progress bar's unit); results do not depend on it (trajectories
are independent).  Large: every call costs a parallel region's start, some 20 ms on a loaded
machine."""

OBJECTIVES = ("half_sse", "mse")
"""What GD descends (see :func:`simulate`)."""


def checkpoint_steps(checkpoints, max_steps) -> np.ndarray:
    """Sorted unique checkpoint steps in ``[0, max_steps]``.

    ``"log"``: step 0 and about ten log-spaced steps per decade up to ``max_steps``;
    an int n: n log-spaced steps from 1 (plus step 0); a sequence: those steps;
    ``None``: none (no history beyond each trajectory's final state).
    """
    return log_grid(checkpoints, 1, max_steps, "steps")


def simulate(problem, depth, runs, lr, init="balanced", init_scale=1e-3, widths=None,
             max_steps=10**5, tol=1e-8, seed=0, first_run=0, temperature=0.0,
             checkpoints="log", n_threads=None, progress="auto", det_sign=None,
             optimizer="gd", objective="half_sse") -> SimulationResult:
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
    optimizer : {"gd", "rmsprop"}
        ``"gd"``: plain GD.  ``"rmsprop"``: the global adaptive step of Arora, Cohen, Hu & Luo
        (2019), one step size per trajectory from the running average of its squared gradient
        norm (mathematics.md section 1.6); noise-free only.
    objective : {"half_sse", "mse"}
        The function descended: l = 1/2 sum_Omega (W_ij - b_ij)^2, or Arora et al.'s mean
        squared error (1/m) sum_Omega (W_ij - b_ij)^2 = (2/m) l, m = |Omega| (mathematics.md
        section 1.6).  ``tol`` and the ``loss`` columns are in units of l either way.

    Returns
    -------
    SimulationResult
        ``final``: one row per trajectory with ``run``, ``seed``, ``depth``, ``lr``, ``init``,
        ``init_scale``, ``widths`` (hidden widths, e.g. ``"2x2"``), ``temperature``, ``steps``, ``loss``, ``status`` (categorical:
        converged / max_steps / diverged), ``w_<i>_<j>``, ``sv_<k>`` (descending), ``erank``
        and, for square problems, ``det_init`` and ``det``.  ``history``: ``run``, ``step``,
        ``loss``, ``w_<i>_<j>``.  ``factors``: the final factors.

    Notes
    -----
    A trajectory is ``diverged`` when its end-to-end matrix stops being finite or its loss
    exceeds ``1e12 * max(1, initial loss)``; it stops there and does not affect the others.
    """
    runs, tol, seed, first_run, temperature = check_batch(problem, runs, tol, seed, first_run,
                                                          temperature)
    depth = check_number("depth", depth, 1, integer=True)
    lr = check_number("lr", lr, 0.0, strict=True)
    max_steps = check_number("max_steps", max_steps, 0, integer=True)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if temperature > 0 and (optimizer, objective) != ("gd", "half_sse"):
        raise ValueError("temperature > 0 (noisy GD) needs optimizer='gd' and "
                         f"objective='half_sse', got {optimizer!r} and {objective!r}")
    ckpt = checkpoint_steps(checkpoints, max_steps)
    dims = layer_dims(problem.shape, depth, widths)
    factors = init_factors(problem.shape, depth, runs, init, init_scale, widths, seed,
                           first_run, det_sign)
    run_ids = np.arange(first_run, first_run + runs, dtype=np.int64)
    keys = noise_keys(seed, run_ids) if temperature > 0 else np.zeros(runs, dtype=np.uint64)
    W0 = product(factors)

    i, j = problem.indices
    # the objective (2/m) l: GD's step scales by 2/m; RMSprop's is invariant but for its eps
    scale = 1.0 if objective == "half_sse" else 2.0 / len(problem.values)
    task = Task(tuple(dims), (i * problem.cols + j).astype(np.int64), problem.values,
                lr * scale if optimizer == "gd" else lr, math.sqrt(2.0 * lr * temperature),
                max_steps, tol if tol > 0 else -np.inf, ckpt, optimizer, RMSPROP_EPS / scale)
    kernel = kernels.choose(task)
    theta = np.concatenate([F.reshape(runs, -1) for F in factors], axis=1)
    batch = Batch.allocate(task, theta, keys)

    show = sys.stderr.isatty() if progress == "auto" else bool(progress)
    with thread_count(n_threads), tqdm(total=runs, disable=not show or runs <= _BATCH,
                                              unit="traj", desc="simulate") as bar:
        for lo in range(0, runs, _BATCH):
            s = slice(lo, min(lo + _BATCH, runs))
            kernel.run(task, batch.rows(s))
            bar.update(s.stop - s.start)

    final_factors = [theta[:, o:o + n].reshape(runs, dims[p + 1], dims[p])
                     for p, (o, n) in enumerate(zip(task.offsets, task.sizes))]
    W = batch.w_end.reshape(runs, problem.rows, problem.cols)
    params = dict(problem=problem.describe(), depth=depth, runs=runs, lr=lr,
                  init=init if isinstance(init, str) else "explicit", init_scale=float(init_scale),
                  widths=list(dims[1:-1]), max_steps=max_steps, tol=tol, seed=seed,
                  first_run=first_run, temperature=temperature, det_sign=det_sign,
                  checkpoints=ckpt.tolist(), optimizer=optimizer, objective=objective,
                  kernel=kernel.NAME)
    final = final_table(problem, W, W0, run_ids, batch.steps, batch.loss, batch.status, params)
    provenance = stamp("gd", params, final)

    def history():
        grid = np.broadcast_to(ckpt, batch.hist_loss.shape)
        reached = grid <= batch.steps[:, None]
        extra = ~np.any(grid == batch.steps[:, None], axis=1)  # the end is not a checkpoint
        table = history_table(problem, run_ids, reached, extra, {
            "step": (grid, batch.steps), "loss": (batch.hist_loss, batch.loss),
            "w": (batch.hist_w, batch.w_end)})
        table.attrs = {"dlnmc": provenance}
        return table

    return SimulationResult(final, history, final_factors)
