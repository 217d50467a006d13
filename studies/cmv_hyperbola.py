"""Cohen, Menon & Veraszto (2023), the 2x2 "diagonal" task: where on the hyperbola ab = 1 do
gradient-descent endpoints land, against depth and init scale (mathematics.md section 5.2).

Observed w11 = w22 = 1; solutions are [[1, a], [b, 1]], the rank-1 ones the hyperbola ab = 1
with coordinate t = log|a| on each branch.  Depths 2, 5, 10, 20 run the GD engine; depth
infinity runs the end-to-end flow (the only way to reach N = infinity).  The step size is
``LR_TAU / N`` so every depth advances the normalized clock tau = N t by the same amount per
step (the normalized operator's eigenvalues at the corners are about 2, so GD is stable).

"On the curve" is :func:`dlnmc.stats.endpoint_status` (converged and |1 - ab| < 0.05) in every
table, verdict and figure that speaks of t; the runs it excludes are counted by label.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns

from dlnmc import diagonal_2x2, manifold, predictions, stats
from dlnmc.figures import hyperbola, legend_above, save, use_theme
from dlnmc.study import Cell

NAME = "cmv_hyperbola"
DESCRIPTION = (
    "Cohen, Menon & Veraszto (2023): the 2x2 task observing w11 = w22 = 1, whose rank-1 "
    "solutions form the hyperbola ab = 1.  Balanced init at product scales 1e-3 .. 1, depths "
    "2, 5, 10, 20 (gradient descent, lr = 0.1 / N) and infinity (end-to-end flow to tau = 1e7). "
    " Endpoints in the (a, b) plane with their effective ranks; the spread of t = log|a| on the "
    "curve (converged, |1 - ab| < 0.05) by "
    "depth and init scale; the empirical law of t against the candidate densities P1, P2, P3."
)

DEPTHS = (2, 5, 10, 20, math.inf)
SCALES = (1e-3, 1e-2, 1e-1, 1.0)
LR_TAU = 0.1
TOL = 1e-10
WINDOW = (-3.0, 3.0)
"""Window in t on which the candidate densities are normalized and compared."""
CANDIDATES = ("P1", "P2", "P3", "uniform_arclength")
"""Candidates drawn against the empirical density (the norm minimizer is a point mass)."""
T_MAX_FLOW = 1e7
"""Horizon (tau) of the N = infinity flow: its escape from the origin takes ~ 1 / (s c) with c
the init's component along the escape direction, heavy-tailed over runs (at init 1e-3, 69 of
1000 runs were still at the origin at tau = 1e4, 5 at 1e5, none at 1e6: the slowest took
6.9e5)."""
MIN_FIT = 20
"""Goodness of fit only for cells with at least this many endpoints on the curve."""
N_BOOT = 300
"""Bootstrap resamples of the goodness-of-fit and verdict intervals."""
ERANK_LOW = 1.06
"""CMV's histogram of endpoint effective ranks spans 1.00 .. 1.06."""


def depth_label(depth) -> str:
    return "inf" if math.isinf(depth) else str(int(depth))


def cells(quick: bool) -> list[Cell]:
    """Full: 5 depths x 4 scales, 1000 runs each.  Quick: depths 2, 5, 20, inf at scales 1e-2
    and 1, 200 runs each."""
    depths = (2, 5, 20, math.inf) if quick else DEPTHS
    scales = (1e-2, 1.0) if quick else SCALES
    grid = []
    for depth in depths:
        for scale in scales:
            common = dict(depth=depth, init="balanced", init_scale=scale, tol=TOL,
                          checkpoints=None)
            if math.isinf(depth):  # the end-to-end flow; t_max on the tau clock
                engine, params = "flow", dict(common, t_max=T_MAX_FLOW)
            else:
                engine = "gd"
                params = dict(common, lr=LR_TAU / depth,
                              max_steps=2 * 10**5 if quick else 2 * 10**6)
            grid.append(Cell(key=f"N{depth_label(depth)}_scale{scale:g}", problem="diagonal_2x2",
                             engine=engine, params=params, runs=200 if quick else 1000,
                             labels={"N": depth_label(depth)}))
    return grid


