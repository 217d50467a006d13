"""Goodness of fit of an empirical sample on a solution curve against candidate densities:
Kolmogorov-Smirnov, Wasserstein-1, likelihoods and Vuong's test, with bootstrap intervals."""
from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats as sst

from dlnmc.predictions import PointMass

__all__ = ["compare", "percentile_ci", "check_level"]


def check_level(level):
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")


def percentile_ci(boot, level):
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
        ``versus``, ``value``, ``ci_low``, ``ci_high``, ``p_value``, ``n``, ``n_outside``.
        Statistics: ``ks`` (Kolmogorov-Smirnov distance, exact CDF by quadrature; p-value from
        the exact null distribution ``scipy.stats.kstwo``, valid for a continuous candidate
        fixed in advance; NaN for a point mass, whose CDF is not continuous, so that no KS
        test is reported against it), ``wasserstein1`` (in units of t), ``mean_loglik`` (per
        trajectory; -inf for a point mass or a sample outside a window), ``loglik_ratio``
        (mean per-trajectory log likelihood ratio of ``candidate`` against ``versus``; p-value
        of Vuong's (1989) test of equal fit, z = sqrt(n) mean / sd). Intervals are bootstrap
        percentiles (NaN where a resample gives a non-finite value).

        No sample is dropped: ``n_outside`` counts the samples where the candidate has no
        density (outside its window). The KS distance is computed on the whole sample (the
        candidate's CDF is 0 below its window and 1 above), and a candidate with samples
        outside its support is impossible for them: its KS p-value is 0.
    """
    t = np.sort(np.asarray(sample_t, dtype=np.float64).ravel())
    if t.size < 2 or not np.all(np.isfinite(t)):
        raise ValueError("sample_t must hold at least 2 finite values")
    if not isinstance(candidates, Mapping) or not candidates:
        raise ValueError("candidates must be a non-empty mapping name -> candidate")
    check_level(level)
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
            lp = c.logpdf(t)
            ev[name] = dict(F=c.cdf(t), G=c.partial_mean(t), lp=lp,
                            M=c.quantile_integral(np.arange(n + 1) / n),
                            outside=0 if isinstance(c, PointMass) else int(np.sum(lp == -np.inf)))
    rows = []

    def add(name, stat, value, boot, p=np.nan, versus=None):
        lo, hi = percentile_ci(boot, level)
        rows.append((name, stat, versus, value, lo, hi, p, n, ev[name]["outside"]))

    for name in names:
        e = ev[name]
        D = _ks(e["F"])
        p = (np.nan if isinstance(candidates[name], PointMass)
             else 0.0 if e["outside"] else float(sst.kstwo.sf(D, n)))
        add(name, "ks", D, _ks(e["F"][idx]), p)
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
                                     "ci_high", "p_value", "n", "n_outside"])
    df = df.astype({"candidate": "string", "statistic": "string", "versus": "string",
                    "value": "float64", "ci_low": "float64", "ci_high": "float64",
                    "p_value": "float64", "n": "int64", "n_outside": "int64"})
    df.attrs = {"dlnmc_stats": {"n_boot": int(n_boot), "seed": int(seed), "level": level}}
    return df
