"""Random low-rank completion against init scale and depth: Gunasekar et al. (2017)'s
conjecture (depth 2, small init -> minimum nuclear norm completion) and Arora, Cohen, Hu &
Luo (2019)'s finding that depth 3+ recovers the ground truth where the nuclear norm does not
(REFERENCE.md sections 5.4 and 5.5).

Plain GD (Arora et al. used a global-step RMSprop), balanced init, lr = 0.05 / N (0.5 at depth
1), stop at loss <= 1e-6 (residual about 2e-4 per observed entry, far below the errors
compared here).  One ground truth per (size, rank, observed count), problem seed 0.
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


def problem_of(size, rank, n_observed):
    """The study's ground truth and observations for one grid point."""
    return random_low_rank(size, size, rank, n_observed, seed=PROBLEM_SEED)


def cells(quick: bool) -> list[Cell]:
    """Full: 10x10 (rank 2: m = 40, 60, 80; rank 3: m = 60, 80) at scales 1e-1 .. 1e-4 with 20
    runs, and 30x30 rank 2 (m = 200, 300) at scales 1e-1 .. 1e-3 with 10 runs; depths 1 to 4;
    up to 1e6 (10x10) or 1e5 (30x30) steps.  Quick: 10x10 rank 2, m = 60, depths 1 to 3,
    scales 1e-1 and 1e-2, 4 runs, up to 2e4 steps."""
    grid = []
    for size, rank, counts in QUICK_PROBLEMS if quick else FULL_PROBLEMS:
        for m in counts:
            for depth in (1, 2, 3) if quick else (1, 2, 3, 4):
                for scale in QUICK_SCALES if quick else FULL_SCALES[size]:
                    steps = 2 * 10**4 if quick else (10**6 if size == 10 else 10**5)
                    grid.append(Cell(
                        key=f"n{size}_r{rank}_m{m}_N{depth}_scale{scale:g}",
                        problem="random_low_rank",
                        problem_args=dict(rows=size, cols=size, rank=rank, n_observed=m,
                                          seed=PROBLEM_SEED),
                        params=dict(depth=depth, lr=0.5 if depth == 1 else 0.05 / depth,
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
    completions and relative nuclear-norm excess, :func:`dlnmc.stats.describe`) and
    ``verdicts`` (:func:`dlnmc.stats.hypotheses` per problem and depth at the smallest init
    scale, the limit the conjectures are about)."""
    key = ["size", "rank", "n_observed"]
    parts, described, verdicts = [], [], []
    for (size, rank, m), part in final.groupby(key, observed=True):
        problem = problem_of(size, rank, m)
        parts.append(part.assign(rel_error=_errors(part, problem)))
        desc = stats.describe(part, problem)
        described.append(desc)
        smallest = part[part["init_scale"] == part["init_scale"].min()]
        verdicts += [stats.hypotheses(sub, problem, depth=depth, described=desc.loc[sub.index])
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
        nuclear_excess_median=("nuclear_excess", "median")).reset_index()
    return {"verdicts": pd.concat(verdicts, ignore_index=True), "errors": errors,
            "distance": distance}


def figures(final, history, tables, directory) -> list:
    """``error_vs_scale`` (median relative error against init scale, one line per depth, one
    panel per problem) and ``distance_vs_scale``."""
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
        grid.set_axis_labels("init scale (std of the product's entries)", label)
        grid.set_titles("{col_name}")
        paths.append(save(grid, directory, name))
    return paths