def _order(values) -> list[str]:
    return [d for d in map(depth_label, DEPTHS) if d in set(values)]


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """Tables ``verdicts`` (:func:`dlnmc.stats.hypotheses` per cell), ``endpoints`` (per depth
    and scale: the label counts of :func:`dlnmc.stats.endpoint_status`, erank quantiles and
    fraction with erank below 1.06 among the finished runs), ``t_spread`` (the runs on the
    curve: their number, the spread of t with bootstrap intervals, the branch split, and the
    counts excluded by label), ``coordinates`` (branch, t, |1 - ab| of the runs on the curve),
    ``t_density`` (candidate densities on the window) and ``goodness_of_fit``
    (:func:`dlnmc.stats.compare` per cell with >= 20 endpoints on the curve; those outside the
    window are counted in ``n_outside`` and reject the candidates)."""
    group = ["depth", "N", "init", "init_scale"]
    problem = diagonal_2x2()
    status = stats.endpoint_status(final, problem)
    finished = ~status.isin(stats.EXCLUSIONS)
    ends = final.assign(status_label=status, finished=finished,
                        low_rank=(final["erank"] < ERANK_LOW).where(finished),
                        erank_finished=final["erank"].where(finished))
    counts = ends.groupby(group, observed=True)["status_label"].apply(
        lambda s: pd.Series(stats.status_counts(s, problem))).unstack().reset_index()
    endpoints = ends.groupby(group, observed=True).agg(
        runs=("run", "size"), erank_median=("erank_finished", "median"),
        erank_q90=("erank_finished", lambda e: e.quantile(0.9)),
        frac_erank_below_1_06=("low_rank", "mean")).reset_index().merge(counts, on=group)
    coords = manifold.hyperbola_coordinates(final, problem)
    on = ends.assign(t=coords["t"], branch=coords["branch"], distance=coords["hyperbola_dist"],
                     abs_t=coords["t"].abs())[status == "on_curve"]
    spread = []
    for key, part in on.groupby(group, observed=True):
        t = part["t"].to_numpy()
        row = dict(zip(group, key), runs_on_curve=len(t),
                   t_std=np.std(t, ddof=1) if len(t) > 1 else np.nan,
                   t_iqr=_iqr(t), abs_t_median=np.median(np.abs(t)),
                   t_q05=np.quantile(t, 0.05), t_q95=np.quantile(t, 0.95),
                   frac_positive_branch=float(np.mean(part["branch"] > 0)),
                   distance_median=part["distance"].median())
        for name, fun in (("t_std", lambda x: np.std(x, ddof=1, axis=-1)), ("t_iqr", _iqr)):
            row[f"{name}_lo"], row[f"{name}_hi"] = _bootstrap_ci(t, fun)
        spread.append(row)
    t_spread = pd.DataFrame(spread).merge(counts, on=group)
    grid = np.linspace(*WINDOW, 241)
    density = [pd.DataFrame({"N": label, "candidate": name, "t": grid, "density": cand.pdf(grid)})
               for label in _order(on["N"])
               for name, cand in predictions.candidates(float(label), WINDOW).items()
               if name in CANDIDATES]
    tables = {"endpoints": endpoints, "t_spread": t_spread,
              "coordinates": on[group + ["run", "t", "branch", "distance"]],
              "t_density": pd.concat(density, ignore_index=True)}
    fits = []
    for (depth, label, init, scale), part in on.groupby(group, observed=True):
        if len(part) >= MIN_FIT:
            fit = stats.compare(part["t"].to_numpy(), predictions.candidates(depth, WINDOW),
                                n_boot=N_BOOT)
            fits.append(fit.assign(N=label, init=init, init_scale=scale))
    tables["goodness_of_fit"] = pd.concat(fits, ignore_index=True)
    verdicts = pd.concat(
        [stats.hypotheses(part, problem, depth=depth, window=WINDOW, n_boot=N_BOOT)
         .assign(N=label, init=init, init_scale=scale)
         for (depth, label, init, scale), part in final.groupby(group, observed=True)],
        ignore_index=True)
    return {"verdicts": verdicts, **tables}


def _iqr(t):
    q25, q75 = np.quantile(t, [0.25, 0.75], axis=-1)
    return q75 - q25


def _bootstrap_ci(t, fun, level=0.95, seed=0):
    """Percentile bootstrap interval of ``fun`` (a statistic over the last axis) of sample t."""
    if len(t) < 2:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    boot = fun(t[rng.integers(0, len(t), (N_BOOT, len(t)))])
    return tuple(np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))


