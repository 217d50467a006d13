"""Random low-rank completion against init scale and depth: Gunasekar et al. (2017)'s
conjecture (depth 2, small init -> minimum nuclear norm completion) and Arora, Cohen, Hu &
Luo (2019)'s finding that depth 3+ recovers the ground truth where the nuclear norm does not
(REFERENCE.md sections 5.4 and 5.5).

Plain GD (Arora et al. used a global-step RMSprop), balanced init, step size ``lr_for`` (at
most half the edge of stability at the ground truth, so that GD follows the gradient flow
rather than selecting flat endpoints: at 0.05 / N, 30x30 depth-4 runs converged to flat
higher-rank completions), stop at loss <= 1e-6 (residual about 2e-4 per observed entry, far
below the errors compared here).  One ground truth per (size, rank, observed count), problem
seed 0.

On six of the seven full-size problems the minimum nuclear norm completion is not the ground
truth, and on two of them the truth's nuclear norm exceeds the minimum by under 1%: the norm
verdict therefore counts a trajectory as off the minimum when its nuclear norm exceeds m* by
more than 0.1% (``NORM_TOL``), and the tables carry the truth's own excess and distance for
comparison.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from dlnmc import random_low_rank, stats
from dlnmc.figures import save, use_theme
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
    n = problem.rows
    W = part[[f"w_{i}_{j}" for i in range(n) for j in range(n)]].to_numpy().reshape(-1, n, n)
    truth = problem.ground_truth
    return np.linalg.norm(W - truth, axis=(1, 2)) / np.linalg.norm(truth)


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """``errors`` (per problem, depth and init scale: relative reconstruction error quantiles,
    erank, convergence), ``distance`` (median distance to the set of minimum nuclear norm
    completions and relative nuclear-norm excess, :func:`dlnmc.stats.describe`, next to the
    ground truth's own distance and excess) and ``verdicts`` (:func:`dlnmc.stats.hypotheses`
    per problem and depth at the smallest init scale, the limit the conjectures are about)."""
    key = ["size", "rank", "n_observed"]
    parts, described, verdicts = [], [], []
    for (size, rank, m), part in final.groupby(key, observed=True):
        problem = problem_of(size, rank, m)
        parts.append(part.assign(rel_error=_errors(part, problem)))
        desc = stats.describe(part, problem)
        solution = stats.min_nuclear_norm_completion(problem)
        truth = problem.ground_truth
        described.append(desc[["depth", "init_scale", "dist_min_nuclear", "nuclear_excess"]].assign(
            size=size, rank=rank, n_observed=m,
            truth_dist_min_nuclear=float(solution.distance(truth)),
            truth_nuclear_excess=np.linalg.svd(truth, compute_uv=False).sum() / solution.norm - 1))
        smallest = part[part["init_scale"] == part["init_scale"].min()]
        verdicts += [stats.hypotheses(sub, problem, depth=depth, norm_tol=NORM_TOL,
                                      described=desc.loc[sub.index])
                     .assign(size=size, rank=rank, n_observed=m, depth=depth,
                             init_scale=sub["init_scale"].iloc[0])
                     for depth, sub in smallest.groupby("depth")]
    ends = pd.concat(parts).assign(converged=lambda d: d["status"] == "converged")
    group = key + ["depth", "init_scale"]
    errors = ends.groupby(group, observed=True).agg(
        runs=("run", "size"), frac_converged=("converged", "mean"),
        rel_error_median=("rel_error", "median"),
        rel_error_q10=("rel_error", lambda e: e.quantile(0.1)),
        rel_error_q90=("rel_error", lambda e: e.quantile(0.9)),
        erank_median=("erank", "median")).reset_index()
    distance = pd.concat(described).groupby(group, observed=True).agg(
        dist_min_nuclear_median=("dist_min_nuclear", "median"),
        nuclear_excess_median=("nuclear_excess", "median"),
        truth_dist_min_nuclear=("truth_dist_min_nuclear", "first"),
        truth_nuclear_excess=("truth_nuclear_excess", "first")).reset_index()
    return {"verdicts": pd.concat(verdicts, ignore_index=True), "errors": errors,
            "distance": distance}


def figures(final, history, tables, directory) -> list:
    """``error_vs_scale`` (median relative error against init scale, one line per depth, one
    panel per problem) and ``distance_vs_scale`` (with the ground truth's own distance to the
    minimum nuclear norm set as a grey line, or a note where the truth is in that set)."""
    use_theme()
    panels = [("error_vs_scale", "errors", "rel_error_median", "relative error (median)"),
              ("distance_vs_scale", "distance", "dist_min_nuclear_median",
               "distance to min nuclear norm\ncompletion (median)")]
    paths = []
    for name, table_name, column, label in panels:
        table = tables[table_name]
        data = table.assign(problem=[f"{s}x{s}, rank {r}, m = {m}" for s, r, m in
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
                truth = data.loc[data["problem"] == problem, "truth_dist_min_nuclear"].iloc[0]
                if truth > ax.get_ylim()[0]:
                    ax.axhline(truth, color="0.5", linestyle="--", linewidth=1)
                    ax.annotate("ground truth", (0.02, truth), xycoords=("axes fraction", "data"),
                                va="bottom", fontsize=9, color="0.4")
                else:
                    ax.annotate("ground truth is a minimizer", (0.02, 0.03),
                                xycoords="axes fraction", fontsize=9, color="0.4")
        paths.append(save(grid, directory, name))
    return paths
