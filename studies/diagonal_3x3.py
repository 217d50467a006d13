"""The 3x3 task of the lecture notes: does most of a batch of 500 runs end near one rank-2
minimizer out of many (mathematics.md section 5.3; the observed entries are UNCONFIRMED)?

With only the diagonal observed and nonzero, rank-1 completions exist, so a "rank-2 minimizer"
needs zeros or other observations.  The variants: the diagonal (1, 1, 1) and (1, 1, 0), and six
observed entries of a random rank-2 matrix (minimal rank 2, a two-parameter family of rank-2
completions).  Balanced init at scale 1e-2, lr = 0.1 / N.

The claim is read on a ball (:func:`ball_claim`): the most converged runs within half a
tolerance (:data:`CLAIM_SCALE` times the cell's median endpoint norm) of one endpoint, a set of
diameter at most the tolerance; it holds when that ball holds most converged runs
(Clopper-Pearson interval above 1/2), fails when the interval lies below 1/2.  Complete-linkage
clusters cut at the same tolerance (:func:`dlnmc.stats.clusters`) give the context: a
continuum of endpoints is cut into pieces of that diameter instead of being chained into one
cluster: depth 2 on diag(1, 1, 0) ends on the segment of minimum nuclear norm completions
[[1, a, 0], [a, 1, 0], [0, 0, 0]], |a| <= 1 (Gunasekar et al. 2017), of length 2 sqrt(2),
which is not one minimizer.  Beside the claim, the verdicts of
the norm (Gunasekar et al. 2017), rank (Razin & Cohen 2020) and volume (Cohen, Menon &
Veraszto 2023) hypotheses per cell (:func:`dlnmc.stats.hypotheses`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from scipy.spatial.distance import cdist

from dlnmc import stats
from dlnmc.figures import legend_above, save, use_theme
from dlnmc.manifold import endpoint_matrices
from dlnmc.problems import CATALOGUE
from dlnmc.stats.filters import excluded_text
from dlnmc.stats.verdicts import majority
from dlnmc.study import Cell

NAME = "diagonal_3x3"
DESCRIPTION = (
    "The lecture's 3x3 claim (most of 500 runs end near one rank-2 minimizer) tested on three "
    "tasks: observed diagonal (1, 1, 1), observed diagonal (1, 1, 0), and six observed entries "
    "of a random rank-2 matrix; depths 2, 3, 4, balanced init at scale 1e-2, 500 runs each.  "
    "Numerical ranks of the converged endpoints; complete-linkage clusters (diameter at most "
    "0.1 x the median endpoint norm) with their masses, diameters, ranks and volumes; the claim "
    "holds where most converged runs (95% Clopper-Pearson interval above 1/2) end within half "
    "that tolerance of one endpoint, fails where the interval lies below 1/2; the same at "
    "other tolerances.  Every table counts the runs that did not converge."
)

VARIANTS = {
    "diag_1_1_1": ("diagonal_3x3", {"values": (1.0, 1.0, 1.0)}),
    "diag_1_1_0": ("diagonal_3x3", {"values": (1.0, 1.0, 0.0)}),
    "rank2_m6": ("random_low_rank", {"rows": 3, "cols": 3, "rank": 2, "n_observed": 6, "seed": 0}),
}
"""Variant name -> (catalogue problem, arguments)."""
DEPTHS = (2, 3, 4)
RANK_TOL = 5e-3
"""Numerical rank: singular values above RANK_TOL times the largest.  The one definition of rank
in every table: per run (``ranks``) and for the clusters' medoids and members (``clusters``,
``claim``).  Between the two populations of the full study: the residues of the init (scale
1e-2) in the unobserved directions, s3 / s1 mostly 1e-3 to 3e-3, and the smallest s2 / s1 of a
completion of rank2_m6 (minimal rank 2), about 9e-3, where its heaviest clusters sit; 1e-2 cut
through those clusters.  On the diagonal variants s2 / s1 spreads continuously from 1e-3 to
1e-1 at depths 3 and 4, and no threshold separates rank 1 from rank 2 there."""
CLAIM_SCALE = 0.1
""""Near one minimizer", relative: the claim's set of runs must have a Frobenius diameter of at
most CLAIM_SCALE times the median Frobenius norm of the cell's converged endpoints, the scale
of the solutions the runs reach (1.6 to 3.0 in the full study, so 0.16 to 0.30, about 0.05 per
entry, five times the init scale).  The clusters of the context are cut at this same distance,
the default threshold of :func:`dlnmc.stats.clustering.cluster_threshold`.  The segment of
minimum nuclear norm completions of diag(1, 1, 0) is about 15 tolerances long."""
CLAIM_SWEEP = (0.05, 0.1, 0.2, 0.4)
"""Relative tolerances (in place of :data:`CLAIM_SCALE`) at which the claim is read again, in
the table ``claim_sweep``: how the reading depends on what "near" means.  A point mass keeps its
mass as the tolerance grows; a spread of endpoints gains mass with it."""
LEVEL = 0.95
"""Confidence level of the Clopper-Pearson interval of the heaviest cluster's mass."""
TOP_CLUSTERS = 6
"""Clusters drawn per variant and depth, heaviest first."""
LR_TAU = 0.1
SCALE = 1e-2
GROUP = ["variant", "depth"]


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


