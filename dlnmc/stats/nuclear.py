"""The norm hypothesis's reference point: the minimum nuclear norm completion and the set of
all its minimizers (Gunasekar et al. 2017), and the lowest rank of an exact completion that a
local search finds (the rank hypothesis's reference, Razin & Cohen 2020)."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from threadpoolctl import threadpool_limits

from dlnmc.manifold import check_problem, nearest_rank_r_completion
from dlnmc.problems import CompletionProblem

__all__ = ["NuclearCompletion", "min_nuclear_norm_completion", "automatic_solver", "problem_key",
           "lowest_completion_rank"]

_FACE_TOL = 1e-3
"""Dual singular values above 1 - _FACE_TOL span the optimal face (see NuclearCompletion)."""

_CLARABEL_MAX_ORDER = 60
"""The automatic solver is CLARABEL when rows + cols <= this (30 x 30: 3 s, 0.4 GB), else ADMM."""

_ADMM_TOL = 1e-10
"""ADMM stops when its certified relative duality gap (||Z||_* - <Y, b>) / ||Z||_* is below
this."""

_ADMM_RELAX = 1.6
"""ADMM's over-relaxation (Boyd et al. 2011, section 3.4.3): 1.5-2x fewer iterations than 1."""

_ADMM_MAX_ITER = 50_000
"""ADMM's iteration cap (at 100 x 100 about 2.5 minutes; the problems measured need 300-3000)."""

_ADMM_CHECK_EVERY = 10
"""ADMM evaluates its duality gap (two more SVDs) every this many iterations."""


@dataclass(frozen=True)
class NuclearCompletion:
    """The minimum nuclear norm completion: its value, one minimizer, the set of all of them.

    Attributes
    ----------
    problem : CompletionProblem
    norm : float
        The attained minimum m* of ||X||_* over exact completions.
    matrix : ndarray
        One minimizer (the solver's).
    unique : bool
        Whether the minimizer is unique (the face map below is injective).
    left, right : ndarray
        U1 (rows x k), V1 (cols x k): the singular vectors of a dual certificate Y (supported on
        Omega, ||Y||_2 <= 1, <Y, X> = m*) for singular values >= 1 - 1e-3. Every minimizer is
        U1 M V1^T with M symmetric PSD (the face of the nuclear-norm ball exposed by Y), so the
        set of minimizers is {U1 M V1^T : M PSD, P_Omega(U1 M V1^T) = b}.

    Notes
    -----
    Not unique in general: on the 2x2 diagonal task every [[1, a], [a, 1]], |a| <= 1, attains
    m* = 2 (Y = I); on the 3x3 diagonal task with unit diagonal, every correlation matrix
    attains m* = 3.
    """

    problem: CompletionProblem
    norm: float
    matrix: np.ndarray
    unique: bool
    left: np.ndarray
    right: np.ndarray

    def distance(self, W) -> np.ndarray:
        """Frobenius distance from each W (..., rows, cols) to the SET of minimizers.

        Unique minimizer: ||W - X*||_F. Otherwise the projection onto the set, a small
        semidefinite program per matrix (cvxpy, CLARABEL, a few ms each): min ||U1 M V1^T - W||_F
        over M PSD with P_Omega(U1 M V1^T) = b. A projection whose nuclear norm exceeds m* by
        more than 1e-5 (relative) would betray a wrong face: it is set to NaN with a warning.
        """
        W = np.asarray(W, dtype=np.float64)
        if W.shape[-2:] != self.problem.shape or not np.all(np.isfinite(W)):
            raise ValueError(f"W must be finite with shape (..., {self.problem.shape})")
        if self.unique:
            return np.linalg.norm(W - self.matrix, axis=(-2, -1))
        flat = W.reshape((-1,) + self.problem.shape)
        k = self.left.shape[1]
        M = cp.Variable((k, k), PSD=True)
        C = cp.Parameter((k, k))
        i, j = self.problem.indices
        X = self.left @ M @ self.right.T
        proj = cp.Problem(cp.Minimize(cp.sum_squares(M - C)), [X[i, j] == self.problem.values])
        out = np.empty(len(flat))
        bad = 0
        for n, Wn in enumerate(flat):
            C.value = self.left.T @ Wn @ self.right
            proj.solve(solver="CLARABEL")
            Xn = self.left @ M.value @ self.right.T
            if np.linalg.svd(Xn, compute_uv=False).sum() > self.norm * (1 + 1e-5):
                out[n], bad = np.nan, bad + 1
            else:
                out[n] = np.linalg.norm(Xn - Wn)
        if bad:
            warnings.warn(f"{bad} projections onto the minimum nuclear norm set left the set "
                          "(face detection failed); their distance is NaN", RuntimeWarning)
        return out.reshape(W.shape[:-2])