def findings(tables) -> list[str]:
    """Sentences for the report, each computed from the table it names."""
    spread = tables["t_spread"].set_index(["N", "init_scale"])
    v = tables["verdicts"]
    small = min(spread.index.get_level_values("init_scale"))
    out = []
    for label in _order(spread.index.get_level_values("N")):
        row = spread.loc[(label, small)]
        out.append(f"N = {label}, init {small:g}: {row['runs_on_curve']} of "
                   f"{row[[c for c in row.index if c.startswith('n_')]].sum():.0f} runs end on "
                   f"the curve (|1 - ab| < {stats.ON_CURVE_TOL:g}; off the curve "
                   f"{row['n_off_curve']}, stuck at the origin {row['n_stuck_at_origin']}, not "
                   f"converged {row['n_not_converged']}), std of t {row['t_std']:.3g} "
                   f"[{row['t_std_lo']:.3g}, {row['t_std_hi']:.3g}] (`t_spread`).")
    vol = v[v["hypothesis"] == "volume"]
    held = vol[vol["holds"].fillna(False).astype(bool)]
    out.append(f"The volume hypothesis (best of P1-P3 by KS, Bonferroni 5%) holds in "
               f"{len(held)} of {len(vol)} cells"
               + (": " + ", ".join(f"N = {r.N} at init {r.init_scale:g} ({r.n} runs on the "
                                   f"curve)" for r in held.itertuples()) if len(held) else "")
               + " (`verdicts`).")
    for hyp in ("norm", "rank"):
        part = v[v["hypothesis"] == hyp]
        yes = part[part["holds"].fillna(False).astype(bool)]
        out.append(f"The {hyp} hypothesis holds in {len(yes)} of {len(part)} cells; it holds at "
                   f"init scales {sorted(set(yes['init_scale']))} (`verdicts`).")
    return out


def figures(final, history, tables, directory) -> list:
    """``endpoints_plane`` (endpoints over the hyperbola, rows: init scale, columns: depth,
    inset: erank histogram), ``erank_vs_scale``, ``t_density`` (smallest init scale, against
    the candidates) and ``t_spread``."""
    use_theme()
    data = final.assign(a=final["w_0_1"], b=final["w_1_0"])
    order = _order(data["N"])
    limit = 3.0
    grid = sns.relplot(data=data, x="a", y="b", row="init_scale", col="N", col_order=order,
                       kind="scatter", s=8, alpha=0.4, edgecolor="none", height=2.4,
                       facet_kws=dict(margin_titles=True, xlim=(-limit, limit),
                                      ylim=(-limit, limit)))
    bins = np.linspace(1.0, 2.0, 21)
    for (scale, label), ax in grid.axes_dict.items():
        hyperbola(ax, limit, label="ab = 1")
        inset = ax.inset_axes([0.06, 0.62, 0.35, 0.3])  # the quadrant ab < 0 holds no solution
        part = data[(data["init_scale"] == scale) & (data["N"] == label)]
        inset.hist(part["erank"].clip(upper=2.0), bins=bins, color="C2")
        inset.set_xlim(1, 2)
        inset.set_xticks([1, 1.5, 2])
        inset.set_yticks([])
        inset.tick_params(labelsize=7)
        inset.set_title("erank", fontsize=7, pad=1)
    grid.set_titles(row_template="scale {row_name:g}", col_template="N = {col_name}")
    grid.set_axis_labels("a = w_0_1", "b = w_1_0")
    legend_above(grid, ncol=1)
    paths = [save(grid, directory, "endpoints_plane")]

    grid = sns.relplot(data=tables["endpoints"], x="init_scale", y="erank_median", hue="N",
                       hue_order=order, style="N", style_order=order, kind="line", markers=True,
                       height=3.2, aspect=1.4)
    grid.set(xscale="log", xlabel="init scale (std of the product's entries)",
             ylabel="median effective rank of W(end)")
    paths.append(save(grid, directory, "erank_vs_scale"))

    ends = tables["coordinates"]
    ends = ends[ends["init_scale"] == ends["init_scale"].min()]
    grid = sns.displot(data=ends, x="t", col="N", col_order=order, stat="density",
                       bins=np.linspace(*WINDOW, 121), height=2.8, color="0.6",
                       facet_kws=dict(sharey=False))
    for label, ax in grid.axes_dict.items():
        dens = tables["t_density"][tables["t_density"]["N"] == label]
        for k, (name, part) in enumerate(dens.groupby("candidate")):
            ax.plot(part["t"], part["density"], color=f"C{k}", label=name)
    grid.set_titles(f"N = {{col_name}}, scale {ends['init_scale'].min():g}")
    grid.set_axis_labels("t = log|a| on the hyperbola", "density")
    legend_above(grid, ncol=4)
    paths.append(save(grid, directory, "t_density"))
    spread = tables["t_spread"]
    grid = sns.relplot(data=spread, x="init_scale", y="t_std", hue="N", hue_order=order,
                       style="N", style_order=order, kind="line", markers=True, height=3.2,
                       aspect=1.4)
    for k, label in enumerate(order):
        part = spread[spread["N"] == label]
        grid.ax.errorbar(part["init_scale"], part["t_std"], fmt="none", ecolor=f"C{k}",
                         yerr=[part["t_std"] - part["t_std_lo"], part["t_std_hi"] - part["t_std"]])
    grid.set(xscale="log", yscale="log", xlabel="init scale (std of the product's entries)",
             ylabel=f"std of t (on the curve, |1 - ab| < {stats.ON_CURVE_TOL:g})")
    paths.append(save(grid, directory, "t_spread"))
    return paths
