"""Razin & Cohen (2020), "Implicit regularization in deep learning may not be explainable by
norms" (arXiv 2005.06398), section 3 and figure 1, with trajectory bands instead of one run.

The 2x2 task observes w12 = w21 = 1 and w22 = 0; every solution has det W = -1.  With small
init and det W(0) > 0 gradient descent cannot reach a solution without det crossing zero, so
the loss falls while |w11| ~ 1/|w22| >= 1/sqrt(2 l) and every norm diverge and the effective
rank tends to 1 (REFERENCE.md section 5.1).

Stopping rule.  The paper stops once the loss stays below 1e-4 for 11 checks 50 steps apart
(or at 5e6 steps).  Plain GD at these step sizes lowers the loss monotonically, so the engine's
rule (stop at the first step with loss <= 1e-4) stops at most 500 steps earlier, i.e. at a
loss within a factor 1 + O(500 lr |grad|) of theirs; at their 3e6 to 5e6 steps the
difference is invisible on the log axes.  The full grid runs up to 5e6 steps like theirs.

Cost (2 cores, measured on 16-run samples): the depth-3 and depth-4 runs that keep det > -1/2
reach loss 1e-4 after 0.5e6 to 1e6 steps, at 1e6 to 5e6 trajectory-steps per second; the
full grid (12 cells x 256 runs) takes about 15 to 50 minutes; the quick grid about 20 s.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm

from dlnmc import razin_cohen_2x2, stats
from dlnmc.figures import band, colour_by_step, legend_above, save, use_theme
from dlnmc.results import spectral_columns
from dlnmc.study import Cell

NAME = "razin_cohen_2020"
DESCRIPTION = (
    "Razin & Cohen (2020), section 3: the 2x2 completion w12 = w21 = 1, w22 = 0 by gradient "
    "descent on depth 2, 3, 4 factorizations at the paper's six (lr, init) settings, balanced "
    "('(b)') and Gaussian init (Gaussian redrawn until det W(0) > 0, as in their code; balanced "
    "not).  Per setting: the fraction of trajectories that never approach the solution set "
    "(det W > -1/2 at the end; all solutions have det = -1), |w11| and the norms against "
    "1/sqrt(2 loss), and the effective rank as the loss falls.  Stop at loss <= 1e-4."
)

SETTINGS = {2: ((6e-3, 1e-5), (3e-3, 1e-6)),
            3: ((6e-3, 1e-5), (3e-3, 1e-6)),
            4: ((3e-3, 1e-3), (1.5e-3, 1e-4))}
"""(lr, init) per depth, Razin & Cohen (2020) figure 1; init = std of the product's entries."""
INITS = ("balanced", "gaussian")
TOL = 1e-4
UNBOUNDED_DET = -0.5
"""A trajectory with det W > -1/2 at the end has not approached the solution set (det = -1)."""
QUANTITIES = ("|w11|", "nuclear", "frobenius", "spectral", "erank")
BINS_PER_DECADE = 4
MIN_BIN_RUNS = 3
"""A loss bin enters ``bands`` when it holds >= 3 runs and >= 1/4 of its group's runs."""


def setting_label(lr, init_scale, init) -> str:
    """The paper's legend text, e.g. ``lr 0.006, init 1e-05 (b)``."""
    return f"lr {lr:g}, init {init_scale:g}" + (" (b)" if init == "balanced" else "")


def cells(quick: bool) -> list[Cell]:
    """Full: 2 settings x 3 depths x 2 inits = 12 cells of 256 runs, up to 5e6 steps.
    Quick: the first setting per depth, both inits, 16 runs, up to 1e5 steps."""
    grid = []
    for depth, settings in SETTINGS.items():
        for lr, scale in settings[:1] if quick else settings:
            for init in INITS:
                params = dict(depth=depth, lr=lr, init=init, init_scale=scale, tol=TOL,
                              max_steps=10**5 if quick else 5 * 10**6, checkpoints="log")
                if init == "gaussian":
                    params["det_sign"] = 1
                grid.append(Cell(key=f"N{depth}_lr{lr:g}_init{scale:g}_{init}",
                                 problem="razin_cohen_2x2", params=params,
                                 runs=16 if quick else 256,
                                 labels={"setting": setting_label(lr, scale, init)}))
    return grid


