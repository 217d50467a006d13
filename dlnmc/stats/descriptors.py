"""Per-trajectory descriptors of endpoints: spectrum, norms, distances to lower rank and to
the minimum nuclear norm set, predicted volume and orbit volume of g^N."""
from __future__ import annotations

import numpy as np
import pandas as pd

from dlnmc import geometry
from dlnmc.manifold import check_problem, endpoint_matrices
from dlnmc.results import effective_rank
from dlnmc.stats.filters import usable_rows
from dlnmc.stats.nuclear import NuclearCompletion, min_nuclear_norm_completion

__all__ = ["describe", "row_depths", "as_depth", "single_depth"]


def row_depths(final, depth):
    if depth is not None:
        return np.full(len(final), float(depth))
    if "depth" not in final.columns:
        raise ValueError("final has no depth column: pass depth")
    return final["depth"].to_numpy(dtype=np.float64)


def as_depth(value):
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
    check_problem(problem)
    if nuclear not in ("set", "point") and not isinstance(nuclear, NuclearCompletion):
        raise ValueError(f"nuclear must be 'set', 'point' or a NuclearCompletion, got {nuclear!r}")
    W = endpoint_matrices(final, problem.shape)
    depths = row_depths(final, depth)
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
            log_vol[rows] = geometry.log_volume_density(W[rows], as_depth(value))
            if value != np.inf:
                log_orbit[rows] = geometry.log_orbit_volume(W[rows], as_depth(value))
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



def single_depth(final, depth):
    if depth is not None:
        return as_depth(float(depth))
    values = np.unique(row_depths(final, None))
    if len(values) != 1:
        raise ValueError(f"the table holds depths {values.tolist()}: pass one depth's rows")
    return as_depth(values[0])
