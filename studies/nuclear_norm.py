"""Random low-rank completion against init scale and depth: Gunasekar et al. (2017)'s
conjecture (depth 2, small init -> minimum nuclear norm completion) and Arora, Cohen, Hu &
Luo (2019)'s finding that depth 3+ recovers the ground truth where the nuclear norm does not
(mathematics.md sections 5.4 and 5.5).

Plain GD (Arora et al. used a global-step RMSprop), balanced init, step size ``lr_for`` (at
most half the edge of stability at the ground truth, so that GD follows the gradient flow
rather than selecting flat endpoints: at 0.05 / N, 30x30 depth-4 runs converged to flat
higher-rank completions), stop at loss <= 1e-6 (residual about 2e-4 per observed entry, far
below the errors compared here).  One ground truth per (size, rank, observed count), problem
seed 0.

On six of the seven full-size problems the minimum nuclear norm completion is not the ground
truth, and on two of them the truth's nuclear norm exceeds the minimum by under 1%: the norm
verdict therefore counts a trajectory as a minimum-norm completion only when its nuclear norm is
within 0.1% of m* (``NORM_TOL``; the verdict's value is the fraction of such trajectories, and
the hypothesis holds when most are), and the tables carry the truth's own excess and distance
for comparison.  Every table and verdict keeps the converged runs
(:func:`dlnmc.stats.endpoint_status`) and counts the others by reason.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from dlnmc import random_low_rank, stats
from dlnmc.figures import save, use_theme
from dlnmc.manifold import endpoint_matrices
from dlnmc.study import Cell

NAME = "nuclear_norm"
DESCRIPTION = (
    "Random rank-r completion (10x10 rank 2 and 3, 30x30 rank 2 at full size) with a sweep of "
    "the number of observed entries, depths 1 to 4, init scales 1e-1 to 1e-4: relative "
    "reconstruction error and distance to the minimum nuclear norm completion against init "
    "scale and depth (Gunasekar et al. 2017; Arora, Cohen, Hu & Luo 2019)."
)

PROBLEM_SEED = 0
FULL_PROBLEMS = ((10, 2, (40, 60, 80)), (10, 3, (60, 80)), (30, 2, (200, 300)))
"""(size, rank, observed counts); 10x10 rank r has r (20 - r) degrees of freedom (36, 51)."""
QUICK_PROBLEMS = ((10, 2, (60,)),)
FULL_SCALES = {10: (1e-1, 1e-2, 1e-3, 1e-4), 30: (1e-1, 1e-2, 1e-3)}
QUICK_SCALES = (1e-1, 1e-2)
NORM_TOL = 1e-3
"""Relative nuclear-norm excess above which an endpoint is not a minimum-norm completion."""
GROUP = ["size", "rank", "n_observed", "depth", "init_scale"]


def problem_label(size, rank, n_observed) -> str:
    """``"10x10, rank 2, m = 60"``: a grid point's name in the verdicts and figures."""
    return f"{size}x{size}, rank {rank}, m = {n_observed}"


def problem_of(size, rank, n_observed):
    """The study's ground truth and observations for one grid point."""
    return random_low_rank(size, size, rank, n_observed, seed=PROBLEM_SEED)


def lr_for(problem, depth) -> float:
    """0.5 at depth 1 (the loss is then a quadratic of curvature 1); at depth N >= 2,
    min(0.05 / N, 1 / (N s1^(2 - 2/N))), s1 the ground truth's top singular value: at most
    half of 2 / (N s1^(2 - 2/N)), the edge of stability of a fully observed balanced
    factorization of the truth (its Hessian's top eigenvalue is N s1^(2 - 2/N); observing
    fewer entries only lowers it)."""
    if depth == 1:
        return 0.5
    s1 = np.linalg.norm(problem.ground_truth, 2)
    return float(min(0.05 / depth, 1.0 / (depth * s1 ** (2.0 - 2.0 / depth))))