def _with_outcome(table, final) -> pd.DataFrame:
    """Norms, erank, the run's outcome (``unbounded`` / ``solution``) and the run's columns of
    ``final`` for each row of ``table`` (``final`` itself or ``history``)."""
    W = table[["w_0_0", "w_0_1", "w_1_0", "w_1_1"]].to_numpy().reshape(-1, 2, 2)
    spec = spectral_columns(W)
    sv = np.stack([spec["sv_0"], spec["sv_1"]], axis=1)
    outcome = final.assign(outcome=np.where(final["det"] > UNBOUNDED_DET, "unbounded", "solution"))
    table = table.assign(**{
        "|w11|": np.abs(table["w_0_0"]), "nuclear": sv.sum(axis=1),
        "frobenius": np.sqrt((sv**2).sum(axis=1)), "spectral": sv[:, 0], "erank": spec["erank"],
    })
    keys = ["cell", "run"]
    carried = keys + [c for c in outcome.columns if c not in table.columns]
    return table.merge(outcome[carried], on=keys, how="left")


def wilson_interval(k, n, z=1.96):
    """Wilson score interval for a binomial proportion k / n."""
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """Tables ``verdicts`` (:func:`dlnmc.stats.hypotheses` per setting), ``outcomes`` (per
    setting), ``growth`` (endpoint norms times sqrt(2 loss) of the
    unbounded runs) and ``bands`` (quantiles over runs per loss bin of every quantity)."""
    group = ["depth", "init", "lr", "init_scale", "setting"]
    ends = _with_outcome(final, final)
    ends["unbounded"] = ends["outcome"] == "unbounded"
    ends["det_pos"] = ends["det"] > 0
    ends["det_init_pos"] = ends["det_init"] > 0
    ends["converged"] = ends["status"] == "converged"
    outcomes = ends.groupby(group, observed=True).agg(
        runs=("run", "size"), frac_det_init_pos=("det_init_pos", "mean"),
        frac_det_pos=("det_pos", "mean"), frac_unbounded=("unbounded", "mean"),
        frac_converged=("converged", "mean"), median_steps=("steps", "median"),
        median_loss=("loss", "median")).reset_index()
    lo, hi = wilson_interval(outcomes["frac_unbounded"] * outcomes["runs"], outcomes["runs"])
    outcomes["unbounded_lo"], outcomes["unbounded_hi"] = lo, hi

    scale = np.sqrt(2 * ends["loss"])
    unbounded = ends[ends["unbounded"]].assign(**{
        f"{q}_x_sqrt2loss": ends[q] * scale for q in QUANTITIES[:4]})
    growth = unbounded.groupby(group, observed=True).agg(
        runs=("run", "size"), median_abs_w11=("|w11|", "median"),
        **{f"median_{q}_x_sqrt2loss": (f"{q}_x_sqrt2loss", "median") for q in QUANTITIES[:4]},
        median_erank=("erank", "median"), max_erank=("erank", "max")).reset_index()

    path = _with_outcome(history[history["step"] > 0], final)
    path["loss_bin"] = np.floor(np.log10(path["loss"]) * BINS_PER_DECADE) / BINS_PER_DECADE
    long = path.melt(id_vars=group + ["outcome", "loss_bin", "step", "run"],
                     value_vars=list(QUANTITIES), var_name="quantity")
    q = long.groupby(group + ["outcome", "quantity", "loss_bin"], observed=True)
    bands = q["value"].quantile([0.1, 0.5, 0.9]).unstack().set_axis(
        ["q10", "median", "q90"], axis=1).reset_index()
    bands["runs"] = q["run"].nunique().to_numpy()
    bands["step_median"] = q["step"].median().to_numpy()
    bands["loss"] = 10 ** (bands.pop("loss_bin") + 0.5 / BINS_PER_DECADE)
    bands["inv_sqrt_2loss"] = 1 / np.sqrt(2 * bands["loss"])
    total = path.groupby(group + ["outcome"], observed=True)["run"].nunique().rename("total")
    bands = bands.merge(total.reset_index(), on=group + ["outcome"])
    bands = bands[bands["runs"] >= np.maximum(MIN_BIN_RUNS, bands.pop("total") / 4)]
    problem = razin_cohen_2x2()
    verdicts = pd.concat([stats.hypotheses(part, problem, depth=d).assign(depth=d, setting=s)
                          for (d, s), part in final.groupby(["depth", "setting"])],
                         ignore_index=True)
    return {"verdicts": verdicts, "outcomes": outcomes, "growth": growth, "bands": bands}