def problem_key(problem):
    """Hashable description of everything the solvers read: the shape and the observed entries
    (problems compare by identity, but equal descriptions have equal completions)."""
    return problem.shape, tuple(problem.entries.items())


def min_nuclear_norm_completion(problem, solver=None) -> NuclearCompletion:
    """Solve min ||X||_* s.t. X_ij = b_ij on Omega (the norm hypothesis).

    Gunasekar et al. (2017) conjecture that gradient descent on a factorization from small
    initialization reaches this completion; Razin & Cohen (2020) argue against. The dual
    certificate Y (supported on Omega, ||Y||_2 <= 1, <Y, b> = m*) describes the whole set of
    minimizers (see :class:`NuclearCompletion`).

    Parameters
    ----------
    problem : CompletionProblem
    solver : {None, "ADMM"} or str, optional
        None (default): automatic, CLARABEL when rows + cols <= 60, "ADMM" above. "ADMM": the
        dedicated first-order method below. Any other string: a cvxpy solver that handles
        semidefinite cones ("CLARABEL", "SCS"), with its default settings.

    Returns
    -------
    NuclearCompletion

    Raises
    ------
    RuntimeError
        The cvxpy solver reports neither "optimal" nor "optimal_inaccurate".

    Warns
    -----
    RuntimeWarning
        ADMM stopped at its iteration cap before its relative duality gap reached 1e-10 (the
        result is returned with the gap reached).

    Notes
    -----
    CLARABEL (Goulart & Chen 2024), an interior-point method, solves the semidefinite program
    of cvxpy's ``normNuc`` (a cone of order rows + cols). Its m* is accurate to 1e-8 (relative);
    its minimizer to 1e-5 on ill-conditioned small problems (8 x 8 rank-2 truths, 40 entries:
    minimizers of rank 5-6 with singular values down to 1e-4 of the largest; 1e-7 at its
    tightest settings). Its dual is the centre of the optimal dual face, which keeps the
    singular values of Y off the face away from 1. Its dense KKT blocks grow as
    (rows + cols)^4: 3 s and 0.4 GB at 30 x 30, 14 s and 0.8 GB at 40 x 40, past 20 GB
    (unfinished after 5 minutes) at 100 x 100.

    "ADMM" splits min ||X||_* + [Z_Omega = b] s.t. X = Z (Boyd et al. 2011, section 3.1,
    scaled form, penalty rho = sqrt(|Omega|) / ||b||, over-relaxation a = 1.6):
    X = a SVT_{1/rho}(Z - U) + (1 - a) Z (singular value thresholding, Cai, Candes & Shen
    2010), Z = X with b written on Omega, U += X - Z. U stays supported on Omega, so
    Y = -U / ||U||_2 is dual feasible and <Y, b> <= m* <= ||Z||_*, Z exactly feasible. It stops
    when this certified gap is below 1e-10 ||Z||_*, and returns ``norm`` = ||Z||_* (within
    1e-10 relative of m*), ``matrix`` = Z and the face of Y. Measured at 100 x 100 rank 5
    (m = 2000, 3000, 5000: 830, 620, 360 iterations of one 100 x 100 SVD, NumPy's OpenBLAS
    held to one thread): 0.5-2 s (up to 8 s with the two cores loaded by other jobs), a
    process peak of 0.25-0.28 GB of which 0.24 GB is the imports. The minimizer agrees with
    cvxpy + SCS at eps 1e-8 (O'Donoghue et al. 2016; 3 s) to 1e-8-2e-8, SCS's own error (it
    is 1e-8 off the truth where recovery is exact, ADMM 3e-11), and with ADMM at gap 1e-13
    to 4e-10. On the small problems it agrees with CLARABEL to 1e-8 (m*) and with tight
    CLARABEL to 1e-7 (minimizer); its Y (not the centre) gave the same face dimension on
    every problem compared (2 x 2 to 30 x 30).

    The solution is cached per (shape, observed entries, solver): a study calls this once per
    problem, not once per table. Its arrays are read-only.

    References
    ----------
    Boyd, Parikh, Chu, Peleato & Eckstein (2011), Distributed optimization and statistical
    learning via the alternating direction method of multipliers, Found. Trends Mach. Learn.
    Cai, Candes & Shen (2010), A singular value thresholding algorithm for matrix completion,
    SIAM J. Optim. 20(4).
    Goulart & Chen (2024), Clarabel: an interior-point solver for conic programs with
    quadratic objectives, arXiv:2405.12762.
    Gunasekar, Woodworth, Bhojanapalli, Neyshabur & Srebro (2017), Implicit regularization in
    matrix factorization, NeurIPS.
    O'Donoghue, Chu, Parikh & Boyd (2016), Conic optimization via operator splitting and
    homogeneous self-dual embedding, J. Optim. Theory Appl. 169(3).
    """
    check_problem(problem)
    solver = automatic_solver(problem.shape) if solver is None else solver
    return NuclearCompletion(problem, *_solve_nuclear(problem_key(problem), solver))