def cells(quick: bool) -> list[Cell]:
    """Full: 10x10 (rank 2: m = 40, 60, 80; rank 3: m = 60, 80) at scales 1e-1 .. 1e-4 with 20
    runs, and 30x30 rank 2 (m = 200, 300) at scales 1e-1 .. 1e-3 with 10 runs; depths 1 to 4;
    up to 1e6 (10x10) or 3e6 (30x30) steps.  Quick: 10x10 rank 2, m = 60, depths 1 to 3,
    scales 1e-1 and 1e-2, 4 runs, up to 2e4 steps."""
    grid = []
    for size, rank, counts in QUICK_PROBLEMS if quick else FULL_PROBLEMS:
        for m in counts:
            for depth in (1, 2, 3) if quick else (1, 2, 3, 4):
                for scale in QUICK_SCALES if quick else FULL_SCALES[size]:
                    steps = 2 * 10**4 if quick else (10**6 if size == 10 else 3 * 10**6)
                    grid.append(Cell(
                        key=f"n{size}_r{rank}_m{m}_N{depth}_scale{scale:g}",
                        problem="random_low_rank",
                        problem_args=dict(rows=size, cols=size, rank=rank, n_observed=m,
                                          seed=PROBLEM_SEED),
                        params=dict(depth=depth, lr=lr_for(problem_of(size, rank, m), depth),
                                    init="balanced", init_scale=scale, tol=1e-6,
                                    max_steps=steps, checkpoints=None),
                        runs=4 if quick else (20 if size == 10 else 10),
                        labels={"size": size, "rank": rank, "n_observed": m}))
    return grid


def _errors(part, problem) -> np.ndarray:
    """Relative Frobenius error ||W - W*|| / ||W*|| of each endpoint against the ground truth."""
    W = endpoint_matrices(part, problem.shape)
    truth = problem.ground_truth
    return np.linalg.norm(W - truth, axis=(1, 2)) / np.linalg.norm(truth)


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """Tables per problem, depth and init scale, on the converged runs
    (:func:`dlnmc.stats.endpoint_status`; ``runs``, ``n`` kept, and the excluded by reason:
    ``n_diverged``, ``n_stuck_at_origin``, ``n_not_converged``):

    - ``errors``: relative reconstruction error quantiles, median erank;
    - ``distance``: median distance to the set of minimum nuclear norm completions, median
      relative nuclear-norm excess and the fraction within ``NORM_TOL`` of m*
      (:func:`dlnmc.stats.describe`), next to the ground truth's own distance and excess;
    - ``verdicts``: :func:`dlnmc.stats.hypotheses` per problem (:func:`problem_label`) and
      depth at the smallest init scale, the limit the conjectures are about (norm ``value``:
      the fraction within ``NORM_TOL`` of m*).
    """
    key = ["size", "rank", "n_observed"]
    ends, verdicts = [], []
    for (size, rank, m), part in final.groupby(key, observed=True):
        problem = problem_of(size, rank, m)
        status = stats.endpoint_status(part, problem)
        solution = stats.min_nuclear_norm_completion(problem)
        desc = stats.describe(part, problem, nuclear=solution)
        truth = problem.ground_truth
        ends.append(part[GROUP + ["erank"]].assign(
            status=status.to_numpy(), rel_error=_errors(part, problem),
            dist_min_nuclear=desc["dist_min_nuclear"], nuclear_excess=desc["nuclear_excess"],
            truth_dist_min_nuclear=float(solution.distance(truth)),
            truth_nuclear_excess=np.linalg.svd(truth, compute_uv=False).sum() / solution.norm - 1))
        smallest = (part["init_scale"] == part["init_scale"].min()).to_numpy()
        for depth, sub in part[smallest].groupby("depth"):
            verdicts.append(stats.hypotheses(sub, problem, depth=depth, norm_tol=NORM_TOL,
                                             described=desc.loc[sub.index])
                            .assign(problem=problem_label(size, rank, m), depth=depth,
                                    init_scale=sub["init_scale"].iloc[0]))
    ends = pd.concat(ends)
    flags = {"n": ends["status"] == "converged"} | {f"n_{label}": ends["status"] == label
                                                    for label in stats.EXCLUSIONS}
    counts = (ends.assign(runs=1, **flags).groupby(GROUP, observed=True)[["runs", *flags]]
              .sum().reset_index())
    counts.insert(len(GROUP) + 2, "n_excluded", counts["runs"] - counts["n"])
    kept = ends[ends["status"] == "converged"].groupby(GROUP, observed=True)
    errors = counts.merge(kept.agg(
        rel_error_median=("rel_error", "median"),
        rel_error_q10=("rel_error", lambda e: e.quantile(0.1)),
        rel_error_q90=("rel_error", lambda e: e.quantile(0.9)),
        erank_median=("erank", "median")).reset_index(), on=GROUP, how="left")
    distance = counts.merge(kept.agg(
        dist_min_nuclear_median=("dist_min_nuclear", "median"),
        nuclear_excess_median=("nuclear_excess", "median"),
        frac_within_norm_tol=("nuclear_excess", lambda e: float((e <= NORM_TOL).mean()))
    ).reset_index(), on=GROUP, how="left").merge(
        ends.groupby(GROUP, observed=True)[["truth_dist_min_nuclear", "truth_nuclear_excess"]]
        .first().reset_index(), on=GROUP)
    return {"verdicts": pd.concat(verdicts, ignore_index=True), "errors": errors,
            "distance": distance}