def endpoint_labels(final) -> pd.Series:
    """:func:`dlnmc.stats.endpoint_status` of every run, each against its variant's problem;
    the converged runs (label ``converged``) are the ones every table and figure keeps."""
    return pd.concat([stats.endpoint_status(part, problem(variant))
                      for variant, part in final.groupby("variant", observed=True)]
                     ).reindex(final.index)


def numerical_rank(final) -> np.ndarray:
    """Number of singular values ``sv_<k>`` above :data:`RANK_TOL` times the largest."""
    sv = final[["sv_0", "sv_1", "sv_2"]].to_numpy()
    return (sv > RANK_TOL * sv[:, :1]).sum(axis=1)


def claim_tolerance(final, scale=CLAIM_SCALE, shape=(3, 3)) -> float:
    """``scale`` (:data:`CLAIM_SCALE`) times the median Frobenius norm of the endpoints of
    ``final``."""
    W = endpoint_matrices(final, shape)
    return scale * float(np.median(np.linalg.norm(W.reshape(len(W), -1), axis=1)))


def ball_claim(kept, tolerance, level=LEVEL) -> dict:
    """The lecture's claim on one cell: do most converged runs end near one minimizer?

    "Near one minimizer" is a ball: the most runs within ``tolerance / 2`` (Frobenius) of one
    of them, a set of diameter at most ``tolerance`` around one endpoint. Unlike a cluster of
    a partition, it cannot be split by where a clustering puts its cuts (complete linkage
    divides a dense region into pieces that each hold less), nor chain a stretch of solutions
    (its diameter is bounded).

    Returns
    -------
    dict
        ``ball_size``, ``ball_mass`` (its fraction of ``kept``) with its Clopper-Pearson
        interval ``ball_low``, ``ball_high`` at ``level``, ``ball_diameter`` (measured),
        ``ball_rank`` (numerical rank of its centre, :data:`RANK_TOL`), ``tolerance`` and
        ``claim_holds``: True when the interval lies above 1/2, False below, NA when it
        covers 1/2.
    """
    X = endpoint_matrices(kept, (3, 3)).reshape(len(kept), -1)
    inside = cdist(X, X) <= tolerance / 2
    centre = int(np.argmax(inside.sum(axis=1)))
    members = X[inside[centre]]
    k = len(members)
    low, high, holds = majority(k, len(X), level)
    return {"ball_size": k, "ball_mass": k / len(X), "ball_low": low, "ball_high": high,
            "ball_diameter": float(cdist(members, members).max()),
            "ball_rank": int(numerical_rank(kept.iloc[[centre]])[0]),
            "tolerance": float(tolerance), "claim_holds": pd.NA if holds is None else holds}


def heaviest_cluster(clusters) -> dict:
    """The heaviest of a cell's clusters (:func:`dlnmc.stats.clusters`, heaviest first), as
    context of the claim: its mass, diameter, free-entry spread and medoid rank."""
    top = clusters.iloc[0]
    return {"clusters": len(clusters), "cluster_mass": float(top["fraction"]),
            "cluster_diameter": float(top["diameter"]),
            "free_entry_std": float(top["free_entry_std"]), "rank": int(top["rank"]),
            "member_rank_median": float(top["member_rank_median"])}


