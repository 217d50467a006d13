"""Engine benchmark: trajectory-steps per second of :func:`dlnmc.simulate` against a plain
NumPy batched implementation of the same gradient descent, measured in the same process.

The NumPy baseline keeps each factor as one ``(B, n_p, n_{p-1})`` array (for square problems
the ``(B, N, d, d)`` state, split by layer) and steps every trajectory at once with
``np.matmul`` over the batch (forward prefix products, residual and loss,
backpropagation, update), single-threaded as NumPy is.  The engine runs on all Numba threads.
Both run ``tol = 0`` (every trajectory takes every step) from the same well-conditioned
explicit initial factors (identity plus 0.1 times Gaussian noise) at a stable step size; the
engine is timed through the public ``simulate`` call (validation and result tables included)
after a warm-up call that compiles or loads the kernel.  Timed calls are sized from a short
calibration call to last about the same time in every case.  The machine is shared (other
jobs, and on a virtual machine its neighbours, slow it by tens of percent for seconds at a
time), so engine and baseline are timed in alternation, a pair per round, and the ratio
reported is the median of the rounds' ratios.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from dlnmc.init import layer_dims
from dlnmc.problems import diagonal_3x3, razin_cohen_2x2, random_low_rank
from dlnmc.simulate import _block_kernel, simulate

__all__ = ["run", "numpy_gd"]

_LR = 1e-3
_CASES = ([(d, d, depth, d) for d in (2, 3) for depth in (2, 5, 10, 20)]
          + [(8, 8, 5, 8), (8, 8, 5, 9), (3, 5, 3, 3), (12, 12, 4, 12)])
"""(rows, cols, depth, hidden width): the studies' sizes, d = 8 on the block kernel, d = 8
with width 9 and a 3 x 5 problem (the block kernel with factors padded to 9 x 9 and 5 x 5),
and 12 x 12 (above the block kernel's sizes), which only the generic kernel runs."""


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


def _steps_for(call, batch, seconds, probe):
    """Steps that make ``call(steps)`` last about ``seconds``, from a ``probe``-step call."""
    start = time.perf_counter()
    call(probe)
    guess = batch * probe / (time.perf_counter() - start)
    return max(probe, int(guess * seconds / batch))


def _paired_rates(engine, baseline, batch, seconds, rounds):
    """Steps per second of the engine and the baseline, timed in alternation.

    Each round times one engine call and one baseline call of about ``seconds`` each, back to
    back, so that a slow phase of the shared machine hits both of a pair.  Returns the best
    rate of each and the median and lowest of the per-round ratios.
    """
    calls = [(engine, _steps_for(engine, batch, seconds, probe=200)),
             (baseline, _steps_for(baseline, batch, seconds, probe=3))]
    rates = np.empty((rounds, 2))
    for r in range(rounds):
        for k, (call, steps) in enumerate(calls):
            start = time.perf_counter()
            call(steps)
            rates[r, k] = batch * steps / (time.perf_counter() - start)
    ratios = rates[:, 0] / rates[:, 1]
    return rates[:, 0].max(), rates[:, 1].max(), np.median(ratios), ratios.min()


def run(quick: bool = False) -> pd.DataFrame:
    """Measure the engine and the NumPy baseline on every benchmark case.

    Parameters
    ----------
    quick : bool
        Batch 1000, about 0.1 s per timed call and 3 rounds instead of batch 10^4, about 0.7 s
        and 5 rounds.

    Returns
    -------
    pandas.DataFrame
        One row per case: ``rows``, ``cols``, ``depth``, ``width`` (hidden), ``batch``,
        ``engine_steps_per_s`` and ``numpy_steps_per_s`` (best round of each), ``ratio``
        (median over rounds of engine / NumPy, each round timing both back to back),
        ``ratio_min`` (the lowest round) and ``kernel`` (``block`` or ``generic``: which kernel
        ``simulate`` chose).
    """
    batch, seconds, rounds = (1000, 0.1, 3) if quick else (10_000, 0.7, 5)
    rows = []
    for n_rows, n_cols, depth, width in _CASES:
        problem = _problem(n_rows, n_cols)
        factors = _factors(problem.shape, depth, width, batch)
        _engine(problem, [F[:8] for F in factors], 10)  # compile or load the kernel
        engine, baseline, ratio, ratio_min = _paired_rates(
            lambda s: _engine(problem, factors, s),
            lambda s: numpy_gd(problem, factors, _LR, s), batch, seconds, rounds)
        fast = _block_kernel(layer_dims(problem.shape, depth, width)) is not None
        rows.append(dict(rows=n_rows, cols=n_cols, depth=depth, width=width, batch=batch,
                         engine_steps_per_s=engine, numpy_steps_per_s=baseline, ratio=ratio,
                         ratio_min=ratio_min, kernel="block" if fast else "generic"))
    table = pd.DataFrame(rows)
    table["kernel"] = table["kernel"].astype("category")
    return table
