"""The public end-to-end ("downstairs") flow: finite depth, N = infinity, and Langevin.

Integrates the dynamics of the end-to-end matrix W = W_N ... W_1 itself (mathematics.md
sections 2 and 4) for a batch of trajectories, with the same result tables as
:func:`dlnmc.simulate`.  Depth N = infinity exists only here.  Square W with a small singular
value are integrated in SVD coordinates, so that det W keeps its sign and its size is resolved
in relative terms however small (``log_abs_det``); :mod:`dlnmc.kernels.flow` says why and when.
"""
from __future__ import annotations

import math
import sys
from concurrent.futures import ThreadPoolExecutor
from numbers import Real

import numpy as np
from tqdm.auto import tqdm

from dlnmc._engine import (check_batch, check_number, check_threads, final_table, history_table,
                           log_grid, stamp)
from dlnmc.init import init_factors, noise_keys, product
from dlnmc.kernels import flow as kernels
from dlnmc.results import SimulationResult, entry_columns

__all__ = ["simulate_flow", "checkpoint_times"]

_CHUNK = 256
"""Most runs per kernel call; results do not depend on it (trajectories are independent)."""


def checkpoint_times(checkpoints, t_max) -> np.ndarray:
    """Sorted unique checkpoint times (CMV's normalized clock tau) in ``[0, t_max]``.

    ``"log"``: tau = 0 and ten log-spaced times per decade from ``min(0.01, t_max)`` to
    ``t_max``; an int n: tau = 0 and n log-spaced times over that range; a sequence: those
    times; ``None``: none (the history then holds each trajectory's final state only).
    """
    return log_grid(checkpoints, min(0.01, t_max), t_max, "times")


def _check_depth(depth) -> float:
    if isinstance(depth, Real) and not isinstance(depth, bool) and depth == math.inf:
        return math.inf
    return float(check_number("depth (an integer >= 1 or numpy.inf)", depth, 1, integer=True))


def _initial_matrices(problem, depth, runs, init, init_scale, seed, first_run, det_sign):
    """W(0) for every run: the product of :func:`dlnmc.init.init_factors` (depth 1 for N =
    inf), or an explicit ``(runs, rows, cols)`` array."""
    if isinstance(init, str):
        law_depth = int(depth) if math.isfinite(depth) else 1
        return product(init_factors(problem.shape, law_depth, runs, init, init_scale, None, seed,
                                    first_run, det_sign))
    W0 = np.array(init, dtype=np.float64, order="C")
    want = (runs, *problem.shape)
    if W0.shape != want:
        raise ValueError(f"explicit init has shape {W0.shape}, expected (runs, rows, cols) = {want}")
    if not np.all(np.isfinite(W0)):
        raise ValueError("explicit init has non-finite entries")
    if det_sign not in (None, 1, -1):
        raise ValueError(f"det_sign must be None, 1 or -1, got {det_sign!r}")
    if det_sign is not None:
        if not problem.is_square:
            raise ValueError("det_sign needs a square problem")
        if np.any(np.sign(np.linalg.det(W0)) != det_sign):
            raise ValueError(f"explicit init has runs whose det sign is not {det_sign}")
    return W0


