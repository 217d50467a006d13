"""Solution sets of a completion problem: exact completions, nearest rank-r completions, and
explicit coordinates on the catalogue's solution curves.

For a problem with observed entries b on Omega, the exact completions form the affine space
{X : X_ij = b_ij on Omega}, parametrized by the free (unobserved) entries. Inside it, the
completions of rank <= r form a real algebraic variety; :func:`nearest_rank_r_completion` finds
the point of it nearest to an endpoint by a local optimization started from the endpoint.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from dlnmc.problems import CompletionProblem
from dlnmc.results import entry_columns

__all__ = [
    "CompletionSpace",
    "completion_space",
    "RankCompletion",
    "nearest_rank_r_completion",
    "hyperbola_coordinates",
    "is_hyperbola_task",
    "Symmetries",
    "symmetries",
    "endpoint_matrices",
]


def check_problem(problem):
    """ValueError unless ``problem`` is a CompletionProblem."""
    if not isinstance(problem, CompletionProblem):
        raise ValueError(f"problem must be a CompletionProblem, got {type(problem).__name__}")


def _check_matrices(W, shape, name="W") -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.shape[-2:] != tuple(shape):
        raise ValueError(f"{name} must have shape (..., {shape[0]}, {shape[1]}), got {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError(f"{name} contains NaN or inf")
    return W


@dataclass(frozen=True)
class CompletionSpace:
    """The affine space of exact completions, base + sum_k x_k E_{free_k}.

    Attributes
    ----------
    base : ndarray, shape (rows, cols)
        b on Omega, 0 on the free entries.
    free : tuple of two int64 arrays
        Row and column indices of the free (unobserved) entries, row-major order.
    """

    base: np.ndarray
    free: tuple

    @property
    def dim(self) -> int:
        """Number of free entries (the dimension of the space)."""
        return len(self.free[0])

    @property
    def basis(self) -> np.ndarray:
        """The unit matrices E_ij of the free entries, shape (dim, rows, cols)."""
        E = np.zeros((self.dim,) + self.base.shape)
        E[np.arange(self.dim), self.free[0], self.free[1]] = 1.0
        return E

    def embed(self, coords) -> np.ndarray:
        """The completion with free entries ``coords`` (shape (..., dim)) -> (..., rows, cols)."""
        coords = np.asarray(coords, dtype=np.float64)
        if coords.shape[-1:] != (self.dim,):
            raise ValueError(f"coords must have shape (..., {self.dim}), got {coords.shape}")
        X = np.broadcast_to(self.base, coords.shape[:-1] + self.base.shape).copy()
        X[..., self.free[0], self.free[1]] = coords
        return X

    def coordinates(self, W) -> np.ndarray:
        """Free entries of W (..., rows, cols) -> (..., dim)."""
        W = _check_matrices(W, self.base.shape)
        return W[..., self.free[0], self.free[1]]

    def project(self, W) -> np.ndarray:
        """The nearest exact completion to W in Frobenius norm: W with b written on Omega."""
        return self.embed(self.coordinates(W))


def completion_space(problem) -> CompletionSpace:
    """The affine space of exact completions of ``problem``."""
    check_problem(problem)
    free = np.nonzero(~problem.mask)
    base = problem.targets
    base.setflags(write=False)
    return CompletionSpace(base, (free[0].astype(np.int64), free[1].astype(np.int64)))


class RankCompletion(NamedTuple):
    """Result of :func:`nearest_rank_r_completion`.

    Attributes
    ----------
    matrix : ndarray, shape (rows, cols)
        The rank-<=r matrix found, A B^T.
    distance : float
        ||matrix - W||_F.
    residual : float
        ||P_Omega(matrix) - b||_2 = sqrt(2 l(matrix)): how far from an exact completion it is
        (below ``tol`` when an exact rank-r completion was found; large when none exists, e.g.
        rank 1 on the Razin-Cohen task, whose rank-1 completions exist only at infinity).
    """

    matrix: np.ndarray
    distance: float
    residual: float


def nearest_rank_r_completion(problem, W, r, restarts=4, seed=0, tol=1e-9) -> RankCompletion:
    """The exact completion of rank <= r nearest to W (Frobenius), by local optimization.

    Minimizes ||P_free(A B^T - W)||^2 over factors A (rows x r), B (cols x r) subject to
    P_Omega(A B^T) = b, by an augmented Lagrangian whose inner problems are solved by L-BFGS
    (scipy) with analytic gradients; on exact completions ||X - W||^2 =
    ||P_free(X - W)||^2 + ||b - P_Omega W||^2, so this is the nearest-point problem. The start
    is the truncated SVD of W (Eckart-Young), plus ``restarts`` truncated SVDs of W + G, G
    Gaussian with the RMS entry of W (seeded); the best feasible result is returned. Non-convex: a local optimum, checked
    against brute-force search on small problems in tests/test_manifold.py. Meant for
    problems up to about 10 x 10.

    Parameters
    ----------
    problem : CompletionProblem
    W : array_like, shape (rows, cols)
        The endpoint.
    r : int
        Target rank, 1 <= r; for r >= min(rows, cols) the answer is the projection onto the
        completions (exact, closed form).
    restarts : int
        Extra random starts.
    seed : int
    tol : float
        Stop once the constraint residual is below ``tol * max(1, ||b||)``.

    Returns
    -------
    RankCompletion
        ``(matrix, distance, residual)``.
    """
    check_problem(problem)
    W = _check_matrices(W, problem.shape)
    if W.ndim != 2:
        raise ValueError("W must be one matrix (rows, cols)")
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"rank r must be a positive integer, got {r!r}")
    if r >= min(problem.shape):
        X = completion_space(problem).project(W)
        return RankCompletion(X, float(np.linalg.norm(X - W)), 0.0)
    rng = np.random.default_rng([int(seed), int(r)])
    scale = max(np.linalg.norm(W), 1.0) / np.sqrt(W.size)
    starts = [W] + [W + scale * rng.standard_normal(W.shape) for _ in range(int(restarts))]
    best = None
    for start in starts:
        U, s, Vt = np.linalg.svd(start)
        root = np.sqrt(np.maximum(s[:r], 1e-3 * max(s[0], 1.0)))
        X = _augmented_lagrangian(problem, W, U[:, :r] * root, Vt[:r].T * root, tol)
        found = RankCompletion(X, float(np.linalg.norm(X - W)),
                               float(np.sqrt(2.0 * problem.loss(X))))
        if best is None or _better(found, best, tol * max(1.0, np.linalg.norm(problem.values))):
            best = found
    return best


def _better(a, b, tol):
    """a beats b: feasible before infeasible, then nearer (feasible) or smaller residual."""
    if (a.residual <= tol) != (b.residual <= tol):
        return a.residual <= tol
    return a.distance < b.distance if a.residual <= tol else a.residual < b.residual


_RIDGE = 1e-6
"""Weight of the ridge residual _RIDGE * x that fixes the gauge A -> A G, B -> B G^{-T} of the
factorization (Levenberg-Marquardt needs at least as many residuals as unknowns); it moves
the optimum by O(_RIDGE^2) relative."""


def _augmented_lagrangian(problem, W, A, B, tol, outer=30):
    """Minimize 1/2 ||P_free(AB^T - W)||^2 s.t. P_Omega(AB^T) = b; returns A B^T.

    Each inner problem, 1/2 ||P_free(AB^T - W)||^2 + mu/2 ||P_Omega(AB^T) - b + lam/mu||^2, is
    a nonlinear least-squares problem in (A, B), solved by Levenberg-Marquardt (MINPACK via
    scipy.optimize.least_squares) with the exact Jacobian and a tiny ridge; lam += mu c after
    each.
    """
    mask = problem.mask.ravel()
    m, r = A.shape
    n = B.shape[0]
    rows_i, rows_j = np.divmod(np.arange(m * n), n)
    lam = np.zeros(m * n)
    mu = 100.0
    limit = tol * max(1.0, np.linalg.norm(problem.values))
    prev = np.inf
    weight = np.where(mask, np.sqrt(mu), 1.0)

    def residual(x):
        X = x[: m * r].reshape(m, r) @ x[m * r:].reshape(n, r).T
        return np.concatenate([weight * (X.ravel() - target), _RIDGE * x])

    def jacobian(x):
        A_, B_ = x[: m * r].reshape(m, r), x[m * r:].reshape(n, r)
        J = np.zeros((m * n, (m + n) * r))
        cols = np.arange(r)
        J[np.arange(m * n)[:, None], rows_i[:, None] * r + cols] = B_[rows_j]
        J[np.arange(m * n)[:, None], m * r + rows_j[:, None] * r + cols] = A_[rows_i]
        return np.concatenate([weight[:, None] * J, _RIDGE * np.eye(len(x))])

    x = np.concatenate([A.ravel(), B.ravel()])
    b = problem.targets.ravel()
    for _ in range(outer):
        weight = np.where(mask, np.sqrt(mu), 1.0)
        target = np.where(mask, b - lam / mu, W.ravel())
        x = least_squares(residual, x, jac=jacobian, method="lm", xtol=1e-15, ftol=1e-15,
                          gtol=1e-15).x
        X = x[: m * r].reshape(m, r) @ x[m * r:].reshape(n, r).T
        c = np.where(mask, X.ravel() - b, 0.0)
        viol = np.linalg.norm(c)
        if viol <= limit:
            break
        if mu >= 1e8 and viol > 0.5 * prev:
            break  # stalled at a large penalty: no exact rank-r completion nearby
        lam = lam + mu * c
        if viol > 0.25 * prev:
            mu = min(mu * 10.0, 1e12)
        prev = viol
    return X


def is_hyperbola_task(problem) -> bool:
    """Whether ``problem`` is the 2x2 task observing exactly w11 = w22 = 1 (Cohen, Menon &
    Veraszto 2023), whose rank-1 solutions form the hyperbola ab = 1."""
    return problem.shape == (2, 2) and dict(problem.entries) == {(0, 0): 1.0, (1, 1): 1.0}


def hyperbola_coordinates(final, problem=None) -> pd.DataFrame:
    """Curve coordinates of endpoints of the 2x2 diagonal task (w11 = w22 = 1).

    Solutions are [[1, a], [b, 1]]; the rank-1 ones form the hyperbola ab = 1. An endpoint with
    a = w_0_1, b = w_1_0 and ab > 0 is projected radially in the (a, b) plane onto the
    hyperbola, (a, b) -> (a, b) / sqrt(ab): the point (sigma e^t, sigma e^{-t}) with
    t = (1/2) log(a / b) and branch sigma = sign(a). This projection commutes with transposition
    (t -> -t) and with the branch symmetry, and is the coordinate in which the plane measure is
    da db = dt du (u = 1 - ab; see :mod:`dlnmc.predictions`). On the hyperbola t = log|a|. The
    diagonal entries (= 1 up to the final loss) are ignored.

    Parameters
    ----------
    final : DataFrame
        With columns ``w_0_1`` and ``w_1_0``.
    problem : CompletionProblem, optional
        When given, checked to be the 2x2 task observing exactly the diagonal with values 1.

    Returns
    -------
    DataFrame
        Indexed like ``final``: ``branch`` (int8: +1 or -1; 0 where ab <= 0 or an entry is not
        finite, no projection), ``t`` (NaN where branch is 0), ``hyperbola_dist`` = |1 - ab|.
    """
    if problem is not None:
        check_problem(problem)
        if not is_hyperbola_task(problem):
            raise ValueError(f"hyperbola coordinates need the 2x2 diagonal task, got {problem!r}")
    missing = {"w_0_1", "w_1_0"} - set(final.columns)
    if missing:
        raise ValueError(f"final lacks columns {sorted(missing)}")
    a = final["w_0_1"].to_numpy(dtype=np.float64)
    b = final["w_1_0"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(a) & np.isfinite(b) & (a * b > 0)
        t = np.where(ok, 0.5 * (np.log(np.abs(a)) - np.log(np.abs(b))), np.nan)
    return pd.DataFrame({"branch": np.where(ok, np.sign(a), 0).astype(np.int8), "t": t,
                         "hyperbola_dist": np.abs(1.0 - a * b)}, index=final.index)


_SYMMETRY_SEARCH = 4
"""Signed permutations are searched for problems of at most this many rows and columns."""


@dataclass(frozen=True)
class Symmetries:
    """Maps g(W) = P op(W) Q^T of a completion problem onto itself: P, Q signed permutation
    matrices, op the identity or (square problems) the transpose, such that g maps the set of
    exact completions onto itself. They preserve singular values, hence every quantity of
    g^N (volume density, orbit volume) and the loss.

    Attributes
    ----------
    left : ndarray (n, rows, rows)
    right : ndarray (n, cols, cols)
    transpose : ndarray (n,) of bool
    """

    left: np.ndarray
    right: np.ndarray
    transpose: np.ndarray

    @property
    def count(self) -> int:
        return len(self.transpose)

    @property
    def is_identity(self) -> np.ndarray:
        """Which maps are the identity (P = Q = +-I, no transpose): shape (n,)."""
        eye_l, eye_r = np.eye(self.left.shape[1]), np.eye(self.right.shape[1])
        same = [(~t and ((np.array_equal(P, eye_l) and np.array_equal(Q, eye_r))
                         or (np.array_equal(P, -eye_l) and np.array_equal(Q, -eye_r))))
                for P, Q, t in zip(self.left, self.right, self.transpose)]
        return np.array(same, dtype=bool)

    def __call__(self, W) -> np.ndarray:
        """Images of W (..., rows, cols) under every map: shape (n, ..., rows, cols)."""
        W = np.asarray(W, dtype=np.float64)
        out = []
        for P, Q, t in zip(self.left, self.right, self.transpose):
            out.append(P @ (np.swapaxes(W, -1, -2) if t else W) @ Q.T)
        return np.stack(out)


def symmetries(problem) -> Symmetries:
    """The symmetries of ``problem`` among signed permutations of rows and columns, composed
    with the transpose for square problems (see :class:`Symmetries`).

    A map W -> P W Q^T, with P e_i = s_i e_pi(i), Q e_j = t_j e_sigma(j), preserves the problem
    when it maps Omega onto Omega and s_i t_j b_ij = b_pi(i)sigma(j) on Omega (with the
    transpose first: the same for the transposed observations). Exhaustive for problems of at
    most 4 rows and 4 columns; larger problems get the identity and, when it is a symmetry, the
    transpose (a random problem has no other; a structured large problem would need its own).

    Examples: the 2x2 diagonal task has W -> D W D (D = diag(+-1)), the swap of both rows
    and both columns, and the transposes of these; the 3x3 unit diagonal has W -> D P W P^T D
    (P a permutation) and their transposes. Each map is listed twice ((P, Q) and (-P, -Q)).
    """
    check_problem(problem)
    rows, cols = problem.shape
    B = np.where(problem.mask, problem.targets, np.nan)
    bases = [(False, B)] + ([(True, B.T)] if problem.is_square else [])
    small = max(rows, cols) <= _SYMMETRY_SEARCH
    row_perms = list(itertools.permutations(range(rows))) if small else [tuple(range(rows))]
    col_perms = list(itertools.permutations(range(cols))) if small else [tuple(range(cols))]
    row_signs = (np.array(list(itertools.product((1.0, -1.0), repeat=rows))) if small
                 else np.ones((1, rows)))
    col_signs = (np.array(list(itertools.product((1.0, -1.0), repeat=cols))) if small
                 else np.ones((1, cols)))
    left, right, trans = [], [], []
    for t, base in bases:
        observed = ~np.isnan(base)
        for pi in row_perms:
            for sigma in col_perms:
                image = B[np.ix_(pi, sigma)]  # image[i, j] = b at (pi(i), sigma(j))
                if not np.array_equal(~np.isnan(image), observed):
                    continue
                i, j = np.nonzero(observed)
                # s_i t_j base_ij == image_ij for every sign pair at once
                lhs = row_signs[:, None, i] * col_signs[None, :, j] * base[i, j]
                good = np.all(lhs == image[i, j], axis=-1)
                for a, b in zip(*np.nonzero(good)):
                    P = np.zeros((rows, rows))
                    P[list(pi), range(rows)] = row_signs[a]
                    Q = np.zeros((cols, cols))
                    Q[list(sigma), range(cols)] = col_signs[b]
                    left.append(P)
                    right.append(Q)
                    trans.append(t)
    return Symmetries(np.array(left), np.array(right), np.array(trans, dtype=bool))


def endpoint_matrices(final, shape) -> np.ndarray:
    """The endpoints W, shape (rows of final, *shape), from the ``w_<i>_<j>`` columns.

    A study's table may hold problems of several shapes (the entry columns are their union);
    the given rows must fill exactly the columns of ``shape`` and leave every other one empty.
    """
    cols = entry_columns(shape)
    present = [c for c in final.columns if c.startswith("w_")]
    missing = sorted(set(cols) - set(present))
    foreign = sorted(set(present) - set(cols))
    if missing or final[foreign].notna().to_numpy().any():
        raise ValueError(f"final's entry columns {(missing or foreign)[:4]}... do not match "
                         f"shape {tuple(shape)}")
    return final[cols].to_numpy(dtype=np.float64).reshape((len(final),) + tuple(shape))
