"""Statistics on tables of endpoints: descriptors, goodness of fit on the solution curve,
clusters of minimizers, and the verdict table of the norm, rank and volume hypotheses.

``stats`` adds columns to the engine's ``final`` table (one row per trajectory) and returns
tidy tables; it never simulates. Diverged trajectories (``status == "diverged"``) and rows
with non-finite entries are excluded from every statistic and counted (``n_excluded``);
:func:`describe` gives them NaN descriptors.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Mapping

import cvxpy as cp
import numpy as np
import pandas as pd
from scipy import stats as sst
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from dlnmc import geometry, predictions
from dlnmc.manifold import endpoint_matrices, hyperbola_coordinates, nearest_rank_r_completion
from dlnmc.problems import CompletionProblem
from dlnmc.results import effective_rank, entry_columns

__all__ = [
    "NuclearCompletion",
    "min_nuclear_norm_completion",
    "usable_rows",
    "describe",
    "compare",
    "clusters",
    "hypotheses",
]

_FACE_TOL = 1e-3
"""Dual singular values above 1 - _FACE_TOL span the optimal face (see NuclearCompletion)."""


def _check_problem(problem):
    if not isinstance(problem, CompletionProblem):
        raise ValueError(f"problem must be a CompletionProblem, got {type(problem).__name__}")


def _check_level(level):
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")


# ----------------------------------------------------------------------------- norm hypothesis

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


def _problem_key(problem):
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
    return NuclearCompletion(problem, *_solve_nuclear(_problem_key(problem), solver))


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


# ----------------------------------------------------------------------------- descriptors

def usable_rows(final, shape) -> np.ndarray:
    """Boolean mask of the rows that enter statistics: not diverged, all entries of the
    ``shape`` endpoint finite."""
    W = endpoint_matrices(final, shape).reshape(len(final), -1)
    ok = np.all(np.isfinite(W), axis=1)
    if "status" in final.columns:
        ok &= (final["status"].astype(str) != "diverged").to_numpy()
    return ok


def _row_depths(final, depth):
    if depth is not None:
        return np.full(len(final), float(depth))
    if "depth" not in final.columns:
        raise ValueError("final has no depth column: pass depth")
    return final["depth"].to_numpy(dtype=np.float64)


def _as_depth(value):
    return np.inf if value == np.inf else int(value)


def describe(final, problem, depth=None, nuclear="set") -> pd.DataFrame:
    """Per-trajectory descriptors of the endpoints, appended to a copy of ``final``.

    Parameters
    ----------
    final : DataFrame
        The engine's (or the end-to-end flow's) ``final`` table, with ``w_<i>_<j>`` columns.
    problem : CompletionProblem
    depth : int or numpy.inf, optional
        Depth for the volume columns; default: each row's ``depth`` column.
    nuclear : {"set", "point"} or NuclearCompletion
        How ``dist_min_nuclear`` is measured: to the set of all minimum nuclear norm
        completions ("set", exact), or to the solver's minimizer ("point"; the same when it is
        unique). A precomputed :class:`NuclearCompletion` is used as "set".

    Returns
    -------
    DataFrame
        ``final`` plus (NaN on diverged or non-finite rows):
        ``erank`` (Roy & Vetterli), ``norm_nuclear``, ``norm_frobenius``, ``norm_spectral``,
        ``sv_<k>`` (descending), ``dist_rank_<r>`` for r = 1 .. min(d, d') - 1: Frobenius
        distance to the nearest matrix of rank <= r, sqrt(sum_{k >= r} s_k^2) (Eckart-Young;
        not restricted to completions), ``log_volume_density`` (log sqrt(det g^N) w.r.t. dW,
        normalized clock; square problems), ``log_orbit_volume`` (Menon & Yu; NaN for
        N = inf, where it diverges), ``min_nuclear_norm`` (m*, the same in every row),
        ``nuclear_excess`` = ||W||_* / m* - 1, ``dist_min_nuclear``.
        ``attrs["dlnmc_stats"]`` records m*, uniqueness and the distance mode.
    """
    _check_problem(problem)
    if nuclear not in ("set", "point") and not isinstance(nuclear, NuclearCompletion):
        raise ValueError(f"nuclear must be 'set', 'point' or a NuclearCompletion, got {nuclear!r}")
    W = endpoint_matrices(final, problem.shape)
    depths = _row_depths(final, depth)
    ok = usable_rows(final, problem.shape)
    n, k = len(final), min(problem.shape)
    sv = np.full((n, k), np.nan)
    sv[ok] = np.linalg.svd(W[ok], compute_uv=False)
    tails = np.sqrt(np.cumsum((sv**2)[:, ::-1], axis=1)[:, ::-1])
    cols = {"erank": effective_rank(sv), "norm_nuclear": sv.sum(axis=1),
            "norm_frobenius": np.sqrt(np.sum(sv**2, axis=1)), "norm_spectral": sv[:, 0]}
    cols.update({f"sv_{i}": sv[:, i] for i in range(k)})
    cols.update({f"dist_rank_{r}": tails[:, r] for r in range(1, k)})
    log_vol = np.full(n, np.nan)
    log_orbit = np.full(n, np.nan)
    if problem.is_square:
        for value in np.unique(depths[ok]):
            rows = ok & (depths == value)
            log_vol[rows] = geometry.log_volume_density(W[rows], _as_depth(value))
            if value != np.inf:
                log_orbit[rows] = geometry.log_orbit_volume(W[rows], _as_depth(value))
    cols["log_volume_density"] = log_vol
    cols["log_orbit_volume"] = log_orbit
    solution = nuclear if isinstance(nuclear, NuclearCompletion) else min_nuclear_norm_completion(problem)
    dist = np.full(n, np.nan)
    if ok.any():
        dist[ok] = (np.linalg.norm(W[ok] - solution.matrix, axis=(-2, -1)) if nuclear == "point"
                    else solution.distance(W[ok]))
    cols["min_nuclear_norm"] = np.where(ok, solution.norm, np.nan)
    cols["nuclear_excess"] = cols["norm_nuclear"] / solution.norm - 1.0
    cols["dist_min_nuclear"] = dist
    # one concat, not one insert per column (a fragmented frame on large problems)
    out = pd.concat([final.drop(columns=[c for c in cols if c in final.columns]),
                     pd.DataFrame(cols, index=final.index)], axis=1)
    out.attrs = dict(final.attrs)
    out.attrs["dlnmc_stats"] = {"min_nuclear_norm": solution.norm, "unique": solution.unique,
                                "dist_min_nuclear": "point" if nuclear == "point" else "set"}
    return out


# ----------------------------------------------------------------------------- goodness of fit

def _percentile_ci(boot, level):
    """Percentile interval over the first axis; NaN where the bootstrap values are not finite."""
    if len(boot) == 0:
        return np.full(boot.shape[1:], np.nan), np.full(boot.shape[1:], np.nan)
    alpha = 0.5 * (1.0 - level)
    finite = np.all(np.isfinite(boot), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    return np.where(finite, lo, np.nan), np.where(finite, hi, np.nan)


def _ks(F):
    """KS statistic sup |F_n - F| for sorted samples with model CDF values F (..., n)."""
    n = F.shape[-1]
    k = np.arange(1, n + 1) / n
    return np.maximum(np.max(k - F, axis=-1), np.max(F - (k - 1.0 / n), axis=-1))


def _w1(x, F, G, M):
    """Wasserstein-1 = int_0^1 |Q_n(q) - Q(q)| dq for sorted samples x (..., n).

    On q in [(k-1)/n, k/n] the empirical quantile is x_(k); Q crosses it at q* = F(x_(k))
    (clipped), and int_0^q Q = M(q), with M(F(x)) = G(x) = E[T; T <= x].
    """
    n = x.shape[-1]
    q0, q1 = np.arange(n) / n, np.arange(1, n + 1) / n
    M0, M1 = M[:-1], M[1:]
    qs = np.clip(F, q0, q1)
    Ms = np.where(F < q0, M0, np.where(F > q1, M1, G))
    return np.sum(x * (qs - q0) - (Ms - M0) + (M1 - Ms) - x * (q1 - qs), axis=-1)


def compare(sample_t, candidates, n_boot=1000, seed=0, level=0.95) -> pd.DataFrame:
    """Goodness of fit of an empirical sample on the curve against candidate densities.

    Parameters
    ----------
    sample_t : array_like
        Curve coordinates t of the endpoints (finite; at least 2).
    candidates : mapping name -> candidate
        Objects with ``cdf``, ``logpdf``, ``partial_mean`` and ``quantile_integral``
        (:class:`dlnmc.predictions.CurveDensity`, :class:`~dlnmc.predictions.PointMass`).
    n_boot : int
        Bootstrap resamples (percentile intervals), seeded by ``seed``; 0: no intervals.
    level : float
        Confidence level of the intervals.

    Returns
    -------
    DataFrame
        One row per (candidate, statistic[, versus]); columns ``candidate``, ``statistic``,
        ``versus``, ``value``, ``ci_low``, ``ci_high``, ``p_value``, ``n``. Statistics:
        ``ks`` (Kolmogorov-Smirnov distance, exact CDF by quadrature; p-value from the exact
        null distribution ``scipy.stats.kstwo``, valid for a continuous candidate fixed in
        advance), ``wasserstein1`` (in units of t), ``mean_loglik`` (per trajectory; -inf for a
        point mass or a sample outside a window), ``loglik_ratio`` (mean per-trajectory log
        likelihood ratio of ``candidate`` against ``versus``; p-value of Vuong's (1989) test
        of equal fit, z = sqrt(n) mean / sd). Intervals are bootstrap percentiles (NaN where a
        resample gives a non-finite value).
    """
    t = np.sort(np.asarray(sample_t, dtype=np.float64).ravel())
    if t.size < 2 or not np.all(np.isfinite(t)):
        raise ValueError("sample_t must hold at least 2 finite values")
    if not isinstance(candidates, Mapping) or not candidates:
        raise ValueError("candidates must be a non-empty mapping name -> candidate")
    _check_level(level)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    n = t.size
    rng = np.random.default_rng(int(seed))
    idx = np.sort(rng.integers(0, n, size=(int(n_boot), n)), axis=1)
    names = list(candidates)
    ev = {}
    for name in names:
        c = candidates[name]
        with np.errstate(invalid="ignore"):
            ev[name] = dict(F=c.cdf(t), G=c.partial_mean(t), lp=c.logpdf(t),
                            M=c.quantile_integral(np.arange(n + 1) / n))
    rows = []

    def add(name, stat, value, boot, p=np.nan, versus=None):
        lo, hi = _percentile_ci(boot, level)
        rows.append((name, stat, versus, value, lo, hi, p, n))

    for name in names:
        e = ev[name]
        D = _ks(e["F"])
        add(name, "ks", D, _ks(e["F"][idx]), float(sst.kstwo.sf(D, n)))
        add(name, "wasserstein1", _w1(t, e["F"], e["G"], e["M"]),
            _w1(t[idx], e["F"][idx], e["G"][idx], e["M"]))
        add(name, "mean_loglik", np.mean(e["lp"]), np.mean(e["lp"][idx], axis=1))
    for a in names:
        for b in names:
            if a == b:
                continue
            with np.errstate(invalid="ignore"):
                d = ev[a]["lp"] - ev[b]["lp"]
                sd = np.std(d, ddof=1)
                z = np.sqrt(n) * np.mean(d) / sd if np.isfinite(sd) and sd > 0 else np.nan
                boot = np.mean(d[idx], axis=1)
            add(a, "loglik_ratio", np.mean(d), boot, 2 * sst.norm.sf(abs(z)), versus=b)
    df = pd.DataFrame(rows, columns=["candidate", "statistic", "versus", "value", "ci_low",
                                     "ci_high", "p_value", "n"])
    df = df.astype({"candidate": "string", "statistic": "string", "versus": "string",
                    "value": "float64", "ci_low": "float64", "ci_high": "float64",
                    "p_value": "float64", "n": "int64"})
    df.attrs = {"dlnmc_stats": {"n_boot": int(n_boot), "seed": int(seed), "level": level}}
    return df


# ----------------------------------------------------------------------------- clusters

def _single_linkage(X, threshold, max_points, seed):
    """Labels 0.. of single-linkage clusters at distance ``threshold`` (connected components
    of the graph joining points closer than threshold: DBSCAN with min_samples = 1). Above
    ``max_points`` points, the clusters of a seeded subsample of that size are found and every
    point joins the cluster of its nearest subsample point."""
    if len(X) == 1:
        return np.zeros(1, dtype=np.int64)
    if len(X) > max_points:
        pick = np.random.default_rng(int(seed)).choice(len(X), max_points, replace=False)
        base = _single_linkage(X[pick], threshold, max_points, seed)
        return base[cKDTree(X[pick]).query(X)[1]]
    labels = fcluster(linkage(X, method="single"), t=threshold, criterion="distance")
    return labels.astype(np.int64) - 1


_MEDOID_SAMPLE = 1000
"""Above this many members, a cluster's medoid is sought on a seeded subsample of this size."""


def _medoid(X, seed):
    """Index of the row of X minimizing the sum of Euclidean distances to the other rows (on a
    seeded subsample of _MEDOID_SAMPLE rows when X has more)."""
    pick = np.arange(len(X))
    if len(X) > _MEDOID_SAMPLE:
        rng = np.random.default_rng(int(seed))
        pick = np.sort(rng.choice(len(X), _MEDOID_SAMPLE, replace=False))
    return pick[np.argmin(cdist(X[pick], X[pick]).sum(axis=1))]


def clusters(final, problem, depth=None, threshold=None, rank_tol=1e-3, floor=1e-6,
             min_size=5, max_points=3000, seed=0) -> pd.DataFrame:
    """Cluster the endpoints and describe each cluster by a member at its centre (several kinds
    of minimizer).

    The centre is the cluster's medoid (the member minimizing the sum of Frobenius distances
    to the others), not its mean: a single-linkage cluster can be a connected arc of the
    rank-1 completions, and the mean of rank-1 matrices along an arc has higher rank and is
    no endpoint at all.

    Parameters
    ----------
    final : DataFrame
    problem : CompletionProblem
        Square (the volume columns need g^N).
    depth : int or numpy.inf, optional
        Depth of the predicted volumes; default: the table's single depth.
    threshold : float, optional
        Single-linkage distance (Frobenius, on the entries): endpoints closer than this are in
        one cluster. Default: 0.1 x the median Frobenius norm of the endpoints.
    rank_tol : float
        Numerical rank of a matrix: number of singular values > rank_tol * s_1.
    floor : float
        For ``log_volume_density_reg`` the singular values beyond the rank are set to
        floor * s_1 (see below).
    min_size : int
        Clusters smaller than this (whose quartiles mean little) can tie with the largest
        predicted volume but not define it, unless no cluster is this large.
    max_points : int
        Above this many endpoints, cluster a seeded subsample and assign the rest to the nearest
        subsample point.
    seed : int
        Seeds the subsamples (clustering above ``max_points`` endpoints, medoid above 1000
        members).

    Returns
    -------
    DataFrame
        One row per cluster, heaviest first: ``cluster``, ``size``, ``fraction``, the centre's
        entries ``w_<i>_<j>`` (the medoid), ``rank`` and ``erank`` of the centre,
        ``member_rank_median`` (median numerical rank of the members), ``log_volume_density``
        (at the centre; it grows without bound as the centre approaches lower rank, so it
        mostly measures how close the endpoints got), ``log_volume_density_reg`` (at
        U diag(s_1..s_rank, floor s_1, ...) V^T: the prediction compared across clusters at a
        common distance from the lower-rank set, the analogue of the band of
        :mod:`dlnmc.predictions`), ``log_orbit_volume`` (at the centre; NaN at N = inf),
        ``is_heaviest``, ``log_volume_density_members`` (median over the members of the
        regularized density, each member at its own numerical rank) with its quartiles
        ``_q25`` and ``_q75``, ``is_max_volume`` (largest ``log_volume_density_members``
        among clusters of at least ``min_size`` members),
        ``ties_max_volume`` (quartile range overlapping the max-volume cluster's: a prediction
        that cannot tell the two apart, as for clusters that are images of each other under
        a symmetry of the problem and differ only in how far their runs collapsed).
        ``attrs["dlnmc_stats"]``: threshold, ``n_excluded``, depth.
    """
    _check_problem(problem)
    if not problem.is_square:
        raise ValueError("clusters needs a square problem (volumes of g^N)")
    ok = usable_rows(final, problem.shape)
    if not ok.any():
        raise ValueError("no usable (non-diverged, finite) rows")
    W = endpoint_matrices(final, problem.shape)[ok]
    depth = _single_depth(final[ok], depth)
    X = W.reshape(len(W), -1)
    if threshold is None:
        threshold = 0.1 * float(np.median(np.linalg.norm(X, axis=1)))
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold!r}")
    labels = _single_linkage(X, threshold, int(max_points), seed)
    ids, sizes = np.unique(labels, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    ids, sizes = ids[order], sizes[order]
    members = [np.flatnonzero(labels == c) for c in ids]
    centres = np.stack([W[m[_medoid(X[m], seed)]] for m in members])
    U_all, s_all, Vt_all = np.linalg.svd(W)
    member_rank = np.sum(s_all > rank_tol * s_all[:, :1], axis=1)
    U, s, Vt = np.linalg.svd(centres)
    rank = np.sum(s > rank_tol * s[:, :1], axis=1)

    def regularized(U, s, Vt, rank):
        s_reg = np.where(np.arange(s.shape[1]) < rank[:, None], s, floor * s[:, :1])
        return geometry.log_volume_density((U * s_reg[:, None, :]) @ Vt, depth)

    log_reg = regularized(U, s, Vt, rank)
    member_reg = regularized(U_all, s_all, Vt_all, member_rank)
    q25, q50, q75 = np.array([np.quantile(member_reg[m], [0.25, 0.5, 0.75])
                              for m in members]).T
    top = int(np.argmax(np.where(sizes >= min(int(min_size), sizes[0]), q50, -np.inf)))
    cols = {"cluster": np.arange(len(ids), dtype=np.int64), "size": sizes.astype(np.int64),
            "fraction": sizes / sizes.sum()}
    cols.update(zip(entry_columns(problem.shape), centres.reshape(len(ids), -1).T))
    cols["rank"] = rank.astype(np.int64)
    cols["erank"] = effective_rank(s)
    cols["member_rank_median"] = np.array([np.median(member_rank[m]) for m in members])
    cols["log_volume_density"] = geometry.log_volume_density(centres, depth)
    cols["log_volume_density_reg"] = log_reg
    cols["log_orbit_volume"] = (geometry.log_orbit_volume(centres, depth) if depth != np.inf
                                else np.full(len(ids), np.nan))
    cols["is_heaviest"] = cols["cluster"] == 0
    cols["is_max_volume"] = cols["cluster"] == top
    cols["log_volume_density_members"] = q50
    cols["log_volume_density_members_q25"] = q25
    cols["log_volume_density_members_q75"] = q75
    cols["ties_max_volume"] = (q75 >= q25[top]) & (q25 <= q75[top])
    out = pd.DataFrame(cols)
    out.attrs = {"dlnmc_stats": {"threshold": float(threshold), "n_excluded": int((~ok).sum()),
                                 "depth": float(depth)}}
    return out


def _single_depth(final, depth):
    if depth is not None:
        return _as_depth(float(depth))
    values = np.unique(_row_depths(final, None))
    if len(values) != 1:
        raise ValueError(f"the table holds depths {values.tolist()}: pass one depth's rows")
    return _as_depth(values[0])


# ----------------------------------------------------------------------------- verdicts

def _bootstrap(values, fun, n_boot, seed, level):
    rng = np.random.default_rng(int(seed))
    boot = np.array([fun(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)])
    return _percentile_ci(boot[:, None], level)


def hypotheses(final, problem, depth=None, norm_tol=0.01, window=None, eps=None, n_boot=1000,
               seed=0, level=0.95, described=None) -> pd.DataFrame:
    """Verdict table: one row per hypothesis (norm, rank, volume) on a study's endpoints.

    Parameters
    ----------
    final : DataFrame
        One depth's endpoints (``depth`` column, or pass ``depth``).
    problem : CompletionProblem
    depth : int or numpy.inf, optional
    norm_tol : float
        Relative excess of the nuclear norm over the minimum m* above which a trajectory
        violates the norm hypothesis.
    window : (lo, hi), optional
        2x2 diagonal task: window in t for the candidate densities; default symmetric,
        max(3, max|t| + 0.5).
    eps : float, optional
        2x2 diagonal task: band width of P1 and P2; default the median |1 - ab| of the
        endpoints (None when that is >= 1: the endpoints are not near the curve).
    n_boot, seed, level
        Bootstrap settings for the intervals.
    described : DataFrame, optional
        The output of :func:`describe` for ``final`` (computed when absent).

    Returns
    -------
    DataFrame
        Columns ``hypothesis``, ``statistic``, ``value``, ``ci_low``, ``ci_high``, ``p_value``,
        ``n`` (trajectories used), ``n_excluded`` (diverged or non-finite), ``result``
        (plain words).

        - norm: fraction of trajectories with ||W||_* > (1 + norm_tol) m*, Clopper-Pearson
          interval.
        - rank: median effective rank (bootstrap interval); the result names the lowest rank
          r_min of an exact completion found by :func:`dlnmc.manifold.nearest_rank_r_completion`
          from the minimum nuclear norm completion (a local search, only for problems of at most
          100 entries), and the fraction of trajectories with erank < r_min + 0.1.
        - volume, 2x2 diagonal task: mean per-trajectory log-likelihood ratio of the best of
          P1-P3 (by mean log-likelihood) against the uniform-arclength baseline on the window
          (bootstrap interval), p-value of the KS test of that best candidate; the result also
          reports the point-mass (norm minimizer) baseline's KS distance.
        - volume, other square problems: fraction of trajectories in the clusters of
          :func:`clusters` whose regularized volume density ties with the largest
          (``ties_max_volume``; Clopper-Pearson interval); the hypothesis holds when the
          heaviest cluster is among them. NaN with a single cluster (nothing to choose
          between).
    """
    _check_problem(problem)
    _check_level(level)
    ok = usable_rows(final, problem.shape)
    n, n_excluded = int(ok.sum()), int((~ok).sum())
    if n < 2:
        raise ValueError(f"need at least 2 usable rows, got {n}")
    depth = _single_depth(final[ok], depth)
    solution = min_nuclear_norm_completion(problem)
    desc = described if described is not None else describe(final, problem, depth, solution)
    d = desc[ok]
    rows = []

    # norm
    k = int((d["nuclear_excess"] > norm_tol).sum())
    ci = sst.binomtest(k, n).proportion_ci(level)
    m_star = float(d["min_nuclear_norm"].iloc[0])
    rows.append(("norm", f"fraction with nuclear norm > (1 + {norm_tol:g}) m*", k / n, ci.low,
                 ci.high, np.nan,
                 f"{k} of {n} trajectories end more than {100 * norm_tol:g}% above the minimum "
                 f"nuclear norm m* = {m_star:.6g}: the norm hypothesis "
                 f"{'fails' if k > n / 2 else 'holds'} for most trajectories"))

    # rank
    erank = d["erank"].to_numpy()
    lo, hi = _bootstrap(erank, np.median, n_boot, seed, level)
    r_min = _lowest_completion_rank(_problem_key(problem))
    q1, q3 = np.quantile(erank, [0.25, 0.75])
    found = ("lowest completion rank not searched (problem larger than 10 x 10)" if r_min is None
             else f"lowest completion rank found r_min = {r_min}; "
                  f"{100 * np.mean(erank < r_min + 0.1):.1f}% of trajectories have erank < r_min + 0.1")
    rows.append(("rank", "median effective rank", float(np.median(erank)), lo[0], hi[0], np.nan,
                 f"erank median {np.median(erank):.4g} (quartiles {q1:.4g}, {q3:.4g}); {found}"))

    # volume
    if problem.shape == (2, 2) and dict(problem.entries) == {(0, 0): 1.0, (1, 1): 1.0}:
        rows.append(_volume_on_hyperbola(final[ok], depth, window, eps, n_boot, seed, level))
    elif problem.is_square:
        rows.append(_volume_by_clusters(clusters(final[ok], problem, depth, seed=seed), n, level))
    out = pd.DataFrame(rows, columns=["hypothesis", "statistic", "value", "ci_low", "ci_high",
                                      "p_value", "result"])
    out.insert(6, "n", np.int64(n))
    out.insert(7, "n_excluded", np.int64(n_excluded))
    return out.astype({"hypothesis": "string", "statistic": "string", "result": "string"})


_RANK_SEARCH_ENTRIES = 100
"""The rank search of :func:`hypotheses` runs only for problems of at most this many entries."""


@functools.lru_cache(maxsize=64)
def _lowest_completion_rank(key):
    """Lowest r with an exact rank-r completion found by local search from the minimum nuclear
    norm completion (plus 2 perturbed starts: it can be a saddle, like I on the 2x2 diagonal
    task; tolerance 1e-6 on the constraint residual) of the problem described by ``key``
    (:func:`_problem_key`; cached: seconds for 10 x 10), or None for problems of more than 100
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


def _volume_by_clusters(cl, n, level):
    """Verdict row of the volume hypothesis from the endpoint clusters of :func:`clusters`:
    the mass of the clusters whose predicted volume ties with the largest."""
    statistic = "fraction in the clusters of largest regularized volume density"
    if len(cl) == 1:
        return ("volume", statistic, np.nan, np.nan, np.nan, np.nan,
                f"one cluster (centre rank {cl['rank'].iloc[0]}): the endpoints have a single "
                "mode, nothing for the volume hypothesis to choose between")
    top = cl[cl["ties_max_volume"]]
    k = int(top["size"].sum())
    ci = sst.binomtest(k, n).proportion_ci(level)
    heavy = cl.iloc[0]
    verdict = ("the heaviest is among them: the volume hypothesis holds" if heavy["ties_max_volume"]
               else f"the heaviest holds {100 * heavy['fraction']:.1f}% (centre rank "
                    f"{heavy['rank']}) and is not among them: the volume hypothesis fails")
    return ("volume", statistic, k / n, ci.low, ci.high, np.nan,
            f"{len(cl)} clusters; the {len(top)} of largest predicted volume (tied within their "
            f"members' quartiles; centre ranks {sorted(set(top['rank'].tolist()))}) hold "
            f"{100 * k / n:.1f}%; " + verdict)


def _volume_on_hyperbola(final, depth, window, eps, n_boot, seed, level):
    coords = hyperbola_coordinates(final)
    t = coords["t"].to_numpy()
    t = t[np.isfinite(t)]
    if window is None:
        half = max(3.0, math.ceil(2 * (np.max(np.abs(t)) + 0.5)) / 2)
        window = (-half, half)
    if eps is None:
        med = float(np.median(coords["hyperbola_dist"]))
        eps = med if 0 < med < 1 else None
    table = compare(t, predictions.candidates(depth, window, eps), n_boot=n_boot, seed=seed,
                    level=level)
    ll = table[table["statistic"] == "mean_loglik"].set_index("candidate")["value"]
    best = ll[["P1", "P2", "P3"]].idxmax()
    lr = table[(table["statistic"] == "loglik_ratio") & (table["candidate"] == best)
               & (table["versus"] == "uniform_arclength")].iloc[0]
    ks = table[table["statistic"] == "ks"].set_index("candidate")
    return ("volume", f"mean log-likelihood ratio, {best} vs uniform arclength", lr["value"],
            lr["ci_low"], lr["ci_high"], ks.loc[best, "p_value"],
            f"{len(t)} endpoints on the hyperbola, window {window}, eps "
            f"{'-> 0' if eps is None else f'{eps:.3g}'}; {best} fits best among P1-P3 "
            f"(mean log-lik {ll[best]:.4g}; P1 {ll['P1']:.4g}, P2 {ll['P2']:.4g}, "
            f"P3 {ll['P3']:.4g}); KS p = {ks.loc[best, 'p_value']:.3g} "
            f"({'rejected' if ks.loc[best, 'p_value'] < 1 - level else 'not rejected'} at "
            f"{100 * (1 - level):.0f}%); norm-minimizer point mass KS distance "
            f"{ks.loc['norm_minimizer', 'value']:.3g}")