def cell_claim(kept, variant, depth, scale=CLAIM_SCALE) -> tuple[pd.DataFrame, dict]:
    """The claim on one cell's converged endpoints ``kept`` at ``scale`` times their median norm
    (:func:`claim_tolerance`): :func:`ball_claim`, and the clusters cut at that tolerance
    (ranks at :data:`RANK_TOL`) with their heaviest as context (:func:`heaviest_cluster`)."""
    tolerance = claim_tolerance(kept, scale)
    clusters = stats.clusters(kept, problem(variant), depth, threshold=tolerance,
                              rank_tol=RANK_TOL)
    return clusters, ball_claim(kept, tolerance) | heaviest_cluster(clusters)


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """Tables per variant and depth, all on the converged runs
    (:func:`dlnmc.stats.endpoint_status`), each with ``n`` (converged runs) and ``n_excluded``:

    - ``verdicts``: :func:`dlnmc.stats.hypotheses` (norm, rank, volume; its own exclusions);
    - ``endpoints``: runs, the count of each exclusion (``n_diverged``,
      ``n_stuck_at_origin``, ``n_not_converged``), effective rank quantiles;
    - ``ranks``: fraction of runs per numerical rank (:data:`RANK_TOL`);
    - ``clusters``: :func:`dlnmc.stats.clusters` cut at the claim's tolerance;
    - ``claim``: :func:`ball_claim` at :data:`CLAIM_SCALE`, with the excluded runs by reason
      (``excluded``) and the heaviest cluster as context (:func:`heaviest_cluster`);
    - ``claim_sweep``: the same reading at each relative tolerance of :data:`CLAIM_SWEEP`
      (``scale``).
    """
    status = endpoint_labels(final)
    verdicts, endpoints, ranks, clusters, claim, sweep = [], [], [], [], [], []
    for (variant, depth), part in final.groupby(GROUP, observed=True):
        labels = status.loc[part.index]
        kept = part[(labels == "converged").to_numpy()]
        cell = {"variant": variant, "depth": depth, "n": len(kept),
                "n_excluded": len(part) - len(kept)}
        verdicts.append(stats.hypotheses(part, problem(variant), depth=depth)
                        .assign(variant=variant, depth=depth))
        counts = stats.status_counts(labels, problem(variant))
        endpoints.append({"variant": variant, "depth": depth, "runs": len(part)} | cell
                         | {f"n_{label}": counts[f"n_{label}"] for label in stats.EXCLUSIONS}
                         | dict(zip(("erank_q10", "erank_median", "erank_q90"),
                                    kept["erank"].quantile([0.1, 0.5, 0.9]))))
        ranks.append(pd.Series(numerical_rank(kept), name="rank")
                     .value_counts(normalize=True).rename("fraction").reset_index()
                     .assign(**cell))
        excluded = excluded_text(labels, ("converged",))
        if kept.empty:
            claim.append(cell | {"excluded": excluded, "claim_holds": pd.NA})
            continue
        for scale in sorted({CLAIM_SCALE, *CLAIM_SWEEP}):
            cl, reading = cell_claim(kept, variant, depth, scale)
            if scale in CLAIM_SWEEP:
                sweep.append(cell | {"scale": scale}
                             | reading)
            if scale == CLAIM_SCALE:
                clusters.append(cl.assign(**cell))
                claim.append(cell | {"excluded": excluded} | reading)
    ranks = pd.concat(ranks, ignore_index=True).sort_values(GROUP + ["rank"])
    claim = pd.DataFrame(claim).astype({"claim_holds": "boolean"})
    return {"verdicts": pd.concat(verdicts, ignore_index=True),
            "endpoints": pd.DataFrame(endpoints),
            "ranks": ranks[GROUP + ["rank", "fraction", "n", "n_excluded"]],
            "clusters": pd.concat(clusters, ignore_index=True),
            "claim": claim,
            "claim_sweep": pd.DataFrame(sweep).astype({"claim_holds": "boolean"})}


