"""The lecture's "effect of noise and discretization" question: how the endpoint law moves with
the step size (up to the edge of stability) and with noise (noisy GD, Riemannian Langevin flow;
mathematics.md section 4) on the hyperbola task (section 5.2) and the Razin-Cohen task (5.1).

Edge of stability on the hyperbola.  At a corner W = [[1, 1], [1, 1]] (s = 2, u = v = (1, 1) /
sqrt 2) the balanced depth-N factorization has largest Hessian eigenvalue about
N s^{2(N-1)/N} |P_Omega(u v^T)|^2 = N 4^{(N-1)/N} / 2, so GD can settle there only for
lr < EDGE(N) = 4 / (N 4^{(N-1)/N}); the corners are the flattest points of the hyperbola, so
beyond the edge no rank-1 solution is stable.  The lr sweep is in units of EDGE(N).

Noisy GD on the factors and the Langevin end-to-end flow at the same temperature are not the
same process: projected down, upstairs noise adds the entropy drift (1/beta) A grad S of the
orbit volume (mathematics.md section 4.3).  The study compares them; it does not equate them.

Noise runs use ``tol=0``: every trajectory runs its full horizon and the endpoint law is the
law at that horizon (the flow's horizon matches GD's on the tau clock, tau = N lr steps).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from dlnmc import diagonal_2x2, manifold, razin_cohen_2x2, stats
from dlnmc.figures import hyperbola, legend_above, save, use_theme
from dlnmc.study import Cell
NAME = "noise_and_discretization"
DESCRIPTION = (
    "Endpoint laws against step size and noise temperature.  Hyperbola task (w11 = w22 = 1), "
    "balanced init 1e-2: GD with lr from 0.1 to 1.5 times the estimated edge of stability at "
    "the corners, and noisy GD / Langevin end-to-end flow at temperatures 1e-6 .. 1e-3.  "
    "Razin-Cohen task at depth 3, init 1e-5: lr from the paper's 6e-3 up to 0.3, and noisy GD."
)

SCALE = 1e-2
RC_SCALE = 1e-5
RC_LR = 6e-3
LANGEVIN_DT = 0.05
"""Euler-Maruyama step of the Langevin flow on the tau clock (the normalized metric's
eigenvalues near the corners are at most about 4, so the drift is resolved; the noisy GD cells
advance tau by N lr = 0.13 per step)."""


def edge(depth) -> float:
    """Estimated largest stable step size at the hyperbola's corners, 4 / (N 4^{(N-1)/N})."""
    return 4.0 / (depth * 4.0 ** ((depth - 1) / depth))


def _cell(key, problem, engine, params, runs, task, sweep, factor=math.nan):
    return Cell(key=key, problem=problem, engine=engine, params=params, runs=runs,
                labels={"task": task, "sweep": sweep, "engine": engine, "lr_over_edge": factor})


