"""Arora, Cohen, Hu & Luo (2019) at their published size: 100x100 ground truth of rank 5,
m = 2000, 3000, 5000 observed entries, depths 2, 3, 4, init 1e-3 .. 1e-6; does depth recover
the truth where the minimum nuclear norm completion does not (mathematics.md section 5.5)?

Two optimizers on the same grid points.  ``rmsprop``: their code's setting, the global RMSprop
of mathematics.md section 1.6 with lr 1e-3 on their mean squared error (``objective="mse"``),
their Gaussian init (the label ``arora_init`` is their init; ``init_scale = arora_init / 10``
is the entry standard deviation of W(0)), stop once their loss is <= 1e-6.  ``gd``: plain GD on l with the step
``lr_for`` (half the edge of stability at the truth, as in the ``nuclear_norm`` study), the same
init and stop, at init 1e-3 and 1e-5.  One ground truth per m (problem seed 0;
``random_low_rank`` draws the truth and the observed set from (seed, shape, rank, m), so the
three m have different truths, each with top singular values about 51 .. 36).

Every statistic keeps the converged runs (:func:`dlnmc.stats.endpoint_status`) and counts the
others.  The claims (:func:`claims`) compare each run's relative error with the minimum nuclear
norm completion's on the same problem (:func:`dlnmc.stats.min_nuclear_norm_completion`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from dlnmc import random_low_rank, stats
from dlnmc.figures import save, use_theme
from dlnmc.manifold import endpoint_matrices
from dlnmc.results import effective_rank
from dlnmc.study import Cell

NAME = "arora_2019"
DESCRIPTION = (
    "Arora, Cohen, Hu & Luo (2019) at published size: 100x100 rank-5 completion from m = 2000, "
    "3000, 5000 entries, depths 2-4, init 1e-3 to 1e-6, their global RMSprop on the mean "
    "squared error and plain GD: relative error and effective rank against m and init, next "
    "to the minimum nuclear norm completion and the ground truth."
)

PROBLEM_SEED = 0
FULL = dict(size=100, rank=5, counts=(2000, 3000, 5000), depths=(2, 3, 4),
            inits=(1e-3, 1e-4, 1e-5, 1e-6), gd_inits=(1e-3, 1e-5), runs=2, max_steps=10**5)
QUICK = dict(size=20, rank=2, counts=(160,), depths=(2, 3), inits=(1e-3,), gd_inits=(1e-3,),
             runs=1, max_steps=3 * 10**4)
RMSPROP_LR = 1e-3
MSE_TOL = 1e-6
"""Their stop: mean squared error <= 1e-6, i.e. l <= m / 2 * 1e-6."""
GROUP = ["size", "n_observed", "optimizer", "depth", "arora_init"]
_FLOOR = 1e-4
"""Lowest relative error drawn (the minimum nuclear norm completion is exact to 1e-11 at
m = 3000 and 5000; the runs stop at errors of about 2e-3)."""


def problem_of(size, rank, n_observed):
    """The study's ground truth and observations for one m."""
    return random_low_rank(size, size, rank, n_observed, seed=PROBLEM_SEED)


def lr_for(problem, depth) -> float:
    """Plain GD's step: 1 / (N s1^(2 - 2/N)), half the edge of stability of a balanced
    factorization of the truth (s1 its top singular value; see the ``nuclear_norm`` study)."""
    s1 = np.linalg.norm(problem.ground_truth, 2)
    return float(1.0 / (depth * s1 ** (2.0 - 2.0 / depth)))


def cells(quick: bool) -> list[Cell]:
    """RMSprop on every (m, depth, init), plain GD on every (m, depth) at ``gd_inits``; full:
    2 runs a cell, up to 1e5 steps; quick: 20x20 rank 2, m = 160, depths 2 and 3, init 1e-3."""
    grid = FULL if not quick else QUICK
    size, rank, out = grid["size"], grid["rank"], []
    for m in grid["counts"]:
        problem = problem_of(size, rank, m)
        for depth in grid["depths"]:
            for optimizer, inits in (("rmsprop", grid["inits"]), ("gd", grid["gd_inits"])):
                for init in inits:
                    lr = RMSPROP_LR if optimizer == "rmsprop" else lr_for(problem, depth)
                    out.append(Cell(
                        key=f"m{m}_N{depth}_{optimizer}_init{init:g}",
                        problem="random_low_rank",
                        problem_args=dict(rows=size, cols=size, rank=rank, n_observed=m,
                                          seed=PROBLEM_SEED),
                        params=dict(depth=depth, lr=lr, optimizer=optimizer,
                                    objective="mse" if optimizer == "rmsprop" else "half_sse",
                                    init="gaussian", init_scale=init / np.sqrt(size),
                                    tol=m / 2 * MSE_TOL, max_steps=grid["max_steps"],
                                    checkpoints=None),
                        runs=grid["runs"],
                        labels={"size": size, "rank": rank, "n_observed": m,
                                "optimizer": optimizer, "arora_init": init}))
    return out