def _panels(bands, quantity, outcomes=("unbounded", "solution")):
    """Seaborn facet grid (rows: depth, columns: setting index within the depth) of one
    quantity's bands."""
    sub = bands[(bands["quantity"] == quantity) & bands["outcome"].isin(outcomes)].copy()
    sub["panel"] = sub.groupby("depth")["setting"].transform(
        lambda s: s.map({v: i for i, v in enumerate(sorted(s.unique()))}))
    return sub, sns.FacetGrid(sub, row="depth", col="panel", height=2.8, aspect=1.3,
                              sharex=True, sharey=False, margin_titles=False)


def figures(final, history, tables, directory) -> list:
    """``w11_vs_loss`` (the paper's figure with bands, coloured by step), ``norms_vs_loss``,
    ``erank_vs_loss`` and ``outcomes`` (fraction of unbounded runs per setting)."""
    use_theme()
    bands = tables["bands"]
    colours = {"unbounded": "C0", "solution": "C3"}
    paths = []
    norm = LogNorm(max(bands["step_median"].min(), 1), bands["step_median"].max())
    for quantity, name in (("|w11|", "w11_vs_loss"), ("erank", "erank_vs_loss")):
        sub, grid = _panels(bands, quantity)
        mappable = None
        for (depth, panel), ax in grid.axes_dict.items():
            cell = sub[(sub["depth"] == depth) & (sub["panel"] == panel)]
            for outcome, part in cell.groupby("outcome"):
                band(ax, part, "loss", colours[outcome], label=f"{outcome} (median, 10-90%)")
                mappable = colour_by_step(ax, part, "loss", "median", norm)
            if quantity == "|w11|":
                x = np.geomspace(sub["loss"].min(), sub["loss"].max(), 50)
                ax.plot(x, 1 / np.sqrt(2 * x), "k:", linewidth=1, label="1/sqrt(2 loss)")
                ax.set_yscale("log")
            ax.set_xscale("log")
            ax.set_title(", ".join(sorted(cell["setting"].unique())) + f" (N={depth})")
        grid.set_axis_labels("loss (1/2 SSE)", "|w11|" if quantity == "|w11|" else "effective rank")
        legend_above(grid, ncol=3)
        grid.figure.subplots_adjust(right=0.86)
        bar = grid.figure.colorbar(mappable, ax=grid.axes.ravel().tolist(), fraction=0.03,
                                   pad=0.02)
        bar.set_label("GD step (median in bin)")
        paths.append(save(grid, directory, name))

    sub, grid = _panels(bands, "|w11|", outcomes=("unbounded",))
    norms = bands[(bands["outcome"] == "unbounded") & bands["quantity"].isin(QUANTITIES[:4])]
    for (depth, panel), ax in grid.axes_dict.items():
        setting = sub[(sub["depth"] == depth) & (sub["panel"] == panel)]["setting"].unique()
        cell = norms[(norms["depth"] == depth) & norms["setting"].isin(setting)]
        for k, (quantity, part) in enumerate(cell.groupby("quantity", sort=False)):
            band(ax, part, "inv_sqrt_2loss", f"C{k}", label=quantity)
        if len(cell):
            x = np.geomspace(cell["inv_sqrt_2loss"].min(), cell["inv_sqrt_2loss"].max(), 20)
            ax.plot(x, x, "k:", linewidth=1, label="identity")
        ax.set(xscale="log", yscale="log", title=", ".join(setting) + f" (N={depth})")
    grid.set_axis_labels("1 / sqrt(2 loss)", "norm of W (unbounded runs)")
    legend_above(grid, ncol=5)
    paths.append(save(grid, directory, "norms_vs_loss"))

    out = tables["outcomes"].sort_values(["depth", "setting"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = [f"N={d}: {s}" for d, s in zip(out["depth"], out["setting"])]
    y = np.arange(len(out))
    ax.barh(y, out["frac_unbounded"], color="C0", alpha=0.7, label="det W(end) > -1/2")
    ax.errorbar(out["frac_unbounded"], y, xerr=[out["frac_unbounded"] - out["unbounded_lo"],
                                                 out["unbounded_hi"] - out["frac_unbounded"]],
                fmt="none", ecolor="k", capsize=2, label="95% Wilson interval")
    ax.plot(out["frac_det_init_pos"], y, "k|", markersize=12, label="det W(0) > 0")
    ax.plot(out["frac_det_pos"], y, "o", color="C3", markersize=5, label="det W(end) > 0")
    ax.set(yticks=y, yticklabels=labels, xlim=(0, 1.02),
           xlabel="fraction of trajectories (never near the solution set)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.4, -0.22), ncol=2)
    paths.append(save(fig, directory, "outcomes"))
    return paths