def findings(tables) -> list[str]:
    """Sentences for the report, one per problem at its smallest init scale, from the tables
    ``errors``, ``distance`` and ``verdicts``."""
    errors, distance = tables["errors"], tables["distance"]
    verdicts = tables["verdicts"]
    norm = verdicts[verdicts["hypothesis"] == "norm"].set_index(["problem", "depth"])
    verdict = {True: "holds", False: "fails"}
    lines = []
    for (size, rank, m), part in errors.groupby(["size", "rank", "n_observed"]):
        name = problem_label(size, rank, m)
        part = part[part["init_scale"] == part["init_scale"].min()]
        excess = distance[(distance["size"] == size) & (distance["rank"] == rank)
                          & (distance["n_observed"] == m)]["truth_nuclear_excess"].iloc[0]
        by_depth = []
        for r in part.itertuples():
            v = norm.loc[(name, r.depth)]
            error = f"error {r.rel_error_median:.2g}" if r.n else "no converged run"
            within = f"{round(v['value'] * v['n'])} of {v['n']}" if v["n"] else "none finished"
            by_depth.append(f"N = {r.depth}: {error}, {within} within {100 * NORM_TOL:g}% of "
                            f"m* (norm hypothesis {verdict.get(v['holds'], 'n/a')})")
        truth = ("is a minimizer" if excess <= NORM_TOL
                 else f"{100 * excess:.2g}% above m*")
        lines.append(f"{name} (ground truth {truth}), init {part['init_scale'].iloc[0]:g}, "
                     "converged runs: " + "; ".join(by_depth)
                     + " (`errors`, `distance`, `verdicts`).")
    return lines


def figures(final, history, tables, directory) -> list:
    """``error_vs_scale`` (median relative error of the converged runs against init scale, one
    line per depth, one panel per problem) and ``distance_vs_scale`` (with the ground truth's
    own distance to the minimum nuclear norm set as a grey line, or a note where the truth is a
    minimizer: its nuclear norm within ``NORM_TOL`` of m*)."""
    use_theme()
    panels = [("error_vs_scale", "errors", "rel_error_median", "relative error (median)"),
              ("distance_vs_scale", "distance", "dist_min_nuclear_median",
               "distance to min nuclear norm\ncompletion (median)")]
    paths = []
    for name, table_name, column, label in panels:
        table = tables[table_name]
        data = table.assign(problem=[problem_label(s, r, m) for s, r, m in
                                     zip(table["size"], table["rank"], table["n_observed"])],
                            N=table["depth"].map("N = {}".format))
        grid = sns.relplot(data=data, x="init_scale", y=column, hue="N", style="N",
                           col="problem", col_wrap=min(4, data["problem"].nunique()),
                           kind="line", markers=True, height=3.0, aspect=1.1)
        grid.set(xscale="log", yscale="log")
        grid.set_axis_labels("init scale", label)
        grid.set_titles("{col_name}")
        if "truth_dist_min_nuclear" in data:
            for problem, ax in grid.axes_dict.items():
                truth = data[data["problem"] == problem].iloc[0]
                if truth["truth_nuclear_excess"] <= NORM_TOL:
                    ax.annotate("ground truth is a minimizer", (0.02, 0.03),
                                xycoords="axes fraction", fontsize=9, color="0.4")
                else:
                    ax.axhline(truth["truth_dist_min_nuclear"], color="0.5", linestyle="--",
                               linewidth=1)
                    ax.annotate("ground truth", (0.02, truth["truth_dist_min_nuclear"]),
                                xycoords=("axes fraction", "data"), va="bottom", fontsize=9,
                                color="0.4")
        paths.append(save(grid, directory, name))
    return paths