def relative_errors(final, problem) -> np.ndarray:
    """|W - W*|_F / |W*|_F of each endpoint against the ground truth W*."""
    truth = problem.ground_truth
    W = endpoint_matrices(final, problem.shape)
    return np.linalg.norm(W - truth, axis=(1, 2)) / np.linalg.norm(truth)


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """Tables:

    - ``runs``: one row per run: ``GROUP``, ``status`` (:func:`dlnmc.stats.endpoint_status`),
      ``steps``, ``rel_error``, ``erank``, ``nuclear_norm`` of the endpoint;
    - ``nuclear``: per m, the minimum nuclear norm completion's ``rel_error``, ``erank`` and
      ``norm``, and the ground truth's ``truth_erank`` and ``truth_nuclear_norm``;
    - ``errors``: per grid point, ``runs``, ``n`` (converged), the excluded by reason, median
      and maximum ``rel_error``, median ``erank``, median ``steps``;
    - ``claims``: :func:`claims`.
    """
    runs, nuclear = [], []
    for (size, rank, m), part in final.groupby(["size", "rank", "n_observed"], observed=True):
        problem = problem_of(size, rank, m)
        W = endpoint_matrices(part, problem.shape)
        finite = np.isfinite(W).all(axis=(1, 2))
        norms = np.full(len(part), np.nan)
        norms[finite] = np.linalg.svd(W[finite], compute_uv=False).sum(axis=1)
        runs.append(part[GROUP + ["run", "steps", "erank"]].assign(
            status=stats.endpoint_status(part, problem).to_numpy(),
            rel_error=relative_errors(part, problem), nuclear_norm=norms))
        solution = stats.min_nuclear_norm_completion(problem)
        truth = problem.ground_truth
        sv = np.linalg.svd(solution.matrix, compute_uv=False)
        true_sv = np.linalg.svd(truth, compute_uv=False)
        nuclear.append(dict(size=size, n_observed=m, norm=solution.norm,
                            rel_error=np.linalg.norm(solution.matrix - truth) / np.linalg.norm(truth),
                            erank=float(effective_rank(sv)), truth_nuclear_norm=true_sv.sum(),
                            truth_erank=float(effective_rank(true_sv))))
    runs = pd.concat(runs, ignore_index=True)
    runs["status"] = runs["status"].astype(str)
    nuclear = pd.DataFrame(nuclear)
    flags = {f"n_{label}": runs["status"] == label for label in stats.EXCLUSIONS}
    counts = (runs.assign(runs=1, n=runs["status"] == "converged", **flags)
              .groupby(GROUP, observed=True)[["runs", "n", *flags]].sum().reset_index())
    kept = runs[runs["status"] == "converged"].groupby(GROUP, observed=True)
    errors = counts.merge(kept.agg(
        rel_error_median=("rel_error", "median"), rel_error_max=("rel_error", "max"),
        erank_median=("erank", "median"), steps_median=("steps", "median")).reset_index(),
        on=GROUP, how="left")
    return {"runs": runs, "nuclear": nuclear, "errors": errors,
            "claims": claims(runs, nuclear)}


def claims(runs, nuclear) -> pd.DataFrame:
    """The paper's two claims, tested on the converged runs of each optimizer:

    - ``beats_nuclear`` (per optimizer, m and depth, at the largest init, the setting of their
      figure): every converged run's relative error is below the minimum nuclear norm
      completion's (``value``: the largest run error, ``reference``: the nuclear norm's);
    - ``error_falls_with_init`` (per optimizer, m and depth): the median error at the
      smallest init is below the median at the largest (``value``: the former,
      ``reference``: the latter).  Runs stop at their loss tol, which leaves a relative error
      of about 2e-3 (m = 5000) to 5e-3 (m = 2000) even on the truth's side: differences
      below that floor are not resolved.

    ``n``: converged runs entering the claim, ``n_excluded``: the others; ``holds`` is NA when
    a compared group has no converged run.
    """
    rows = []
    kept = runs[runs["status"] == "converged"]
    for (optimizer, m, depth), part in runs.groupby(["optimizer", "n_observed", "depth"]):
        good = kept[(kept["optimizer"] == optimizer) & (kept["n_observed"] == m)
                    & (kept["depth"] == depth)]
        nuc = float(nuclear.loc[nuclear["n_observed"] == m, "rel_error"].iloc[0])
        top, low = part["arora_init"].max(), part["arora_init"].min()
        at_top = good[good["arora_init"] == top]
        rows.append(_claim("beats_nuclear", optimizer, m, depth, f"init {top:g}",
                           at_top["rel_error"].max() if len(at_top) else np.nan, nuc,
                           len(at_top), int((part["arora_init"] == top).sum()) - len(at_top)))
        if low < top:
            at_low = good[good["arora_init"] == low]
            compared = part["arora_init"].isin([low, top])
            value = at_low["rel_error"].median() if len(at_low) else np.nan
            reference = at_top["rel_error"].median() if len(at_top) else np.nan
            rows.append(_claim("error_falls_with_init", optimizer, m, depth,
                               f"init {low:g} vs {top:g}", value, reference,
                               len(at_low) + len(at_top),
                               int(compared.sum()) - len(at_low) - len(at_top)))
    return pd.DataFrame(rows).astype({"holds": "boolean"})