def automatic_solver(shape) -> str:
    """The solver :func:`min_nuclear_norm_completion` uses by default for a ``shape`` problem:
    "CLARABEL" when rows + cols <= 60, "ADMM" above."""
    return "CLARABEL" if sum(shape) <= _CLARABEL_MAX_ORDER else "ADMM"


@functools.lru_cache(maxsize=64)
def _solve_nuclear(key, solver):
    """(m*, minimizer, unique, U1, V1) for the problem described by ``key``; see above."""
    problem = CompletionProblem(key[0], dict(key[1]))
    # a 100 x 100 SVD took 2.6 ms on one BLAS thread, 15-270 ms on two of a loaded 2-core machine
    with threadpool_limits(limits=1, user_api="blas"):
        norm, Xs, Y = _admm(problem) if solver == "ADMM" else _cvxpy(problem, solver)
        unique, U1, V1 = _face(problem, Y)
    for a in (Xs, U1, V1):
        a.setflags(write=False)
    return norm, Xs, unique, U1, V1


def _cvxpy(problem, solver):
    """(m*, minimizer, dual certificate Y) from cvxpy's ``normNuc`` with ``solver``."""
    i, j = problem.indices
    X = cp.Variable(problem.shape)
    constraint = X[i, j] == problem.values
    prob = cp.Problem(cp.Minimize(cp.normNuc(X)), [constraint])
    prob.solve(solver=solver)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"min nuclear norm completion failed: solver status {prob.status}")
    Y = np.zeros(problem.shape)
    Y[i, j] = -np.asarray(constraint.dual_value)  # cvxpy: L = f + nu^T (A x - b)
    return float(prob.value), np.array(X.value, dtype=np.float64), Y


