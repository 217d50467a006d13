"""The verdict table of the norm, rank and volume hypotheses on a cell's endpoints."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sst

from dlnmc.manifold import check_problem
from dlnmc.stats.descriptors import describe, single_depth
from dlnmc.stats.families import Verdict, family
from dlnmc.stats.filters import (EXCLUSIONS, ON_CURVE_TOL, STATUS_LABELS,
                                 endpoint_status, excluded_text)
from dlnmc.stats.fit import check_level
from dlnmc.stats.nuclear import lowest_completion_rank, min_nuclear_norm_completion, problem_key

__all__ = ["hypotheses", "majority"]

RANK_TOL = 0.05
"""A trajectory ends at rank r when its Frobenius distance to the nearest matrix of rank r (the
root sum of squares of the singular values beyond the r largest) is below RANK_TOL ||W||_F: a
stated 5%, the same for every problem (a 2x2 endpoint then has s_2 / s_1 < 0.05, erank < 1.21)."""

COLUMNS = ["hypothesis", "statistic", "value", "ci_low", "ci_high", "p_value", "n",
           "n_excluded", "excluded", "holds", "result"]


def majority(k, n, level) -> tuple[float, float, bool | None]:
    """Clopper-Pearson interval of k / n and the verdict "most trajectories": True when the
    interval lies above 1/2, False when below, None (undecided at this n) when it covers 1/2."""
    ci = sst.binomtest(int(k), int(n)).proportion_ci(level)
    return ci.low, ci.high, True if ci.low > 0.5 else False if ci.high < 0.5 else None


def _decided(holds) -> str:
    return {True: "holds", False: "fails", None: "is undecided (the interval covers 1/2)"}[holds]


def _norm(d, norm_tol, level) -> Verdict:
    n = len(d)
    k = int((d["nuclear_excess"] <= norm_tol).sum())
    lo, hi, holds = majority(k, n, level)
    m_star = float(d["min_nuclear_norm"].iloc[0])
    return Verdict(f"fraction with nuclear norm <= (1 + {norm_tol:g}) m*", k / n, lo, hi,
                   holds=holds,
                   result=f"{k} of {n} trajectories end within {100 * norm_tol:g}% of the "
                          f"minimum nuclear norm m* = {m_star:.6g}: the norm hypothesis "
                          f"{_decided(holds)}")


def _rank(d, problem, rank_tol, level) -> Verdict:
    n = len(d)
    statistic = f"fraction within {rank_tol:g} (relative) of rank r_min"
    erank = d["erank"].to_numpy()
    q1, q2, q3 = np.quantile(erank, [0.25, 0.5, 0.75])
    spread = f"erank median {q2:.4g} (quartiles {q1:.4g}, {q3:.4g})"
    r_min = lowest_completion_rank(problem_key(problem))
    if r_min is None:
        return Verdict(statistic, result=f"{spread}; lowest completion rank not searched "
                                         "(problem larger than 10 x 10): not testable")
    if r_min == min(problem.shape):
        return Verdict(statistic, result=f"{spread}; every completion found has full rank "
                                         f"{r_min}: the rank hypothesis has nothing to choose")
    relative = d[f"dist_rank_{r_min}"].to_numpy() / d["norm_frobenius"].to_numpy()
    k = int(np.sum(relative < rank_tol))
    lo, hi, holds = majority(k, n, level)
    return Verdict(statistic, k / n, lo, hi, holds=holds,
                   result=f"{spread}; lowest completion rank found r_min = {r_min}; {k} of {n} "
                          f"trajectories end within {rank_tol:g} x ||W||_F of a matrix of rank "
                          f"r_min: the rank hypothesis {_decided(holds)}")


def hypotheses(final, problem, depth=None, norm_tol=0.01, window=None, eps=None, n_boot=1000,
               seed=0, level=0.95, described=None, curve_tol=ON_CURVE_TOL,
               rank_tol=RANK_TOL) -> pd.DataFrame:
    """Verdict table: one row per hypothesis (norm, rank, volume) on one cell's endpoints.

    Every row says which trajectories it used (``n``), how many it excluded and why
    (``n_excluded``, ``excluded``: labels of :func:`dlnmc.stats.endpoint_status` with counts),
    and whether the hypothesis ``holds`` (True, False, or NA: not testable here or undecided,
    the reason in ``result``). With fewer than two finished trajectories every row is NA.

    - norm (Gunasekar et al. 2017): the fraction of finished trajectories whose nuclear norm
      is within ``norm_tol`` (relative) of the minimum m* over completions; holds when its
      Clopper-Pearson interval lies above 1/2 (most trajectories), fails below.
    - rank (Razin & Cohen 2020): the fraction of finished trajectories within ``rank_tol``
      (relative Frobenius distance) of a matrix of the lowest completion rank r_min (found by
      :func:`dlnmc.manifold.nearest_rank_r_completion` from the minimum nuclear norm
      completion; problems of at most 100 entries); the same majority rule; NA when every
      completion has full rank (nothing to choose) or the search did not run.
    - volume (Cohen, Menon & Veraszto 2023): the test of the problem's family
      (:data:`dlnmc.stats.families.FAMILIES`) on the endpoints its premise admits (the
      hyperbola task: on the curve; the Razin-Cohen task: bounded; other square problems:
      converged); NA for rectangular problems.

    Parameters
    ----------
    final : DataFrame
        One depth's endpoints (``depth`` column, or pass ``depth``).
    problem : CompletionProblem
    depth : int or numpy.inf, optional
    norm_tol : float
        Relative excess of the nuclear norm over m* still counted as minimal.
    window, eps : optional
        Hyperbola task: window in t and band width of the candidate densities
        (:func:`dlnmc.stats.families.volume_on_hyperbola`).
    n_boot, seed, level
        Bootstrap resamples, seed, confidence level.
    described : DataFrame, optional
        The output of :func:`describe` for ``final`` (computed when absent).
    curve_tol : float
        Tolerance of "on the curve" (:func:`dlnmc.stats.endpoint_status`).
    rank_tol : float
        Relative distance to rank r_min still counted as rank r_min (:data:`RANK_TOL`).
    """
    check_problem(problem)
    check_level(level)
    status = endpoint_status(final, problem, curve_tol).to_numpy()
    finished = ~np.isin(status, EXCLUSIONS)
    kept_finished = [label for label in STATUS_LABELS if label not in EXCLUSIONS]
    fam = family(problem)
    premise = np.isin(status, fam.volume_rows)
    if finished.sum() < 2:
        none = Verdict("", result=f"{int(finished.sum())} finished trajectories: nothing to test")
        rows = [("norm", finished, none, kept_finished), ("rank", finished, none, kept_finished),
                ("volume", premise, none, list(fam.volume_rows))]
        return _table(rows, status)
    depth = single_depth(final[finished], depth)
    desc = (described if described is not None
            else describe(final, problem, depth, min_nuclear_norm_completion(problem)))
    rows = [("norm", finished, _norm(desc[finished], norm_tol, level), kept_finished),
            ("rank", finished, _rank(desc[finished], problem, rank_tol, level), kept_finished)]
    if fam.volume_test is None:
        volume = Verdict("volume", result="g^N has no volume density on rectangular matrices")
    elif premise.sum() < 2:
        volume = Verdict("volume", result=f"{int(premise.sum())} endpoints are "
                                          f"{' or '.join(fam.volume_rows)}: nothing to test")
    else:
        volume = fam.volume_test(final[premise], problem, depth, window=window, eps=eps,
                                 n_boot=n_boot, seed=seed, level=level, curve_tol=curve_tol)
    rows.append(("volume", premise, volume, list(fam.volume_rows)))
    return _table(rows, status)


def _table(rows, status) -> pd.DataFrame:
    """The verdict table from (hypothesis, rows kept, Verdict, labels kept) tuples."""
    out = pd.DataFrame(
        [(name, v.statistic, v.value, v.ci_low, v.ci_high, v.p_value, int(kept.sum()),
          int((~kept).sum()), excluded_text(status, labels), v.holds, v.result)
         for name, kept, v, labels in rows], columns=COLUMNS)
    return out.astype({"hypothesis": "string", "statistic": "string", "value": "float64",
                       "ci_low": "float64", "ci_high": "float64", "p_value": "float64",
                       "n": "int64", "n_excluded": "int64", "excluded": "string",
                       "holds": "boolean", "result": "string"})