def cells(quick: bool) -> list[Cell]:
    """Full: hyperbola depths 2 and 5, lr factors 0.1 .. 1.5 (1000 runs); temperatures 1e-6 ..
    1e-3 at 0.1 x edge, GD and flow (1000 runs, 1e5 steps); Razin-Cohen depth 3, lr 6e-3 ..
    0.3 and temperatures 1e-8 .. 1e-4 (256 runs, up to 1e6 steps).  Quick: depth 5, factors
    0.1, 0.9, 1.2; temperatures 1e-6, 1e-4 (GD and flow); Razin-Cohen lr 6e-3, 0.1, 0.3 and
    temperature 1e-6; 100 (16 for Razin-Cohen) runs, 1e4 (2e4) steps."""
    grid = []
    depths = (5,) if quick else (2, 5)
    factors = (0.1, 0.9, 1.2) if quick else (0.1, 0.3, 0.6, 0.9, 1.05, 1.2, 1.5)
    temperatures = (1e-6, 1e-4) if quick else (1e-6, 1e-5, 1e-4, 1e-3)
    runs, steps = (100, 10**4) if quick else (1000, 10**5)
    common = dict(init="balanced", init_scale=SCALE, checkpoints=None)
    for depth in depths:
        for f in factors:
            grid.append(_cell(f"hyp_N{depth}_lr{f:g}", "diagonal_2x2", "gd",
                              dict(common, depth=depth, lr=f * edge(depth), tol=1e-10,
                                   max_steps=steps), runs, "hyperbola", "lr", f))
        lr = 0.1 * edge(depth)
        for temp in temperatures:
            noisy = dict(common, depth=depth, tol=0.0, temperature=temp)
            grid.append(_cell(f"hyp_N{depth}_T{temp:g}_gd", "diagonal_2x2", "gd",
                              dict(noisy, lr=lr, max_steps=steps), runs, "hyperbola",
                              "temperature", 0.1))
            # Langevin end-to-end flow, same horizon on the tau clock
            grid.append(_cell(f"hyp_N{depth}_T{temp:g}_flow", "diagonal_2x2", "flow",
                              dict(noisy, t_max=depth * lr * steps, dt=LANGEVIN_DT), runs,
                              "hyperbola",
                              "temperature"))
    rc_runs, rc_steps = (16, 2 * 10**4) if quick else (256, 10**6)
    rc = dict(depth=3, init="balanced", init_scale=RC_SCALE, checkpoints=None)
    for lr in (RC_LR, 0.1, 0.3) if quick else (RC_LR, 0.03, 0.1, 0.2, 0.3):
        grid.append(_cell(f"rc_lr{lr:g}", "razin_cohen_2x2", "gd",
                          dict(rc, lr=lr, tol=1e-4, max_steps=rc_steps), rc_runs,
                          "razin_cohen", "lr"))
    for temp in (1e-6,) if quick else (1e-8, 1e-6, 1e-4):
        grid.append(_cell(f"rc_T{temp:g}", "razin_cohen_2x2", "gd",
                          dict(rc, lr=RC_LR, tol=0.0, temperature=temp, max_steps=rc_steps),
                          rc_runs, "razin_cohen", "temperature"))
    return grid


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """``outcomes``: per cell, the counts of each label of :func:`dlnmc.stats.endpoint_status`
    (the same filters as every study), the erank median of the finished runs; hyperbola cells:
    the runs on the curve and the spread of their t (std with a bootstrap interval), the
    converged fraction; Razin-Cohen cells: the fraction of runs with det W(end) > 0 (the
    theorem's invariant: those never approach a solution) and the median |w11|."""
    group = ["task", "sweep", "engine", "depth", "lr", "lr_over_edge", "temperature"]
    rows = []
    for key, part in final.groupby(group, observed=True, dropna=False):
        task = key[0]
        problem = diagonal_2x2() if task == "hyperbola" else razin_cohen_2x2()
        status = stats.endpoint_status(part, problem)
        finished = ~status.isin(stats.EXCLUSIONS)
        row = dict(zip(group, key), runs=len(part), **stats.status_counts(status, problem),
                   frac_converged=float((part["status"] == "converged").mean()),
                   erank_median=part["erank"][finished].median(),
                   loss_median=part["loss"].median())
        if task == "hyperbola":
            t = manifold.hyperbola_coordinates(part[status == "on_curve"])["t"].to_numpy()
            row["t_std"] = np.std(t, ddof=1) if len(t) > 1 else np.nan
            row["t_std_lo"], row["t_std_hi"] = _std_interval(t)
        else:
            row["frac_det_positive"] = float((part["det"] > 0).mean())
            row["abs_w11_median"] = part["w_0_0"].abs().median()
        rows.append(row)
    outcomes = pd.DataFrame(rows)
    counts = [c for c in outcomes.columns if c.startswith("n_")]
    return {"outcomes": outcomes.astype({c: "Int64" for c in counts})}


def findings(tables) -> list[str]:
    """Sentences for the report, each computed from the table it names."""
    out = tables["outcomes"]
    hyp = out[out["task"] == "hyperbola"]
    lines = []
    for depth, part in hyp[hyp["sweep"] == "lr"].groupby("depth"):
        below, beyond = part[part["lr_over_edge"] < 1], part[part["lr_over_edge"] > 1]
        lo, hi = below.iloc[0], below.iloc[-1]
        lines.append(
            f"N = {depth:g}: below the edge of stability the converged fraction is "
            f"{_span(below['frac_converged'])} and the std of t on the curve goes from "
            f"{lo['t_std']:.3g} (lr {lo['lr_over_edge']:g} x edge) to {hi['t_std']:.3g} "
            f"({hi['lr_over_edge']:g} x edge); beyond it the converged fraction is "
            f"{_span(beyond['frac_converged'])} (`outcomes`).")
    noisy = hyp[hyp["sweep"] == "temperature"]
    for (depth, engine), part in noisy.groupby(["depth", "engine"]):
        part = part.sort_values("temperature")
        lines.append(
            f"N = {depth:g}, {engine}: std of t on the curve "
            + ", ".join(f"{r.t_std:.3g} ({r.n_on_curve} on the curve) at T = {r.temperature:g}"
                        for r in part.itertuples()) + " (`outcomes`).")
    rc = out[(out["task"] == "razin_cohen") & (out["sweep"] == "lr")].sort_values("lr")
    lines.append("Razin-Cohen, N = 3: fraction of runs with det W(end) > 0 (never near a "
                 "solution) " + ", ".join(f"{r.frac_det_positive:.3g} at lr {r.lr:g}"
                                           for r in rc.itertuples()) + " (`outcomes`).")
    return lines


