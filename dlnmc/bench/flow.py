"""End-to-end flow benchmark: trajectories per second of :func:`dlnmc.flow.simulate_flow` to a
fixed time tau against ``scipy.integrate.solve_ivp`` on the same ODE, measured in one process.

Both integrate dW/dtau = -Abar_{N,W}(P_Omega(W - b)) (mathematics.md section 2) from the same
initial matrices (balanced init, scale 0.1, on the 2x2 / 3x3 diagonal tasks) to tau = 20 with
the same Dormand-Prince 5(4) pair (scipy's ``RK45``) and the same ``rtol``/``atol``, with no
stopping rule (``tol = 0``) and no checkpoints.  The baseline's right-hand side is plain NumPy
(full SVD, the same stable metric eigenvalues, two matrix products) and solve_ivp runs one
trajectory at a time; dlnmc runs the batch on all threads, timed through the public call
(validation and tables included) after a warm-up call that compiles or loads the kernels.
The endpoints of both are compared (``max_abs_diff``) so that a fast wrong answer shows.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from scipy.integrate import solve_ivp

from dlnmc.flow import simulate_flow
from dlnmc.init import init_factors, product
from dlnmc.problems import diagonal_2x2, diagonal_3x3

__all__ = ["run", "numpy_velocity"]

_TAU = 20.0
_RTOL, _ATOL = 1e-8, 1e-12
_CASES = [(d, depth) for d in (2, 3) for depth in (5, np.inf)]


def numpy_velocity(W, mask, targets, depth):
    """-Abar_{N,W}(P_Omega(W - b)) for one square W in NumPy: W = U S V^T, lam_il in the
    stable form s_hi^{2(N-1)/N} expm1(-u) / (N expm1(-u/N)), u = 2 log(s_hi / s_lo) (N = inf:
    the logarithmic mean s_hi^2 (-expm1(-u)) / u), then U [lam o (U^T G V)] V^T."""
    G = mask * (W - targets)
    U, s, Vt = np.linalg.svd(W)
    hi, lo = np.maximum.outer(s, s), np.minimum.outer(s, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 2.0 * np.log(hi / lo)
        if np.isinf(depth):
            ratio = -np.expm1(-u) / u
            top = hi**2
        else:
            ratio = np.expm1(-u) / (depth * np.expm1(-u / depth))
            top = hi ** (2.0 - 2.0 / depth)
    lam = top * np.where(hi == lo, 1.0, ratio)
    return -(U @ (lam * (U.T @ G @ Vt.T)) @ Vt)


def _scipy(problem, W0, depth):
    mask, targets, shape = problem.mask, problem.targets, problem.shape

    def rhs(_t, y):
        return numpy_velocity(y.reshape(shape), mask, targets, depth).ravel()

    out = np.empty_like(W0)
    for r, W in enumerate(W0):
        sol = solve_ivp(rhs, (0.0, _TAU), W.ravel(), method="RK45", rtol=_RTOL, atol=_ATOL)
        out[r] = sol.y[:, -1].reshape(shape)
    return out


def _engine(problem, W0, depth):
    result = simulate_flow(problem, depth, len(W0), init=W0, t_max=_TAU, tol=0.0, rtol=_RTOL,
                           atol=_ATOL, checkpoints=None, progress=False)
    cols = [c for c in result.final.columns if c.startswith("w_")]
    return result.final[cols].to_numpy().reshape(W0.shape), result.final["steps"].to_numpy()


def _rate(call, count):
    """Trajectories per second of ``call()``, which runs ``count`` trajectories."""
    start = time.perf_counter()
    call()
    return count / (time.perf_counter() - start)


def run(quick: bool = False) -> pd.DataFrame:
    """One row per (d, depth): ``engine_traj_per_s``, ``scipy_traj_per_s`` (each the best of
    ``rounds`` timed calls, engine and baseline alternating), ``ratio``, ``mean_steps`` (accepted
    steps per trajectory, dlnmc) and ``max_abs_diff`` between the endpoints of the
    trajectories both ran."""
    n_engine, n_scipy, rounds = (400, 2, 2) if quick else (2000, 5, 3)
    rows = []
    for d, depth in _CASES:
        problem = diagonal_2x2() if d == 2 else diagonal_3x3()
        W0 = product(init_factors(problem.shape, 1, n_engine, "balanced", 0.1, seed=1))
        W_end, steps = _engine(problem, W0, depth)  # also compiles or loads the kernels
        W_ref = _scipy(problem, W0[:n_scipy], depth)
        engine, scipy = 0.0, 0.0
        for _ in range(rounds):  # best of rounds: a transient load must not decide the ratio
            engine = max(engine, _rate(lambda: _engine(problem, W0, depth), n_engine))
            scipy = max(scipy, _rate(lambda: _scipy(problem, W0[:n_scipy], depth), n_scipy))
        rows.append({"d": d, "depth": float(depth), "tau": _TAU, "rtol": _RTOL, "atol": _ATOL,
                     "engine_traj_per_s": engine, "scipy_traj_per_s": scipy,
                     "ratio": engine / scipy, "mean_steps": steps.mean(),
                     "max_abs_diff": np.abs(W_end[:n_scipy] - W_ref).max()})
    return pd.DataFrame(rows)
