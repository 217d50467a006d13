"""The 3x3 task of the lecture notes: does most of a batch of 500 runs end near one rank-2
minimizer out of many (REFERENCE.md section 5.3; the observed entries are UNCONFIRMED)?

With only the diagonal observed and nonzero, rank-1 completions exist, so a "rank-2 minimizer"
needs zeros or other observations.  The variants: the diagonal (1, 1, 1) and (1, 1, 0), and six
observed entries of a random rank-2 matrix (minimal rank 2, a two-parameter family of rank-2
completions).  Balanced init at scale 1e-2, lr = 0.1 / N.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from dlnmc import stats
from dlnmc.figures import legend_above, save, use_theme
from dlnmc.problems import CATALOGUE
from dlnmc.study import Cell

NAME = "diagonal_3x3"
DESCRIPTION = (
    "The lecture's 3x3 claim (most of 500 runs end near one rank-2 minimizer) tested on three "
    "tasks: observed diagonal (1, 1, 1), observed diagonal (1, 1, 0), and six observed entries "
    "of a random rank-2 matrix; depths 2, 3, 4, balanced init at scale 1e-2, 500 runs each.  "
    "Numerical ranks of the endpoints, clusters with their masses, ranks and volumes."
)

VARIANTS = {
    "diag_1_1_1": ("diagonal_3x3", {"values": (1.0, 1.0, 1.0)}),
    "diag_1_1_0": ("diagonal_3x3", {"values": (1.0, 1.0, 0.0)}),
    "rank2_m6": ("random_low_rank", {"rows": 3, "cols": 3, "rank": 2, "n_observed": 6, "seed": 0}),
}
"""Variant name -> (catalogue problem, arguments)."""
DEPTHS = (2, 3, 4)
RANK_TOL = 1e-2
"""Numerical rank: singular values above RANK_TOL times the largest (init scale 1e-2 leaves
residues of about that size in the unobserved directions)."""
TOP_CLUSTERS = 6
"""Clusters drawn per variant and depth, heaviest first."""
LR_TAU = 0.1
SCALE = 1e-2


def problem(variant):
    """The completion problem of a variant."""
    name, args = VARIANTS[variant]
    return CATALOGUE[name](**args)


def cells(quick: bool) -> list[Cell]:
    """Full: 3 variants x depths 2, 3, 4, 500 runs, up to 1e6 steps.  Quick: variants
    diag_1_1_1 and rank2_m6 at depths 2 and 3, 100 runs, up to 1e5 steps."""
    variants = ("diag_1_1_1", "rank2_m6") if quick else tuple(VARIANTS)
    return [Cell(key=f"{variant}_N{depth}", problem=VARIANTS[variant][0],
                 problem_args=VARIANTS[variant][1],
                 params=dict(depth=depth, lr=LR_TAU / depth, init="balanced", init_scale=SCALE,
                             tol=1e-10, max_steps=10**5 if quick else 10**6, checkpoints=None),
                 runs=100 if quick else 500, labels={"variant": variant})
            for variant in variants for depth in (DEPTHS[:2] if quick else DEPTHS)]


def _numerical_rank(final) -> np.ndarray:
    sv = final[["sv_0", "sv_1", "sv_2"]].to_numpy()
    return (sv > RANK_TOL * sv[:, :1]).sum(axis=1)


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """``endpoints`` (status and erank per variant and depth), ``ranks`` (fraction of runs per
    numerical rank), ``clusters`` (:func:`dlnmc.stats.clusters` per variant and depth),
    ``claim`` (the heaviest cluster: mass, rank, whether it holds more than half the runs and
    has the largest predicted volume) and ``verdicts`` (:func:`dlnmc.stats.hypotheses`)."""
    group = ["variant", "depth"]
    ends = final.assign(rank=_numerical_rank(final), converged=final["status"] == "converged")
    endpoints = ends.groupby(group, observed=True).agg(
        runs=("run", "size"), frac_converged=("converged", "mean"),
        erank_median=("erank", "median"), erank_q10=("erank", lambda e: e.quantile(0.1)),
        erank_q90=("erank", lambda e: e.quantile(0.9))).reset_index()
    ranks = (ends.groupby(group, observed=True)["rank"].value_counts(normalize=True)
             .rename("fraction").reset_index().sort_values(group + ["rank"]))
    tables = {"endpoints": endpoints, "ranks": ranks}
    parts = list(final.groupby(group, observed=True))
    clusters = pd.concat(
        [stats.clusters(part, problem(variant), depth).assign(variant=variant, depth=depth)
         for (variant, depth), part in parts], ignore_index=True)
    claim = (clusters.sort_values("size").groupby(group).tail(1)
             .merge(endpoints[group + ["runs"]], on=group))
    claim["mass"] = claim["size"] / claim["runs"]
    claim["claim_holds"] = claim["mass"] > 0.5
    verdicts = pd.concat(
        [stats.hypotheses(part, problem(variant), depth=depth).assign(variant=variant, depth=depth)
         for (variant, depth), part in parts], ignore_index=True)
    return {"verdicts": verdicts, **tables, "clusters": clusters, "claim": claim}


def figures(final, history, tables, directory) -> list:
    """``spectrum`` (sv_2 / sv_1 against sv_3 / sv_1 per run: rank 1 bottom left, rank 2
    bottom right, full rank top right), ``erank`` (histograms per variant and depth) and
    ``clusters`` (masses of the heaviest clusters, coloured by the rank of their centre)."""
    use_theme()
    floor = 1e-8
    data = final.assign(
        ratio_2=(final["sv_1"] / final["sv_0"]).clip(lower=floor),
        ratio_3=(final["sv_2"] / final["sv_0"]).clip(lower=floor),
        depth_label=final["depth"].map("N = {}".format))
    grid = sns.relplot(data=data, x="ratio_2", y="ratio_3", col="variant", hue="depth_label",
                       style="depth_label", s=14, alpha=0.5, edgecolor="none", height=3.0,
                       facet_kws=dict(legend_out=False))
    grid.set(xscale="log", yscale="log", xlabel="s2 / s1 of W(end)",
             ylabel="s3 / s1 of W(end)")
    grid.legend.remove()
    for ax in grid.axes.flat:
        ax.axvline(RANK_TOL, color="0.5", linestyle=":", linewidth=1, label="rank threshold")
        ax.axhline(RANK_TOL, color="0.5", linestyle=":", linewidth=1)
    legend_above(grid, ncol=4)
    paths = [save(grid, directory, "spectrum")]
    grid = sns.displot(data=data, x="erank", col="variant", hue="depth_label", element="step",
                       stat="probability", common_norm=False, bins=np.linspace(1, 3, 41),
                       height=3.0)
    grid.set_axis_labels("effective rank of W(end)", "fraction of runs")
    grid.legend.set_title("")
    paths.append(save(grid, directory, "erank"))
    top = tables["clusters"][tables["clusters"]["cluster"] < TOP_CLUSTERS]
    grid = sns.catplot(data=top.assign(rank=top["rank"].map("rank {}".format)), kind="bar",
                       x="cluster", y="fraction", hue="rank", hue_order=["rank 1", "rank 2",
                                                                         "rank 3"],
                       col="variant", row="depth", dodge=False, height=2.4, aspect=1.2)
    grid.set_axis_labels("cluster (heaviest first)", "fraction of runs")
    grid.set_titles("{col_name}, N = {row_name}")
    grid.legend.set_title("centre")
    paths.append(save(grid, directory, "clusters"))
    return paths