def findings(tables) -> list[str]:
    """Sentences for the report, one per variant and depth, from the tables ``claim`` and
    ``claim_sweep``."""
    sweep = tables["claim_sweep"].set_index(GROUP + ["scale"])["ball_mass"]
    verdict = {True: "holds", False: "fails"}
    lines = []
    for r in tables["claim"].itertuples():
        if r.n == 0:
            lines.append(f"{r.variant}, N = {r.depth}: no converged run (excluded: "
                         f"{r.excluded}) (`claim`).")
            continue
        masses = "/".join(f"{100 * sweep[(r.variant, r.depth, scale)]:.0f}"
                          for scale in CLAIM_SWEEP)
        lines.append(
            f"{r.variant}, N = {r.depth}: {100 * r.ball_mass:.1f}% "
            f"[{100 * r.ball_low:.1f}, {100 * r.ball_high:.1f}] of {r.n} converged runs "
            f"(excluded: {r.excluded}) end within {r.tolerance / 2:.3g} of one endpoint of "
            f"rank {r.ball_rank}: the claim {verdict.get(r.claim_holds, 'is undecided')}; "
            f"the heaviest complete-linkage cluster holds {100 * r.cluster_mass:.1f}% "
            f"(diameter {r.cluster_diameter:.3g}); at "
            f"{'/'.join(f'{scale:g}' for scale in CLAIM_SWEEP)} x the median norm the ball "
            f"holds {masses}% (`claim`, `claim_sweep`).")
    return lines


def figures(final, history, tables, directory) -> list:
    """Figures of the converged runs: ``spectrum`` (sv_2 / sv_1 against sv_3 / sv_1 per run:
    rank 1 bottom left, rank 2 bottom right, full rank top right), ``erank`` (histograms per
    variant and depth) and ``clusters`` (masses of the heaviest clusters, coloured by the rank
    of their medoid, each labelled with its diameter; the line at 1/2 is the claim's majority
    and each panel's title gives the claim's reading, :func:`ball_claim`)."""
    use_theme()
    floor = 1e-8
    kept = final[(endpoint_labels(final) == "converged").to_numpy()]
    data = kept.assign(
        ratio_2=(kept["sv_1"] / kept["sv_0"]).clip(lower=floor),
        ratio_3=(kept["sv_2"] / kept["sv_0"]).clip(lower=floor),
        depth_label=kept["depth"].map("N = {}".format))
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
    grid.set_axis_labels("effective rank of W(end)", "fraction of converged runs")
    grid.legend.set_title("")
    paths.append(save(grid, directory, "erank"))
    top = tables["clusters"][tables["clusters"]["cluster"] < TOP_CLUSTERS]
    grid = sns.catplot(data=top.assign(rank=top["rank"].map("rank {}".format)), kind="bar",
                       x="cluster", y="fraction", hue="rank",
                       hue_order=["rank 1", "rank 2", "rank 3"], order=list(range(TOP_CLUSTERS)),
                       col="variant", row="depth", dodge=False, height=2.4, aspect=1.4)
    claim = tables["claim"].set_index(GROUP)
    verdict = {True: "holds", False: "fails"}
    for (depth, variant), ax in grid.axes_dict.items():
        ax.axhline(0.5, color="0.4", linestyle="--", linewidth=1)
        if (variant, depth) not in claim.index:
            continue
        reading = claim.loc[(variant, depth)]
        ax.set_title(f"{variant}, N = {depth}: claim "
                     f"{verdict.get(reading['claim_holds'], 'undecided')}\n"
                     f"({100 * reading['ball_mass']:.0f}% within "
                     f"{reading['tolerance'] / 2:.2f} of one endpoint)", fontsize=10)
        for row in top[(top["variant"] == variant) & (top["depth"] == depth)].itertuples():
            ax.annotate(f"{row.diameter:.2f}", (row.cluster, row.fraction), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 1), textcoords="offset points")
    grid.set(ylim=(0, 1.1))
    grid.set_axis_labels("cluster, heaviest first", "fraction of runs")
    grid.legend.set_title("medoid")
    grid.figure.suptitle("bar labels: cluster diameter (Frobenius); converged runs only",
                         y=1.05, fontsize=11)
    paths.append(save(grid, directory, "clusters"))
    return paths
