"""Which endpoints enter which statistic: one definition of every filter, used everywhere.

:func:`endpoint_status` gives each trajectory one label. Every table and verdict that keeps a
subset of trajectories keeps them by these labels and counts the rest by label
(:func:`status_counts`), so that "converged" and "on the curve" mean the same in every table.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from dlnmc.manifold import check_problem, endpoint_matrices

__all__ = ["ON_CURVE_TOL", "STATUS_LABELS", "EXCLUSIONS", "usable_rows", "endpoint_status",
           "status_counts", "excluded_text"]

ON_CURVE_TOL = 0.05
"""An endpoint of the 2x2 hyperbola task is on the curve when |1 - ab| = |det W| < 0.05 (and it
converged). t = log|a| means something only there: the endpoints of the segment a = b,
|a| < 1 (the minimum nuclear norm completions) have |1 - ab| = 1 - a^2."""

STATUS_LABELS = ("diverged", "stuck_at_origin", "not_converged", "off_curve", "unbounded",
                 "on_curve", "bounded", "converged")
"""Labels of :func:`endpoint_status`: three ways of not finishing, then the problem family's
refinement of the finished runs (:data:`dlnmc.stats.families.FAMILIES`)."""

EXCLUSIONS = STATUS_LABELS[:3]
"""Labels of runs that did not finish: no statistic of endpoints keeps them."""


def usable_rows(final, shape) -> np.ndarray:
    """Boolean mask of the rows whose endpoint exists: not diverged, all entries of the
    ``shape`` endpoint finite."""
    W = endpoint_matrices(final, shape).reshape(len(final), -1)
    ok = np.all(np.isfinite(W), axis=1)
    if "status" in final.columns:
        ok &= (final["status"].astype(str) != "diverged").to_numpy()
    return ok


def endpoint_status(final, problem, curve_tol=ON_CURVE_TOL) -> pd.Series:
    """One label per trajectory: why it is excluded from endpoint statistics, or what it is.

    Parameters
    ----------
    final : DataFrame
        An engine's ``final`` table (``status``, ``loss``, ``w_<i>_<j>``; ``temperature`` and,
        for square problems, ``det`` when present).
    problem : CompletionProblem
    curve_tol : float
        Tolerance of "on the curve" for the hyperbola task (|1 - ab| < curve_tol).

    Returns
    -------
    Series
        Categorical over :data:`STATUS_LABELS`, indexed like ``final``:

        - ``diverged``: status ``diverged`` or an entry not finite;
        - ``stuck_at_origin``: did not finish and the loss is still at least half the loss
          l(0) = |b|^2 / 2 of W = 0, the saddle every small init starts next to;
        - ``not_converged``: did not finish otherwise (loss above tol at the horizon);
        - finished runs (status ``converged``; noisy runs, ``temperature > 0``, have no
          convergence and count as finished when they ran to their horizon): the problem
          family's label (:func:`dlnmc.stats.families.family`): ``on_curve`` / ``off_curve``
          on the hyperbola task, ``bounded`` / ``unbounded`` on the Razin-Cohen task (by the
          sign of det W: det > 0 is the theorem's regime, which has no limit point),
          ``converged`` elsewhere.
    """
    from dlnmc.stats.families import family  # families import this module

    check_problem(problem)
    if not 0 < curve_tol < 1:
        raise ValueError(f"curve_tol must lie in (0, 1), got {curve_tol!r}")
    missing = {"status", "loss"} - set(final.columns)
    if missing:
        raise ValueError(f"final lacks columns {sorted(missing)}")
    status = final["status"].astype(str).to_numpy()
    loss = final["loss"].to_numpy(dtype=np.float64)
    noisy = (final["temperature"].to_numpy(dtype=np.float64) > 0 if "temperature" in final
             else np.zeros(len(final), dtype=bool))
    finished = (status == "converged") | (noisy & (status == "max_steps"))
    origin_loss = 0.5 * float(np.sum(problem.values**2))
    label = np.where(finished, "", np.where(loss >= 0.5 * origin_loss, "stuck_at_origin",
                                            "not_converged")).astype(object)
    label[~usable_rows(final, problem.shape) | ~np.isfinite(loss)] = "diverged"
    done = label == ""
    label[done] = family(problem).refine(final[done], curve_tol)
    return pd.Series(pd.Categorical(label, categories=list(STATUS_LABELS)), index=final.index,
                     name="endpoint_status")


def status_counts(status, problem=None) -> dict[str, int]:
    """``{"n_<label>": count}`` (zeros included) for the labels :func:`endpoint_status` can give
    on ``problem``'s family (the exclusions, then the family's labels), or for every label of
    :data:`STATUS_LABELS` when ``problem`` is None."""
    from dlnmc.stats.families import family

    labels = STATUS_LABELS if problem is None else EXCLUSIONS + family(problem).labels
    counts = pd.Series(status).value_counts()
    return {f"n_{label}": int(counts.get(label, 0)) for label in labels}


def excluded_text(status, kept) -> str:
    """``"diverged 3, stuck_at_origin 69"``: the labels outside ``kept`` with their counts."""
    counts = pd.Series(status).value_counts()
    parts = [f"{label} {int(counts[label])}" for label in STATUS_LABELS
             if label not in kept and counts.get(label, 0)]
    return ", ".join(parts) if parts else "none"
