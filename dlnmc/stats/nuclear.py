"""The norm hypothesis's reference point: the minimum nuclear norm completion and the set of
all its minimizers (Gunasekar et al. 2017), and the lowest rank of an exact completion that a
local search finds (the rank hypothesis's reference, Razin & Cohen 2020)."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from dlnmc.manifold import nearest_rank_r_completion
from dlnmc.problems import CompletionProblem
from dlnmc.stats.filters import _check_problem

__all__ = ["NuclearCompletion", "min_nuclear_norm_completion", "problem_key",
           "lowest_completion_rank"]

_FACE_TOL = 1e-3
"""Dual singular values above 1 - _FACE_TOL span the optimal face (see NuclearCompletion)."""


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


def min_nuclear_norm_completion(problem, solver="CLARABEL") -> NuclearCompletion:
    """Solve min ||X||_* s.t. X_ij = b_ij on Omega with cvxpy (the norm hypothesis).

    Gunasekar et al. (2017) conjecture that gradient descent on a factorization from small
    initialization reaches this completion; Razin & Cohen (2020) argue against. The dual
    variable of the equality constraints gives the certificate Y that describes the whole set
    of minimizers (see :class:`NuclearCompletion`).

    Parameters
    ----------
    problem : CompletionProblem
    solver : str
        A cvxpy solver that handles semidefinite cones (CLARABEL, SCS).

    Notes
    -----
    The solution is cached per (shape, observed entries, solver): a study calls this once per
    problem, not once per table (a 30 x 30 problem takes seconds). Its arrays are read-only.
    """
    _check_problem(problem)
    return NuclearCompletion(problem, *_solve_nuclear(problem_key(problem), solver))


@functools.lru_cache(maxsize=64)
def _solve_nuclear(key, solver):
    """(m*, minimizer, unique, U1, V1) for the problem described by ``key``; see above."""
    problem = CompletionProblem(key[0], dict(key[1]))
    i, j = problem.indices
    X = cp.Variable(problem.shape)
    constraint = X[i, j] == problem.values
    prob = cp.Problem(cp.Minimize(cp.normNuc(X)), [constraint])
    prob.solve(solver=solver)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"min nuclear norm completion failed: solver status {prob.status}")
    Xs = np.array(X.value, dtype=np.float64)
    Y = np.zeros(problem.shape)
    Y[i, j] = -np.asarray(constraint.dual_value)  # cvxpy: L = f + nu^T (A x - b)
    U, sig, Vt = np.linalg.svd(Y)
    k = int(np.sum(sig >= 1.0 - _FACE_TOL))
    U1, V1 = U[:, :k].copy(), Vt[:k].T.copy()
    # injectivity of M -> P_Omega(U1 M V1^T) on symmetric M
    p, q = np.triu_indices(k)
    E = np.zeros((len(p), k, k))
    E[np.arange(len(p)), p, q] = 1.0
    E[np.arange(len(p)), q, p] = 1.0
    L = (U1 @ E @ V1.T)[:, i, j]
    sv = np.linalg.svd(L, compute_uv=False) if L.size else np.zeros(0)
    unique = bool(k == 0 or (len(sv) == len(p) and sv[-1] > 1e-8 * sv[0]))
    for a in (Xs, U1, V1):
        a.setflags(write=False)
    return float(prob.value), Xs, unique, U1, V1



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