def _admm(problem):
    """(||Z||_*, Z, Y) by the ADMM of :func:`min_nuclear_norm_completion`: Z exactly feasible,
    Y a dual certificate with <Y, b> >= (1 - 1e-10) ||Z||_* (or the gap reached, with a
    warning, after _ADMM_MAX_ITER iterations)."""
    i, j = problem.indices
    b = problem.values
    size = np.linalg.norm(b)
    rho = np.sqrt(b.size) / size if size > 0 else 1.0
    Z, U = problem.targets, np.zeros(problem.shape)
    for step in range(1, _ADMM_MAX_ITER + 1):
        X = _ADMM_RELAX * _shrink(Z - U, 1.0 / rho) + (1.0 - _ADMM_RELAX) * Z
        U[i, j] += X[i, j] - b
        Z = X
        Z[i, j] = b
        if step % _ADMM_CHECK_EVERY == 0:
            upper, lower, Y = _bounds(Z, -rho * U, i, j, b)
            if upper - lower <= _ADMM_TOL * upper:
                return upper, Z, Y
    warnings.warn(f"ADMM stopped after {_ADMM_MAX_ITER} iterations at relative duality gap "
                  f"{(upper - lower) / upper:.2g}", RuntimeWarning)
    return upper, Z, Y


def _shrink(A, tau):
    """Singular value thresholding: argmin_X tau ||X||_* + ||X - A||_F^2 / 2."""
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    k = int(np.count_nonzero(s > tau))
    return (U[:, :k] * (s[:k] - tau)) @ Vt[:k]


def _bounds(Z, Y, i, j, b):
    """(||Z||_*, <Y', b>, Y') with Y' = Y / ||Y||_2 (Y supported on Omega, Z feasible): by weak
    duality <Y', b> = <Y', Z> <= m* <= ||Z||_*."""
    upper = float(np.linalg.svd(Z, compute_uv=False).sum())
    spectral = np.linalg.norm(Y, 2)
    if spectral > 0:
        Y = Y / spectral
    return upper, float(Y[i, j] @ b), Y


def _face(problem, Y):
    """(unique, U1, V1): the singular vectors of the certificate Y for singular values
    >= 1 - _FACE_TOL, and whether M -> P_Omega(U1 M V1^T) is injective on symmetric M."""
    i, j = problem.indices
    U, sig, Vt = np.linalg.svd(Y)
    k = int(np.sum(sig >= 1.0 - _FACE_TOL))
    U1, V1 = U[:, :k].copy(), Vt[:k].T.copy()
    p, q = np.triu_indices(k)
    if k == 0 or len(p) > len(i):  # no face, or more unknowns than equations
        return k == 0, U1, V1
    # column (p, q) of L: P_Omega(U1 E_pq V1^T), E_pq the symmetric unit matrix at (p, q)
    L = U1[i][:, p] * V1[j][:, q]
    off = p != q
    L[:, off] += U1[i][:, q[off]] * V1[j][:, p[off]]
    sv = np.linalg.svd(L, compute_uv=False)
    return bool(sv[-1] > 1e-8 * sv[0]), U1, V1


_RANK_SEARCH_ENTRIES = 100
"""The rank search of :func:`hypotheses` runs only for problems of at most this many entries."""


@functools.lru_cache(maxsize=64)
def lowest_completion_rank(key):
    """Lowest r with an exact rank-r completion found by local search from the minimum nuclear
    norm completion (plus 2 perturbed starts: it can be a saddle, like I on the 2x2 diagonal
    task; tolerance 1e-6 on the constraint residual) of the problem described by ``key``
    (:func:`problem_key`; cached: seconds for 10 x 10), or None for problems of more than 100
    entries (the search is a heuristic meant for ~10 x 10)."""
    (rows, cols), entries = key
    if rows * cols > _RANK_SEARCH_ENTRIES:
        return None
    problem = CompletionProblem((rows, cols), dict(entries))
    start = _solve_nuclear(key, "CLARABEL")[1]
    for r in range(1, min(rows, cols)):
        if nearest_rank_r_completion(problem, start, r, restarts=2).residual <= 1e-6:
            return r
    return min(rows, cols)