def simulate_flow(problem, depth, runs, init="balanced", init_scale=1e-3, t_max=1e4, tol=1e-8,
                  seed=0, first_run=0, temperature=0.0, checkpoints="log", n_threads=None,
                  progress="auto", rtol=1e-8, atol=1e-12, dt=1e-3, det_sign=None,
                  max_steps=10**7) -> SimulationResult:
    """Run ``runs`` trajectories of the end-to-end flow of a depth-``depth`` linear network.

    Deterministic (``temperature == 0``): the balanced gradient flow of the product in CMV's
    normalized clock tau (Cohen, Menon & Veraszto 2023; mathematics.md section 2.2),

        dW/dtau = -Abar_{N,W}(G),  G = P_Omega(W - b),  tau = N t,

    t = lr * steps being the clock of GD on the factors.  Abar is applied through the SVD of W
    with the metric eigenvalues lam_il in their stable log/expm1 form, for any integer N >= 1
    and for N = inf (logarithmic mean), so rank-deficient W and coincident singular values are
    handled exactly.  Integrator: Dormand-Prince 5(4) with scipy's ``RK45`` error control
    (RMS norm of the local error over ``atol + rtol * |W|``, safety 0.9, step factors in
    [0.2, 10]), one adaptive step size per trajectory.  Square W at depth N >= 2 with
    s_min <= 1e-3 s_max and well separated singular values are integrated in SVD coordinates
    (log s, U, V) with the error scale ``rtol`` on each (so small singular values, and
    det W = sign * exp(sum log s), are resolved in relative terms: the sign of det W is kept,
    as it is by the exact flow; Razin & Cohen 2020); see :mod:`dlnmc.kernels.flow`.

    Langevin (``temperature = T > 0``): the Riemannian Langevin equation of mathematics.md
    section 4, dW = [-Abar(G) + T rho^{-1} div(rho Abar)] dtau + sqrt(2 T) Abar^{1/2} dB,
    whose invariant density is exp(-l/T) dvol_{g^N}; Euler-Maruyama with fixed step ``dt``,
    the divergence term in closed form (:func:`dlnmc.kernels.flow.langevin_correction`).
    Noise: run r's k-th normal at step n is ``normal(noise_keys(seed, [r]), n d d' + k)``.

    Parameters
    ----------
    problem : CompletionProblem
    depth : int or numpy.inf
        Depth N >= 1 of the network.
    runs : int
        Number of trajectories; their run ids are ``first_run, ..., first_run + runs - 1``.
    init : {"balanced", "gaussian"} or ndarray
        Law of W(0): the product of :func:`dlnmc.init.init_factors` at this depth (the same
        seed and run id give bitwise the same W(0) as :func:`dlnmc.simulate`; for N = inf the
        law is drawn at depth 1, i.e. W(0) has i.i.d. N(0, init_scale^2) entries for both
        laws), or explicit matrices of shape ``(runs, rows, cols)``.
    init_scale : float
        Standard deviation of W(0)'s entries (random laws).
    t_max : float
        Final time in the normalized clock tau (default 1e4).
    tol : float
        A trajectory stops as ``converged`` once its loss is <= tol after a step; ``tol=0``
        runs every trajectory to ``t_max``.
    seed, first_run : int
        Study seed and first run id.  Run r's result depends only on (parameters, seed, run id):
        bitwise the same for any ``n_threads`` and any split of the runs over calls.
    temperature : float
        T = 1/beta >= 0.  T > 0 needs W(0) of full rank, and rectangular problems need a
        finite depth (for N = inf the metric degenerates off square matrices).
    checkpoints : "log", int, sequence of float or None
        Times tau at which loss and W are recorded in ``history``
        (:func:`checkpoint_times`).  Deterministic flow: by dense output (Shampine's quartic
        interpolant, same order as the local error), at exactly these times.  Langevin: the
        state after the first step at or after each time, with that step's time.
    n_threads : int, optional
        Threads running slices of the batch (default: ``numba.get_num_threads()``).
    progress : bool or "auto"
        Progress bar over batches of runs ("auto": when stderr is a terminal).
    rtol, atol : float
        Error tolerances of the deterministic integrator (default 1e-8 and 1e-12).
    dt : float
        Euler-Maruyama step in tau (Langevin only; default 1e-3); the last step is shortened
        to end at ``t_max``.
    det_sign : {None, 1, -1}
        Square problems: keep only W(0) with ``sign(det W(0)) == det_sign`` (random laws are
        redrawn per run as in :func:`dlnmc.init.init_factors`; explicit inits are checked).
    max_steps : int
        Budget of accepted steps per deterministic trajectory (status ``max_steps`` when
        spent); the Langevin scheme always takes ceil(t_max / dt) steps.

    Returns
    -------
    SimulationResult
        ``final``: the columns of :func:`dlnmc.simulate` (``run``, ``seed``, ``depth``,
        ``lr``, ``init``, ``init_scale``, ``temperature``, ``steps``, ``loss``, ``status``,
        ``w_<i>_<j>``, ``sv_<k>``, ``erank``, square: ``det_init``, ``det``) plus ``time_tau``,
        the time reached, and, square, ``log_abs_det``.  ``det`` and ``log_abs_det`` come from
        the integrator's state: in SVD coordinates sign(det U det V) exp(sum log s) and
        sum log s (a det below the float64 range underflows to a zero of the right sign, its
        size stays in ``log_abs_det``), else ``np.linalg.det``/``slogdet`` of the entries;
        ``sv_<k>`` and ``erank`` are those of the entries.  Differences: ``depth`` is float64
        (so that N = inf is ``inf``; concatenation with engine tables gives float64), ``lr``
        is NaN, ``steps`` counts accepted integrator steps.  Status: ``converged`` (loss <=
        tol), ``max_steps`` (tau reached t_max, or the step budget was spent), ``diverged``
        (W not finite, loss above 1e12 * max(1, initial loss), or the step size underflowed).
        ``history``: ``run``,
        ``step``, ``time_tau``, ``loss``, ``w_<i>_<j>`` (square: ``det``, ``log_abs_det`` from
        the state as above; dense output in the coordinates of the step) at the checkpoints
        reached plus the final state.  ``factors``: None.
    """
    runs, tol, seed, first_run, temperature = check_batch(problem, runs, tol, seed, first_run,
                                                           temperature)
    depth = _check_depth(depth)
    t_max = check_number("t_max", t_max, 0.0, strict=True)
    rtol = check_number("rtol", rtol, 1e-14)
    atol = check_number("atol", atol, 0.0)
    dt = check_number("dt", dt, 0.0, strict=True)
    max_steps = check_number("max_steps", max_steps, 1, integer=True)
    n_threads = check_threads(n_threads)
    if rtol >= 1.0:
        raise ValueError(f"rtol must be below 1, got {rtol}")
    ckpt = checkpoint_times(checkpoints, t_max)
    W = _initial_matrices(problem, depth, runs, init, init_scale, seed, first_run, det_sign)
    W0 = W.copy()
    if temperature > 0:
        if not problem.is_square and math.isinf(depth):
            raise ValueError("temperature > 0 with depth = inf needs a square problem "
                             "(the N = inf metric is degenerate on rectangular matrices)")
        if np.any(np.linalg.svd(W, compute_uv=False)[:, -1] == 0.0):
            raise ValueError("temperature > 0 needs W(0) of full rank (the volume density "
                             "is infinite on rank-deficient matrices)")

    run_ids = np.arange(first_run, first_run + runs, dtype=np.int64)
    i, j = problem.indices
    inv_depth = 0.0 if math.isinf(depth) else 1.0 / depth
    C, size = len(ckpt), problem.rows * problem.cols
    hist_time = np.full((runs, C), np.nan)
    hist_step = np.full((runs, C), -1, dtype=np.int64)
    hist_loss = np.full((runs, C), np.nan)
    hist_w = np.full((runs, C, size), np.nan)
    time_tau = np.empty(runs)
    steps = np.empty(runs, dtype=np.int64)
    loss = np.empty(runs)
    status = np.empty(runs, dtype=np.int8)
    # log|det W| and sign(det W) carried by the state (SVD coordinates); NaN: from W's entries
    hist_logdet, hist_sign = np.full((runs, C), np.nan), np.full((runs, C), np.nan)
    logdet, sign = np.full(runs, np.nan), np.full(runs, np.nan)
    stop = tol if tol > 0 else -np.inf

    per_run = (hist_time, hist_step, hist_loss, hist_w, time_tau, steps, loss, status)
    if temperature > 0:
        kernel, settings = kernels.langevin_batch, (inv_depth, temperature, dt, t_max, stop)
        per_run = (noise_keys(seed, run_ids), *per_run)
    else:
        kernel, settings = kernels.flow_batch, (inv_depth, t_max, stop, rtol, atol, max_steps)
        per_run = (hist_time, hist_step, hist_loss, hist_w, hist_logdet, hist_sign, time_tau,
                   steps, loss, status, logdet, sign)

    def work(s):
        kernel(W[s], i, j, problem.values, *settings, ckpt, *(a[s] for a in per_run))
        return s.stop - s.start

    # The kernels are serial and release the GIL; threads take disjoint slices of runs
    # (a prange kernel would cost several times more cold compile time).
    chunk = max(1, min(_CHUNK, -(-runs // (4 * n_threads))))
    slices = [slice(lo, min(lo + chunk, runs)) for lo in range(0, runs, chunk)]
    show = sys.stderr.isatty() if progress == "auto" else bool(progress)
    with ThreadPoolExecutor(n_threads) as pool, tqdm(total=runs, disable=not show, unit="traj",
                                                     desc="flow") as bar:
        for done in pool.map(work, slices):
            bar.update(done)

    params = dict(problem=problem.describe(), depth=depth if math.isfinite(depth) else "inf",
                  runs=runs, lr=math.nan, init=init if isinstance(init, str) else "explicit",
                  init_scale=float(init_scale), t_max=t_max, tol=tol, seed=seed,
                  first_run=first_run, temperature=temperature, det_sign=det_sign,
                  checkpoints=ckpt.tolist(), rtol=rtol, atol=atol, dt=dt, max_steps=max_steps,
                  clock="normalized (tau = N t)",
                  integrator="euler-maruyama" if temperature > 0 else "dormand-prince-5(4)")
    final = final_table(problem, W, W0, run_ids, steps, loss, status, {**params, "depth": depth})
    final.insert(final.columns.get_loc("steps") + 1, "time_tau", time_tau)
    if problem.is_square:
        final["det"], final["log_abs_det"] = _determinant(W, logdet, sign)
    reached = hist_step >= 0
    extra = ~np.any(reached & (hist_time == time_tau[:, None]) & (hist_step == steps[:, None]),
                    axis=1)  # the end is not a checkpoint
    history = history_table(problem, run_ids, reached, extra, {
        "step": (hist_step, steps), "time_tau": (hist_time, time_tau),
        "loss": (hist_loss, loss), "log_abs_det": (hist_logdet, logdet),
        "sign": (hist_sign, sign), "w": (hist_w, W.reshape(runs, -1))})
    if problem.is_square:
        carried = history.pop("log_abs_det"), history.pop("sign")
        entries = history[entry_columns(problem.shape)].to_numpy().reshape(-1, *problem.shape)
        history["det"], history["log_abs_det"] = _determinant(entries, *carried)
    else:
        history = history.drop(columns=["log_abs_det", "sign"])
    stamp("flow", params, final, history)
    return SimulationResult(final, history, None)


def _determinant(W, logdet, sign):
    """det W and log|det W| of a batch of square W: from the carried (log|det|, sign) where
    given (SVD coordinates, whose det may underflow to +-0 while log|det| keeps its size),
    else from the entries (``np.linalg.det``, ``np.linalg.slogdet``)."""
    carried = ~np.isnan(sign)
    det = np.full(len(W), np.nan)
    log_abs = np.full(len(W), np.nan)
    ok = np.all(np.isfinite(W), axis=(-2, -1)) & ~carried
    if ok.any():
        det[ok] = np.linalg.det(W[ok])
        log_abs[ok] = np.linalg.slogdet(W[ok])[1]
    det[carried] = sign[carried] * np.exp(logdet[carried])
    log_abs[carried] = logdet[carried]
    return det, log_abs