def _span(values) -> str:
    """``"0.49-0.62"``, or one number when all are equal."""
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.3g}" if lo == hi else f"{lo:.3g}-{hi:.3g}"


def _std_interval(t, level=0.95, n_boot=300, seed=0):
    """Percentile bootstrap interval of the standard deviation of t (NaN below 2 values)."""
    if len(t) < 2:
        return np.nan, np.nan
    boot = np.std(t[np.random.default_rng(seed).integers(0, len(t), (n_boot, len(t)))],
                  ddof=1, axis=1)
    return tuple(np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))


def figures(final, history, tables, directory) -> list:
    """``lr_sweep`` (hyperbola: spread of t and converged fraction against lr / edge; Razin-Cohen:
    fraction with det W(end) > 0 against lr), ``temperature_sweep`` and ``hyperbola_endpoints``
    (the (a, b) plane per lr factor)."""
    use_theme()
    out = tables["outcomes"]
    paths = []
    for sweep, x, xlabel in (("lr", None, None),
                             ("temperature", "temperature", "temperature 1/beta")):
        part = out[out["sweep"] == sweep].assign(N=lambda d: d["depth"].map("N = {:g}".format))
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
        hyp, rc = part[part["task"] == "hyperbola"], part[part["task"] == "razin_cohen"]
        hue = dict(hue="N", style="engine") if sweep == "temperature" else dict(hue="N")
        sns.lineplot(data=hyp, x=x or "lr_over_edge", y="t_std", marker="o", ax=axes[0], **hue)
        sns.lineplot(data=hyp, x=x or "lr_over_edge", y="frac_converged" if sweep == "lr"
                     else "loss_median", marker="o", ax=axes[1], legend=False, **hue)
        sns.lineplot(data=rc, x=x or "lr", y="frac_det_positive", marker="o", color="C3",
                     ax=axes[2])
        axes[0].set(ylabel=f"std of t (on the curve, |1 - ab| < {stats.ON_CURVE_TOL:g})",
                    yscale="log", title="hyperbola task")
        axes[1].set(ylabel="fraction converged" if sweep == "lr" else "median loss at horizon",
                    title="hyperbola task")
        axes[2].set(ylabel="fraction with det W(end) > 0", ylim=(-0.02, 1.02),
                    title="Razin-Cohen task, N = 3")
        for k, ax in enumerate(axes):
            ax.set_xscale("log")
            ax.set_xlabel(xlabel or ("lr (Razin-Cohen)" if k == 2 else "lr / edge of stability"))
        if sweep == "lr":
            for ax in axes[:2]:
                ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1)
        else:
            axes[1].set_yscale("log")
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].get_legend().remove()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
        paths.append(save(fig, directory, f"{sweep}_sweep"))

    data = final[(final["task"] == "hyperbola") & (final["sweep"] == "lr")]
    data = data.assign(a=data["w_0_1"], b=data["w_1_0"],
                       N=data["depth"].map("N = {:g}".format))
    limit = 3.0
    grid = sns.relplot(data=data, x="a", y="b", col="lr_over_edge", row="N", s=8, alpha=0.4,
                       edgecolor="none", height=2.4,
                       facet_kws=dict(xlim=(-limit, limit), ylim=(-limit, limit),
                                      margin_titles=True))
    for ax in grid.axes.flat:
        hyperbola(ax, limit, label="ab = 1")
    grid.set_titles(row_template="{row_name}", col_template="lr = {col_name:g} x edge")
    grid.set_axis_labels("a = w_0_1", "b = w_1_0")
    legend_above(grid, ncol=1)
    paths.append(save(grid, directory, "hyperbola_endpoints"))
    return paths
