"""Engine benchmark: trajectory-steps per second of :func:`dlnmc.simulate` against two
yardsticks measured in the same process: a plain NumPy batched implementation of the same
gradient descent, and the step-only kernel (:mod:`dlnmc.bench.step_only`: the block kernel's
arithmetic without loss, stop test or bookkeeping, i.e. what the hardware gives).

The NumPy baseline keeps each factor as one ``(B, n_p, n_{p-1})`` array (for square problems
the ``(B, N, d, d)`` state, split by layer) and steps every trajectory at once with
``np.matmul`` over the batch (forward prefix products, residual and loss, backpropagation,
update), single-threaded as NumPy is.  The engine and the step-only kernel run on all Numba
threads.  All three run every trajectory for every step (``tol = 0`` for the engine) from the
same well-conditioned explicit initial factors (identity plus 0.1 times Gaussian noise) at a
stable step size; the engine is timed through the public ``simulate`` call (validation,
packing and result tables included) after a warm-up call that compiles or loads the kernel,
whose name the result's provenance gives (``final.attrs["dlnmc"]["params"]["kernel"]``: the
registry chooses, not this module).  The step-only kernel runs the block kernel's padded
factors, so its column is NaN where the engine runs another kernel.  Each timed call is sized
by a calibration run to last about the same time.  The machine is shared (other jobs, and on
a virtual machine its neighbours, slow it by tens of percent for seconds at a time), so the
three are timed in alternation, one call each per round, and each ratio reported is the
median of the rounds' ratios, with the lowest round beside it.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from dlnmc.bench import step_only
from dlnmc.init import layer_dims
from dlnmc.problems import diagonal_3x3, razin_cohen_2x2, random_low_rank
from dlnmc.simulate import simulate

__all__ = ["run", "numpy_gd"]

_LR = 1e-3
_CASES = ([(d, d, depth, d, None) for d in (2, 3) for depth in (2, 5, 10, 20)]
          + [(8, 8, 5, 8, None), (8, 8, 5, 9, None), (3, 5, 3, 3, None), (12, 12, 4, 12, None),
             (30, 30, 3, 30, 8), (100, 100, 3, 100, 2)])
"""(rows, cols, depth, hidden width, runs or None for the suite's batch): the studies' sizes;
d = 8 on the block kernel, d = 8 with width 9 and a 3 x 5 problem (the block kernel with
factors padded to 9 x 9 and 5 x 5), 12 x 12 (above the block kernel's sizes: the generic
kernel) and two few-run large problems on the BLAS kernel."""


def _problem(rows, cols):
    if (rows, cols) == (2, 2):
        return razin_cohen_2x2()
    if (rows, cols) == (3, 3):
        return diagonal_3x3()
    return random_low_rank(rows, cols, 2, n_observed=rows * cols // 2, seed=0)


def _factors(shape, depth, width, batch, seed=0):
    """Factors W_1, ..., W_N ``(batch, n_p, n_{p-1})``: identity (padded with zeros) plus 0.1
    times standard normal noise."""
    rng = np.random.default_rng(seed)
    dims = layer_dims(shape, depth, [width] * (depth - 1))
    return [np.eye(a, b) + 0.1 * rng.standard_normal((batch, a, b))
            for a, b in zip(dims[1:], dims[:-1])]


def numpy_gd(problem, factors, lr, steps):
    """Plain NumPy batched GD on the factors (W_1 first, each ``(B, n_p, n_{p-1})``).

    Same mathematics as the engine (mathematics.md section 1.2): prefix products, residual
    P_Omega(W - b), loss, backpropagation A_{p-1} = W_p^T A_p, gradient A_p P_{p-1}^T, every
    factor updated from the old ones; ``np.matmul`` over the batch.  Returns the factors and
    the last losses.
    """
    W = [F.copy() for F in factors]
    mask, target = problem.mask, problem.targets
    loss = None
    for _ in range(steps):
        prefix = [W[0]]
        for F in W[1:]:
            prefix.append(np.matmul(F, prefix[-1]))
        A = mask * (prefix[-1] - target)
        loss = 0.5 * np.sum(A * A, axis=(1, 2))
        grads = [None] * len(W)
        for p in range(len(W) - 1, 0, -1):
            grads[p] = np.matmul(A, np.swapaxes(prefix[p - 1], 1, 2))
            A = np.matmul(np.swapaxes(W[p], 1, 2), A)
        grads[0] = A
        for F, G in zip(W, grads):
            F -= lr * G
    return W, loss


def _engine(problem, factors, steps):
    widths = [F.shape[1] for F in factors[:-1]]
    return simulate(problem, len(factors), factors[0].shape[0], _LR, init=factors,
                    widths=widths, max_steps=steps, tol=0.0, checkpoints=None, progress=False)


def _seconds(call, steps):
    start = time.perf_counter()
    call(steps)
    return time.perf_counter() - start


def _steps_for(call, seconds):
    """Steps that make ``call(steps)`` last about ``seconds``, from the time of one step (the
    fixed cost of a call) and of probes growing until one lasts four times that and a quarter
    of ``seconds``.  Where the fixed cost alone exceeds half of ``seconds``, the steps make
    up half of it."""
    fixed = _seconds(call, 1)
    target = max(seconds / 4, 4 * fixed)
    steps, elapsed = 1, fixed
    while elapsed < target:
        steps = int(steps * min(100.0, max(2.0, 2 * target / max(elapsed, 1e-6))))
        elapsed = _seconds(call, steps)
    per_step = max(elapsed - fixed, 1e-9) / (steps - 1)
    return max(1, round(max(seconds - fixed, seconds / 2) / per_step))


def _paired_rates(calls, batch, seconds, rounds):
    """Steps per second of each of ``calls`` (the engine first), timed in alternation.

    Each round times every call once, back to back, so that a slow phase of the shared
    machine hits all of a round.  Returns each call's best rate and, for every other call, the
    median and lowest over rounds of engine rate / its rate.
    """
    sized = [(call, _steps_for(call, seconds)) for call in calls]
    rates = np.array([[batch * steps / _seconds(call, steps) for call, steps in sized]
                      for _ in range(rounds)])
    ratios = rates[:, :1] / rates[:, 1:]
    return rates.max(axis=0), np.median(ratios, axis=0), ratios.min(axis=0)


def run(quick: bool = False) -> pd.DataFrame:
    """Measure the engine, the NumPy baseline and the step-only kernel on every benchmark case.

    Parameters
    ----------
    quick : bool
        Batch 1000, about 0.1 s per timed call and 3 rounds instead of batch 10^4, about 0.7 s
        and 5 rounds (the BLAS cases keep their few runs).

    Returns
    -------
    pandas.DataFrame
        One row per case: ``rows``, ``cols``, ``depth``, ``width`` (hidden), ``batch``,
        ``kernel`` (the registry's choice, from the result's provenance),
        ``engine_steps_per_s``, ``numpy_steps_per_s`` and ``step_only_steps_per_s`` (best
        round of each; step-only NaN off the block kernel), ``numpy_ratio`` and
        ``step_only_ratio`` (median over rounds of engine rate / that rate, each round timing
        all three back to back) and ``numpy_ratio_min``, ``step_only_ratio_min`` (the lowest
        round).
    """
    suite_batch, seconds, rounds = (1000, 0.1, 3) if quick else (10_000, 0.7, 5)
    rows = []
    for n_rows, n_cols, depth, width, runs in _CASES:
        batch = runs or suite_batch
        problem = _problem(n_rows, n_cols)
        factors = _factors(problem.shape, depth, width, batch)
        few = [F[:8] for F in factors]
        warm = _engine(problem, few, 10)  # compile or load the kernel
        kernel = warm.final.attrs["dlnmc"]["params"]["kernel"]
        calls = [lambda s: _engine(problem, factors, s),
                 lambda s: numpy_gd(problem, factors, _LR, s)]
        if kernel == "block":
            step_only.run(problem, few, _LR, 10)
            calls.append(lambda s: step_only.run(problem, factors, _LR, s))
        best, ratio, lowest = _paired_rates(calls, batch, seconds, rounds)
        row = dict(rows=n_rows, cols=n_cols, depth=depth, width=width, batch=batch,
                   kernel=kernel, engine_steps_per_s=best[0], numpy_steps_per_s=best[1],
                   step_only_steps_per_s=np.nan, numpy_ratio=ratio[0],
                   numpy_ratio_min=lowest[0], step_only_ratio=np.nan, step_only_ratio_min=np.nan)
        if kernel == "block":
            row.update(step_only_steps_per_s=best[2], step_only_ratio=ratio[1],
                       step_only_ratio_min=lowest[1])
        rows.append(row)
    table = pd.DataFrame(rows)
    table["kernel"] = table["kernel"].astype("category")
    return table