def _claim(claim, optimizer, m, depth, setting, value, reference, n, n_excluded) -> dict:
    holds = pd.NA if np.isnan(value) or np.isnan(reference) else bool(value < reference)
    return dict(claim=claim, optimizer=optimizer, n_observed=m, depth=depth, setting=setting,
                value=value, reference=reference, n=n, n_excluded=n_excluded, holds=holds)


def findings(tables) -> list[str]:
    """Sentences for the report from ``errors``, ``nuclear`` and ``claims``: the paper's own
    setting first (m = 2000, their optimizer, the largest init), then each claim's tally."""
    errors, claims_, nuclear = tables["errors"], tables["claims"], tables["nuclear"]
    lines = []
    for m, row in nuclear.set_index("n_observed").iterrows():
        top = errors[(errors["n_observed"] == m) & (errors["optimizer"] == "rmsprop")]
        top = top[top["arora_init"] == top["arora_init"].max()]
        by_depth = ", ".join(f"N = {r.depth}: {r.rel_error_median:.2g} (erank "
                             f"{r.erank_median:.3g}, {r.n} of {r.runs} converged)"
                             for r in top.itertuples())
        lines.append(f"m = {m}: the minimum nuclear norm completion has relative error "
                     f"{row['rel_error']:.2g} and effective rank {row['erank']:.3g} (the ground "
                     f"truth's {row['truth_erank']:.3g}; `nuclear`); RMSprop at init "
                     f"{top['arora_init'].max():g}, median relative error {by_depth} "
                     "(`errors`).")
    for name, text in (("beats_nuclear", "every converged run's error below the minimum "
                                         "nuclear norm completion's, at the largest init"),
                       ("error_falls_with_init", "median error lower at the smallest init "
                                                 "than at the largest")):
        for optimizer, sub in claims_[claims_["claim"] == name].groupby("optimizer"):
            held = sub[sub["holds"].fillna(False).astype(bool)]
            cases = "; ".join(f"m = {r.n_observed} N = {r.depth}: {r.value:.2g} vs "
                              f"{r.reference:.2g} ({_word(r.holds)})" for r in sub.itertuples())
            lines.append(f"{optimizer}, {text}: holds in {len(held)} of {len(sub)} cases "
                         f"({int(sub['holds'].isna().sum())} n/a): {cases} (`claims`).")
    return lines


def _word(holds) -> str:
    return "n/a" if pd.isna(holds) else ("holds" if holds else "fails")


def figures(final, history, tables, directory) -> list:
    """``error_vs_m`` (median relative error at the largest init against m, one line per depth,
    a panel per optimizer, the minimum nuclear norm completion's error as a dashed line),
    ``error_vs_init`` (against init, a panel per optimizer and m, the nuclear norm's error as a
    dashed line) and ``erank_vs_init`` (median effective rank, the ground truth's as a dashed
    line)."""
    use_theme()
    errors, nuclear = tables["errors"], tables["nuclear"]
    data = errors.assign(N=errors["depth"].map("N = {}".format))
    top = data[data["arora_init"] == data.groupby("optimizer")["arora_init"].transform("max")]
    paths = []
    grid = sns.relplot(data=top, x="n_observed", y="rel_error_median", hue="N", style="N",
                       col="optimizer", kind="line", markers=True, height=3.2, aspect=1.1)
    for ax in grid.axes.flat:
        ax.plot(nuclear["n_observed"], nuclear["rel_error"].clip(lower=_FLOOR), "k--",
                linewidth=1, label=f"min nuclear norm (clipped at {_FLOOR:g})")
        ax.legend(fontsize=8)
    grid.set(yscale="log", ylim=(_FLOOR, 1.0))
    grid.set_axis_labels("observed entries m", "relative error (median)")
    grid.set_titles("{col_name}")
    paths.append(save(grid, directory, "error_vs_m"))
    for name, column, reference, label in (
            ("error_vs_init", "rel_error_median", "rel_error", "relative error (median)"),
            ("erank_vs_init", "erank_median", "truth_erank", "effective rank (median)")):
        grid = sns.relplot(data=data, x="arora_init", y=column, hue="N", style="N", row="optimizer",
                           col="n_observed", kind="line", markers=True, height=2.8, aspect=1.1)
        for (optimizer, m), ax in grid.axes_dict.items():
            level = float(nuclear.loc[nuclear["n_observed"] == m, reference].iloc[0])
            if column == "rel_error_median" and level < _FLOOR:
                ax.annotate(f"min nuclear norm: {level:.0e}", (0.03, 0.04),
                            xycoords="axes fraction", fontsize=8, color="0.3")
            else:
                ax.axhline(level, color="k", linestyle="--", linewidth=1)
        grid.set_titles("{row_name}, m = {col_name}")
        grid.set(xscale="log")
        if column == "rel_error_median":
            grid.set(yscale="log", ylim=(_FLOOR, 1.0))
        grid.set_axis_labels("init (Arora et al.'s scale)", label)
        paths.append(save(grid, directory, name))
    return paths
