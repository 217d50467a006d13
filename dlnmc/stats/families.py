"""Problem families: how a family refines the finished endpoints (on or off its solution curve,
bounded or not) and which test of the volume hypothesis applies to it.

:data:`FAMILIES` is the registry: the first family whose ``matches`` accepts a problem is its
family. A new family is one more entry (put it before the general ones it specializes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats as sst

from dlnmc import predictions
from dlnmc.manifold import endpoint_matrices, hyperbola_coordinates, is_hyperbola_task
from dlnmc.results import det_sign
from dlnmc.stats.clustering import clusters
from dlnmc.stats.fit import compare

__all__ = ["Family", "FAMILIES", "family", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """One verdict: a statistic with its interval and p-value, whether the hypothesis holds
    (True, False, or None: not testable here or undecided, the reason in ``result``)."""

    statistic: str
    value: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    holds: bool | None = None
    result: str = ""


@dataclass(frozen=True)
class Family:
    """A problem family.

    Attributes
    ----------
    name : str
    matches : callable(problem) -> bool
    labels : tuple of str
        The labels (from :data:`dlnmc.stats.filters.STATUS_LABELS`) it gives finished rows.
    refine : callable(final, curve_tol) -> labels
        Those labels for the finished rows of ``final``.
    volume_rows : tuple of str
        The labels of the rows the volume hypothesis speaks of (its premise: endpoints at or
        near a minimizer at finite distance).
    volume_test : callable or None
        ``test(final, problem, depth, window, eps, n_boot, seed, level, curve_tol) ->``
        :class:`Verdict` on those rows; None where g^N has no volume to compare.
    """

    name: str
    matches: Callable
    labels: tuple
    refine: Callable
    volume_rows: tuple
    volume_test: Callable | None


def _on_curve(final, curve_tol):
    coords = hyperbola_coordinates(final)
    on = (coords["branch"] != 0) & (coords["hyperbola_dist"] < curve_tol)
    return np.where(on, "on_curve", "off_curve")


def _is_razin_cohen_task(problem) -> bool:
    return problem.shape == (2, 2) and dict(problem.entries) == {
        (0, 1): 1.0, (1, 0): 1.0, (1, 1): 0.0}


def _det_sign(final, curve_tol):
    """Razin & Cohen (2020): every solution has det W = -1, and under gradient flow det W keeps
    its sign; an endpoint with det W > 0 lies on a trajectory with no limit point."""
    sign = (det_sign(final) if "det" in final
            else np.sign(np.linalg.det(endpoint_matrices(final, (2, 2)))))
    return np.where(sign > 0, "unbounded", "bounded")


def _converged(final, curve_tol):
    return np.full(len(final), "converged")


def volume_on_hyperbola(final, problem, depth, window=None, eps=None, n_boot=1000, seed=0,
                        level=0.95, curve_tol=None) -> Verdict:
    """The volume hypothesis on the hyperbola ab = 1 (Cohen, Menon & Veraszto 2023): does the
    law of t = log|a| of the endpoints on the curve follow one of the candidate densities P1,
    P2, P3 (:mod:`dlnmc.predictions`)?

    Holds when at least one candidate is not rejected by the KS test at level
    (1 - level) / 3 (Bonferroni over the three), fails when all three are rejected. The
    statistic is the mean log-likelihood ratio of the best candidate (by likelihood) against
    the uniform arclength baseline. Window: symmetric, max(3, max|t| + 0.5) by default;
    samples outside a given window are counted and kept (a candidate gives them density 0
    and is rejected by them, :func:`dlnmc.stats.compare`). eps: the band width of P1 and P2,
    by default the median |1 - ab| of the endpoints.
    """
    coords = hyperbola_coordinates(final)
    t = coords["t"].to_numpy()
    statistic = "mean log-likelihood ratio, best of P1-P3 vs uniform arclength"
    if len(t) < 2:
        return Verdict(statistic, result=f"{len(t)} endpoints on the curve: nothing to test")
    if window is None:
        half = max(3.0, math.ceil(2 * (np.max(np.abs(t)) + 0.5)) / 2)
        window = (-half, half)
    if eps is None:
        med = float(np.median(coords["hyperbola_dist"]))
        eps = med if 0 < med < 1 else None
    table = compare(t, predictions.candidates(depth, window, eps), n_boot=n_boot, seed=seed,
                    level=level)
    ll = table[table["statistic"] == "mean_loglik"].set_index("candidate")["value"]
    ks = table[table["statistic"] == "ks"].set_index("candidate")
    names = ["P1", "P2", "P3"]
    best = ll[names].idxmax() if np.isfinite(ll[names]).any() else ks.loc[names, "p_value"].idxmax()
    lr = table[(table["statistic"] == "loglik_ratio") & (table["candidate"] == best)
               & (table["versus"] == "uniform_arclength")].iloc[0]
    alpha = (1.0 - level) / 3
    p = ks.loc[names, "p_value"]
    holds = bool((p >= alpha).any())
    outside = int(ks.loc[best, "n_outside"])
    verdict = (f"{', '.join(p[p >= alpha].index)} not rejected: the volume hypothesis holds"
               if holds else "all three rejected: the volume hypothesis fails")
    return Verdict(statistic, lr["value"], lr["ci_low"], lr["ci_high"], float(p.max()), holds,
                   f"{len(t)} endpoints on the curve, window {tuple(window)} ({outside} outside, "
                   f"kept), eps {'-> 0' if eps is None else f'{eps:.3g}'}; KS p: "
                   + ", ".join(f"{c} {p[c]:.3g}" for c in names)
                   + f" (level {alpha:.3g} each); best {best}, mean log-lik ratio vs uniform "
                   f"arclength {lr['value']:.3g}; " + verdict)


def volume_by_clusters(final, problem, depth, window=None, eps=None, n_boot=1000, seed=0,
                       level=0.95, curve_tol=None) -> Verdict:
    """The volume hypothesis among kinds of minimizer: do the endpoints pile up in the
    symmetry class of clusters of largest predicted volume (:func:`dlnmc.stats.clusters`)?

    Holds when the heaviest class (by number of endpoints) is the class of largest
    regularized volume density; fails when another class is heavier; not testable with one
    class or when no class holds ``min_size`` runs of :func:`clusters` (nothing piles up);
    undecided when the largest-volume class ties for the most runs. The statistic is the mass
    of the largest-volume class, with a Clopper-Pearson interval.
    """
    statistic = "fraction in the symmetry class of largest predicted volume"
    cl = clusters(final, problem, depth, seed=seed)
    n = int(cl["size"].sum())
    classes = cl.groupby("symmetry_class").agg(size=("size", "sum"),
                                               max_volume=("is_max_volume", "first"),
                                               rank=("rank", "min"), clusters=("size", "size"))
    where = (f"{len(cl)} clusters of diameter <= {cl.attrs['dlnmc_stats']['threshold']:.3g} "
             f"in {len(classes)} symmetry classes")
    if len(classes) == 1:
        return Verdict(statistic, result=f"{where}: one class, nothing for the volume "
                                         "hypothesis to choose between")
    top = classes[classes["max_volume"]].iloc[0]
    k = int(top["size"])
    ci = sst.binomtest(k, n).proportion_ci(level)
    most = classes["size"].max()
    heaviest = classes[classes["size"] == most]
    min_size = cl.attrs["dlnmc_stats"]["min_size"]
    found = (f"{where}; the class of largest predicted volume ({top['clusters']} clusters, "
             f"centre rank {top['rank']}) holds {100 * k / n:.1f}%; ")
    if most < min_size:
        return Verdict(statistic, k / n, ci.low, ci.high, result=found + (
            f"no class holds {min_size} runs: the endpoints pile up nowhere, not testable"))
    if len(heaviest) > 1 and top.name in heaviest.index:
        return Verdict(statistic, k / n, ci.low, ci.high, result=found + (
            f"{len(heaviest)} classes tie for the most runs ({most}): undecided"))
    holds = bool(top.name in heaviest.index)
    heavy = heaviest.iloc[0]
    verdict = ("it is the heaviest class: the volume hypothesis holds" if holds
               else f"the heaviest class holds {100 * heavy['size'] / n:.1f}% (centre rank "
                    f"{heavy['rank']}): the volume hypothesis fails")
    return Verdict(statistic, k / n, ci.low, ci.high, math.nan, holds, found + verdict)


FAMILIES = (
    Family("hyperbola", is_hyperbola_task, ("on_curve", "off_curve"), _on_curve, ("on_curve",),
           volume_on_hyperbola),
    Family("razin_cohen", _is_razin_cohen_task, ("bounded", "unbounded"), _det_sign,
           ("bounded",), volume_by_clusters),
    Family("square", lambda problem: problem.is_square, ("converged",), _converged,
           ("converged",), volume_by_clusters),
    Family("rectangular", lambda problem: True, ("converged",), _converged, ("converged",),
           None),
)
"""The registry, most specific first."""


def family(problem) -> Family:
    """The first family of :data:`FAMILIES` that matches ``problem``."""
    return next(f for f in FAMILIES if f.matches(problem))
