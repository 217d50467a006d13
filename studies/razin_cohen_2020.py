"""Razin & Cohen (2020), "Implicit regularization in deep learning may not be explainable by
norms" (arXiv 2005.06398), section 3 and figure 1, with trajectory bands instead of one run.

The 2x2 task observes w12 = w21 = 1 and w22 = 0; every solution has det W = -1.

The theorem (gradient flow).  Razin & Cohen (2020, section 3) prove for gradient flow on a
depth N >= 2 factorization from a balanced near-zero init with det W(0) > 0 that det W stays
positive forever; then no solution is ever reached, |w11| >= about 1/sqrt(2 loss) grows
without bound as the loss tends to 0, every norm diverges and the effective rank tends to 1.
The engine that integrates this flow is the end-to-end flow (``engine = "flow"`` cells,
:func:`dlnmc.flow.simulate_flow`, balanced init 1e-3 at depths 2, 3, 4).

The arithmetic of GD (``engine = "gd"`` cells).  Gradient descent steps the factor entries,
not W, and the theorem's invariant is not an invariant of GD: det W can change sign.  So a run
is labelled by the invariant itself, from det W(0) and det W(end) of the ``final`` table:

- ``unbounded``: det W(0) > 0 and det W(end) > 0 (the sign the theorem keeps, kept to the end);
- ``crossed``: det W(0) > 0 and det W(end) <= 0 (GD left the theorem's regime);
- ``negative_start``: det W(0) <= 0 (outside the theorem's premise).

Gaussian factors (the paper's unbalanced runs, redrawn until det W(0) > 0 as in their code) are
not balanced, so the premise of the theorem does not hold for them either; their crossings
happen at |det W| / ||W||_F^2 far above the rounding level of the entries, most of them while
W is still small.

The crossing.  For every crossed run the checkpoints of ``history`` bracket the first sign
change of det W (computed from the history's entries of W, or the flow's own ``det`` where the
history has one): the last checkpoint with det > 0 before the first with det < 0.  The table
``crossings`` gives step, time t, loss, |w11|, |det W| and |det W| / ||W||_F^2 at both ends.
det computed from float64 entries of W does not resolve |det W| / ||W||_F^2 below a few
machine epsilons (:data:`DET_FLOOR`): a bracket at that floor says where det W became too
small for the entries to resolve, not where the factors' own determinants changed sign.
Checked outside the engine (NumPy GD on the factors of the depth-2 balanced runs, lr 6e-3 to
1.5e-3, six runs each, in float64 and in 80-bit extended precision): a factor's det changes
sign at the same step in both precisions, at |det W| / ||W||_F^2 of 1e-20 to 1e-16, and the
crossing time t grows by about 1 per halving of lr.  By then the balancedness defect
W_2^T W_2 - W_1 W_1^T, which GD lets drift by O(lr) per unit time (1e-3 at lr 6e-3), is many
orders of magnitude above the factors' smallest squared singular value (about 1e-16), so
|det W_1| and |det W_2| are no longer tied and one of them passes through zero: the crossing
is GD's discretization, not float64 rounding (``test_gd_crossing_is_not_float64_rounding``).
The step-size sweep (``step_size_sweep``, depths 2 and 3, lr0 .. lr0 / 8, balanced,
det W(0) > 0) measures this with the engine: a crossing caused by rounding would stay at one
time t as lr shrinks, a crossing caused by the discretization moves.

Clocks.  t = lr * step for GD (the clock of gradient flow on the factors); the flow runs on
CMV's normalized clock tau = N t and reports t = tau / N.

Stopping rule.  The paper stops once the loss stays below 1e-4 for 11 checks 50 steps apart
(or at 5e6 steps).  Plain GD at these step sizes lowers the loss monotonically, so the engine's
rule (stop at the first step with loss <= 1e-4) stops at most 500 steps earlier, i.e. at a loss
within a factor 1 + O(500 lr |grad|) of theirs.  GD cells run up to 5e6 steps like theirs (the
sweep up to 5e6 lr0 / lr).

Cost (2 cores, measured on 16-run samples): GD runs at 2.4e8 to 3.4e8 trajectory-steps per
second (all 20 GD cells of the full grid, 1e10 steps: under a minute).  The flow needs about
1.7 s (depth 3) and 1.4 s (depth 4) of one core per trajectory to reach loss 1e-4 from init
1e-3 (5e5 to 6e5 integrator steps: the metric grows stiff as |w11| grows), and at depth 2
about 3.7 s when det W keeps its sign (tau 1.2e5, 9.5e5 steps).  Full grid (23 cells of 256
runs): about 8 to 15 minutes, almost all of it the flow cells; history.parquet about 30 MB.
Quick grid: about 30 s.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.ticker import NullLocator

from dlnmc import razin_cohen_2x2, stats
from dlnmc.figures import band, colour_by_step, legend_above, save, use_theme
from dlnmc.results import det_sign, spectral_columns
from dlnmc.study import Cell

NAME = "razin_cohen_2020"
DESCRIPTION = (
    "Razin & Cohen (2020), section 3: the 2x2 completion w12 = w21 = 1, w22 = 0 (every solution "
    "has det W = -1).  The theorem is about gradient flow: from a balanced near-zero init with "
    "det W(0) > 0, det W stays positive, so |w11| grows without bound as the loss falls and the "
    "effective rank tends to 1.  The flow cells (engine flow: the end-to-end flow, balanced init "
    "1e-3, det W(0) > 0, depths 2, 3, 4) integrate that flow.  The gd cells run gradient descent "
    "on the factor entries at the paper's six (lr, init) settings, balanced ('(b)') and Gaussian "
    "(redrawn until det W(0) > 0, as in their code; Gaussian factors are not balanced, so the "
    "theorem's premise does not hold for them), and a step-size sweep (lr0, lr0/2, lr0/4, lr0/8 "
    "at depths 2 and 3, balanced, det W(0) > 0).  GD does not keep the theorem's invariant: "
    "det W can change sign.  Each run is labelled from det W(0) and det W(end): unbounded (both "
    "> 0: the theorem's sign kept to the end), crossed (det W(0) > 0 >= det W(end): GD left the "
    "theorem's regime), negative_start (det W(0) <= 0: outside the premise).  crossings "
    "brackets each crossed run's first sign change between checkpoints (det from the float64 "
    "entries of W, which do not resolve |det W| / ||W||_F^2 below a few 1e-16); "
    "step_size_sweep shows whether the crossing moves with lr (discretization) or stays at one "
    "time t (rounding); plain NumPy GD of the depth-2 runs crosses at the same step in float64 "
    "and in 80-bit extended precision.  Time t = lr * step (flow: tau / N).  Stop at loss "
    "<= 1e-4."
)

SETTINGS = {2: ((6e-3, 1e-5), (3e-3, 1e-6)),
            3: ((6e-3, 1e-5), (3e-3, 1e-6)),
            4: ((3e-3, 1e-3), (1.5e-3, 1e-4))}
"""(lr, init) per depth, Razin & Cohen (2020) figure 1; init = std of the product's entries."""
INITS = ("balanced", "gaussian")
TOL = 1e-4
MAX_STEPS = 5 * 10**6
CHECKPOINTS_PER_DECADE = 20
"""Log-spaced GD checkpoints per decade of steps (a bracket spans a factor 10^(1/20) = 1.12
in t)."""
SWEEP_DEPTHS = (2, 3)
SWEEP_FACTORS = (1, 2, 4, 8)
"""The sweep's step sizes are lr0 / factor, lr0 the paper's first setting at the depth (init
its first init scale); max_steps grows by the same factor, so every lr has the same horizon t."""
SWEEP_CHECKPOINTS_PER_DECADE = {2: 40, 3: 10}
"""Depth 2 crosses near t = 15 (a bracket spans a factor 10^(1/40) = 1.06 in t); depth 3 has
no crossing to locate."""
FLOW_DEPTHS = (2, 3, 4)
FLOW_SCALE = 1e-3
FLOW_T_MAX = 5e5
"""Horizon of the flow cells in tau = N t; from init 1e-3 loss 1e-4 is reached at tau about
1.2e5 (depth 2), 3.2e4 (depth 3) and 1.7e4 (depth 4)."""
QUICK_FLOW_TOL = 1e-3
"""The quick grid's flow cells stop at loss 1e-3 (|w11| about 22): reaching 1e-4 costs the
flow some 1.5 s per trajectory (the metric grows stiff as |w11| grows)."""
RUNS = 256
QUICK_RUNS = 16
LABELS = ("unbounded", "crossed", "negative_start")
DET_FLOOR = 16 * np.finfo(np.float64).eps
"""|det W| / ||W||_F^2 below which the sign of det computed from the float64 entries of W is
not resolved (each entry carries a rounding error of a few eps relative to ||W||)."""
QUANTITIES = ("|w11|", "nuclear", "frobenius", "spectral", "erank")
FIGURE_LABELS = {"|w11|": "|w_0_0|"}
"""The figures' names of quantities whose table name is the paper's 1-based one: figures name
entries 0-based, as the tables' columns (``w_0_0``) do."""
BINS_PER_DECADE = 4
MIN_BIN_RUNS = 3
"""A loss bin enters ``bands`` when it holds >= 3 runs and >= 1/4 of its group's runs."""
CELL_COLUMNS = ["cell", "series", "engine", "depth", "init", "lr", "init_scale", "setting"]
"""Constant per cell: the columns that key every per-cell table."""


def setting_label(lr, init_scale, init) -> str:
    """The paper's legend text, e.g. ``lr 0.006, init 1e-05 (b)``."""
    return f"lr {lr:g}, init {init_scale:g}" + (" (b)" if init == "balanced" else "")


def _log_checkpoints(max_steps, per_decade) -> int:
    """Number of log-spaced checkpoints giving ``per_decade`` per decade up to ``max_steps``."""
    return int(per_decade * math.log10(max_steps)) + 1


def _gd_cell(key, series, depth, lr, scale, init, runs, max_steps, per_decade, det_sign,
             setting) -> Cell:
    params = dict(depth=depth, lr=lr, init=init, init_scale=scale, tol=TOL, max_steps=max_steps,
                  checkpoints=_log_checkpoints(max_steps, per_decade))
    if det_sign is not None:
        params["det_sign"] = det_sign
    return Cell(key=key, problem="razin_cohen_2x2", params=params, runs=runs,
                labels={"setting": setting, "engine": "gd", "series": series})


def cells(quick: bool) -> list[Cell]:
    """The grid, in three series.

    ``paper``: GD at the paper's 2 settings x 3 depths x 2 inits (Gaussian with det_sign=1 as
    in their code), up to 5e6 steps.  ``lr_sweep``: GD at depths 2 and 3, balanced, det_sign=1,
    lr = lr0 / (1, 2, 4, 8) at the first setting's init.  ``flow``: the end-to-end flow at
    depths 2, 3, 4, balanced init 1e-3, det_sign=1, up to tau = 5e5.  Full: 256 runs per cell.
    Quick: the first setting per depth in ``paper``, 16 runs per cell, the flow cells stop at
    loss 1e-3 (:data:`QUICK_FLOW_TOL`); everything else as in the full grid.
    """
    runs = QUICK_RUNS if quick else RUNS
    grid = []
    for depth, settings in SETTINGS.items():
        for lr, scale in settings[:1] if quick else settings:
            for init in INITS:
                grid.append(_gd_cell(f"N{depth}_lr{lr:g}_init{scale:g}_{init}", "paper", depth,
                                     lr, scale, init, runs, MAX_STEPS, CHECKPOINTS_PER_DECADE,
                                     1 if init == "gaussian" else None,
                                     setting_label(lr, scale, init)))
    for depth in SWEEP_DEPTHS:
        lr0, scale = SETTINGS[depth][0]
        for factor in SWEEP_FACTORS:
            lr = lr0 / factor
            grid.append(_gd_cell(f"sweep_N{depth}_lr{lr:g}_init{scale:g}", "lr_sweep", depth, lr,
                                 scale, "balanced", runs, MAX_STEPS * factor,
                                 SWEEP_CHECKPOINTS_PER_DECADE[depth], 1,
                                 setting_label(lr, scale, "balanced") + ", det W(0) > 0"))
    for depth in FLOW_DEPTHS:
        grid.append(Cell(key=f"flow_N{depth}_init{FLOW_SCALE:g}", problem="razin_cohen_2x2",
                         engine="flow",
                         params=dict(depth=depth, init="balanced", init_scale=FLOW_SCALE,
                                     det_sign=1, tol=QUICK_FLOW_TOL if quick else TOL,
                                     t_max=FLOW_T_MAX, checkpoints="log"),
                         runs=runs,
                         labels={"setting": f"flow, init {FLOW_SCALE:g} (b)", "engine": "flow",
                                 "series": "flow"}))
    return grid


def wilson_interval(k, n, z=1.96):
    """Wilson score interval for a binomial proportion k / n."""
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def run_labels(final) -> pd.Series:
    """Each run's label (:data:`LABELS`) from the signs of ``det_init`` and ``det``
    (:func:`dlnmc.results.det_sign`): unbounded (both > 0), crossed (det W(0) > 0 >= det W(end)),
    negative_start (det W(0) <= 0)."""
    start, end = final["det_init"].to_numpy() > 0, det_sign(final) > 0
    label = np.where(~start, "negative_start", np.where(end, "unbounded", "crossed"))
    return pd.Series(pd.Categorical(label, categories=list(LABELS)), index=final.index,
                     name="outcome")


def _cell_table(final) -> pd.DataFrame:
    """One row per cell: the columns of :data:`CELL_COLUMNS` (lr is NaN for flow cells)."""
    return (final[CELL_COLUMNS].drop_duplicates("cell").reset_index(drop=True)
            .astype({"cell": str, "series": str, "engine": str, "setting": str}))


def _time(table) -> pd.Series:
    """Time t of gradient flow on the factors: lr * step for GD rows, tau / N for flow rows
    (``table`` carries ``lr``, ``depth``, ``engine`` and ``step`` or ``steps``)."""
    step = table["step"] if "step" in table else table["steps"]
    gd_time = table["lr"] * step
    if "time_tau" not in table:
        return gd_time
    return gd_time.where(table["engine"] == "gd", table["time_tau"] / table["depth"])


def _with_outcome(table, final) -> pd.DataFrame:
    """Norms, erank, det, ||W||_F^2, time t, each run's label (``outcome``) and the cell's
    columns for each row of ``table`` (``final`` itself or ``history``)."""
    W = table[["w_0_0", "w_0_1", "w_1_0", "w_1_1"]].to_numpy().reshape(-1, 2, 2)
    spec = spectral_columns(W)
    sv = np.stack([spec["sv_0"], spec["sv_1"]], axis=1)
    det = pd.Series(spec["det"], index=table.index)
    if "det" in table:  # the engine's own det (the flow's keeps the sign), where present
        det = table["det"].where(table["det"].notna(), det)
    table = table.assign(**{
        "|w11|": np.abs(table["w_0_0"]), "nuclear": sv.sum(axis=1),
        "frobenius": np.sqrt((sv**2).sum(axis=1)), "spectral": sv[:, 0], "erank": spec["erank"],
        "det": det, "fro2": (sv**2).sum(axis=1)})
    outcome = final[["cell", "run"]].assign(outcome=run_labels(final))
    table = table.drop(columns=[c for c in CELL_COLUMNS[1:] if c in table]).astype({"cell": str})
    table = table.merge(_cell_table(final), on="cell", how="left")
    table = table.merge(outcome.astype({"cell": str}), on=["cell", "run"], how="left")
    return table.assign(t=_time(table))


def outcomes_table(ends) -> pd.DataFrame:
    """Per cell: run counts per label, ``frac_unbounded`` (the fraction of runs that keep
    det W > 0 from start to end) with its 95% Wilson interval, the fractions with det W(0) > 0
    and det W(end) > 0, convergence and medians of steps, time t and loss."""
    counts = pd.crosstab(ends["cell"], ends["outcome"]).reindex(columns=list(LABELS),
                                                                  fill_value=0)
    counts.columns = [f"n_{c}" for c in counts.columns]
    per_cell = ends.assign(det_init_pos=ends["det_init"] > 0, det_pos=det_sign(ends) > 0,
                           converged=ends["status"] == "converged").groupby("cell").agg(
        runs=("run", "size"), frac_det_init_pos=("det_init_pos", "mean"),
        frac_det_pos=("det_pos", "mean"), frac_converged=("converged", "mean"),
        median_steps=("steps", "median"), median_t=("t", "median"),
        median_loss=("loss", "median"))
    out = _cell_table(ends).merge(per_cell.join(counts).reset_index(), on="cell")
    out["frac_unbounded"] = out["n_unbounded"] / out["runs"]
    out["unbounded_lo"], out["unbounded_hi"] = wilson_interval(out["n_unbounded"], out["runs"])
    positive = out["n_unbounded"] + out["n_crossed"]
    out["frac_crossed_of_det_init_pos"] = out["n_crossed"] / positive.where(positive > 0)
    return out


def crossings_table(final, history) -> pd.DataFrame:
    """One row per crossed run: the bracket of det W's first sign change in ``history``.

    ``before``: the last checkpoint with det > 0 ahead of ``after``, the first checkpoint with
    det < 0; at both: step, time t, loss, |w11|, |det W| and |det W| / ||W||_F^2
    (``rel_det``).  Also the number of sign changes along the checkpoints (zeros skipped) and
    the time of the last checkpoint with det > 0 (after it the sign stays <= 0).
    """
    crossed = final.loc[run_labels(final) == "crossed", ["cell", "run"]].astype({"cell": str})
    path = _with_outcome(history.astype({"cell": str}).merge(crossed, on=["cell", "run"]), final)
    path = path.sort_values(["cell", "run", "t", "step"], kind="stable")
    keys = ["cell", "run"]
    quantities = {"step": "step", "t": "t", "loss": "loss", "abs_w11": "|w11|"}
    path = path.assign(sign=det_sign(path), abs_det=path["det"].abs(),
                       rel_det=path["det"].abs() / path["fro2"])
    after = path[path["sign"] < 0].groupby(keys).head(1)
    ahead = path.merge(after[keys + ["t"]].rename(columns={"t": "t_first_negative"}), on=keys)
    before = ahead[(ahead["sign"] > 0) & (ahead["t"] < ahead["t_first_negative"])]
    before = before.groupby(keys).tail(1)
    columns = [*quantities.values(), "abs_det", "rel_det"]
    names = [*quantities, "abs_det", "rel_det"]
    out = crossed.merge(_cell_table(final), on="cell")
    for side, rows in (("before", before), ("after", after)):
        part = rows[keys + columns].set_axis(keys + [f"{n}_{side}" for n in names], axis=1)
        out = out.merge(part, on=keys, how="left")
    signs = path.loc[path["sign"] != 0, keys + ["sign"]].set_index(keys)["sign"]
    changes = signs.groupby(level=keys).agg(lambda s: int(np.count_nonzero(np.diff(s.to_numpy()))))
    last_positive = path[path["sign"] > 0].groupby(keys)["t"].last()
    out = out.merge(changes.rename("sign_changes").reset_index(), on=keys, how="left")
    return out.merge(last_positive.rename("t_last_positive").reset_index(), on=keys, how="left")


def crossing_summary(crossings) -> pd.DataFrame:
    """Per cell with crossed runs: their number and the quantiles (10%, 50%, 90%) of the
    bracket's ``before`` end; ``frac_at_floor``: the fraction whose ``rel_det_before`` is below
    :data:`DET_FLOOR` (the entries of W no longer resolve det W there)."""
    rows = []
    for key, part in crossings.groupby("cell", sort=False):
        row = part[CELL_COLUMNS].iloc[0].to_dict() | {"n_crossed": len(part)}
        for name in ("t_before", "t_after", "loss_before", "abs_w11_before", "abs_det_before",
                     "rel_det_before"):
            q10, q50, q90 = part[name].quantile([0.1, 0.5, 0.9])
            row |= {f"{name}_q10": q10, f"{name}_median": q50, f"{name}_q90": q90}
        row["frac_at_floor"] = float((part["rel_det_before"] < DET_FLOOR).mean())
        row["median_sign_changes"] = float(part["sign_changes"].median())
        rows.append(row)
    columns = CELL_COLUMNS + ["n_crossed"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def sweep_table(outcomes, summary) -> pd.DataFrame:
    """The ``lr_sweep`` cells: lr / lr0, the fraction crossed (Wilson interval) and the
    crossing summary."""
    sweep = outcomes[outcomes["series"] == "lr_sweep"].copy()
    sweep["lr_over_lr0"] = sweep["lr"] / sweep["depth"].map(lambda d: SETTINGS[int(d)][0][0])
    sweep["frac_crossed"] = sweep["n_crossed"] / sweep["runs"]
    sweep["crossed_lo"], sweep["crossed_hi"] = wilson_interval(sweep["n_crossed"], sweep["runs"])
    keep = CELL_COLUMNS + ["lr_over_lr0", "runs", "n_unbounded", "n_crossed", "frac_crossed",
                           "crossed_lo", "crossed_hi", "frac_converged", "median_t"]
    extra = [c for c in summary.columns if c not in CELL_COLUMNS and c != "n_crossed"]
    return (sweep[keep].merge(summary[["cell"] + extra], on="cell", how="left")
            .sort_values(["depth", "lr"]).reset_index(drop=True))


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """Tables ``verdicts`` (:func:`dlnmc.stats.hypotheses` per cell), ``outcomes`` (per cell:
    labels from the signs of det W), ``crossings`` (one row per crossed run),
    ``crossing_summary`` (per cell), ``step_size_sweep``, ``growth`` (endpoint norms times
    sqrt(2 loss) of the unbounded runs) and ``bands`` (quantiles over runs per loss bin of
    every quantity, per cell and label)."""
    ends = _with_outcome(final, final)
    outcomes = outcomes_table(ends)
    crossings = crossings_table(final, history)
    summary = crossing_summary(crossings)

    scale = np.sqrt(2 * ends["loss"])
    unbounded = ends[ends["outcome"] == "unbounded"].assign(**{
        f"{q}_x_sqrt2loss": ends[q] * scale for q in QUANTITIES[:4]})
    growth = unbounded.groupby(CELL_COLUMNS, sort=False, dropna=False).agg(
        runs=("run", "size"), median_abs_w11=("|w11|", "median"),
        **{f"median_{q}_x_sqrt2loss": (f"{q}_x_sqrt2loss", "median") for q in QUANTITIES[:4]},
        median_erank=("erank", "median"), max_erank=("erank", "max")).reset_index()

    path = _with_outcome(history, final)
    path = path[path["t"] > 0]
    path["loss_bin"] = np.floor(np.log10(path["loss"]) * BINS_PER_DECADE) / BINS_PER_DECADE
    group = ["cell", "outcome"]
    long = path.melt(id_vars=group + ["loss_bin", "step", "t", "run"],
                     value_vars=list(QUANTITIES), var_name="quantity")
    q = long.groupby(group + ["quantity", "loss_bin"], observed=True)
    bands = q["value"].quantile([0.1, 0.5, 0.9]).unstack().set_axis(
        ["q10", "median", "q90"], axis=1).reset_index()
    bands["runs"] = q["run"].nunique().to_numpy()
    bands["step_median"] = q["step"].median().to_numpy()
    bands["t_median"] = q["t"].median().to_numpy()
    bands["loss"] = 10 ** (bands.pop("loss_bin") + 0.5 / BINS_PER_DECADE)
    bands["inv_sqrt_2loss"] = 1 / np.sqrt(2 * bands["loss"])
    total = path.groupby(group, observed=True)["run"].nunique().rename("total")
    bands = bands.merge(total.reset_index(), on=group)
    bands = bands[bands["runs"] >= np.maximum(MIN_BIN_RUNS, bands.pop("total") / 4)]
    bands = _cell_table(final).merge(bands.astype({"outcome": str}), on="cell")

    problem = razin_cohen_2x2()
    verdicts = []
    for cell in _cell_table(final).itertuples(index=False):
        part = final[final["cell"] == cell.cell]
        depth = int(cell.depth)
        verdicts.append(stats.hypotheses(part, problem, depth=depth).assign(
            cell=cell.cell, engine=cell.engine, depth=depth, setting=cell.setting))
    return {"verdicts": pd.concat(verdicts, ignore_index=True), "outcomes": outcomes,
            "crossings": crossings, "crossing_summary": summary,
            "step_size_sweep": sweep_table(outcomes, summary), "growth": growth, "bands": bands}


# -- figures --------------------------------------------------------------------------------

COLOURS = {"unbounded": "C0", "crossed": "C3", "negative_start": "C7"}


def _panels(bands, quantity, outcomes=LABELS):
    """Seaborn facet grid (rows: depth; columns: the paper's cells of the depth in setting
    order, then the flow cell) of one quantity's bands; the sweep cells are left out."""
    sub = bands[(bands["quantity"] == quantity) & bands["outcome"].isin(outcomes)
                & (bands["series"] != "lr_sweep")].copy()
    def order(settings):
        ranked = sorted(settings.unique(), key=lambda v: (v.startswith("flow"), v))
        return settings.map({v: i for i, v in enumerate(ranked)})

    sub["panel"] = sub.groupby("depth")["setting"].transform(order)
    return sub, sns.FacetGrid(sub, row="depth", col="panel", height=2.8, aspect=1.2,
                              sharex=True, sharey=False, margin_titles=False)


def _title(cell, depth) -> str:
    engine = cell["engine"].iloc[0] if len(cell) else ""
    return ", ".join(sorted(cell["setting"].unique())) + f" ({engine}, N={depth:g})"


def _band_figures(bands, directory) -> list:
    """``w11_vs_loss`` (the paper's figure with bands per label, coloured by time t) and
    ``erank_vs_loss``."""
    paths = []
    t = bands.loc[bands["series"] != "lr_sweep", "t_median"]
    norm = LogNorm(max(t.min(), 1e-2), max(t.max(), 1e-1))
    for quantity, name in (("|w11|", "w11_vs_loss"), ("erank", "erank_vs_loss")):
        sub, grid = _panels(bands, quantity)
        mappable = None
        for (depth, panel), ax in grid.axes_dict.items():
            cell = sub[(sub["depth"] == depth) & (sub["panel"] == panel)]
            for outcome, part in cell.groupby("outcome"):
                band(ax, part, "loss", COLOURS[outcome], label=f"{outcome} (median, 10-90%)")
                mappable = colour_by_step(ax, part, "loss", "median", norm, step="t_median")
            if quantity == "|w11|":
                x = np.geomspace(sub["loss"].min(), sub["loss"].max(), 50)
                ax.plot(x, 1 / np.sqrt(2 * x), "k:", linewidth=1, label="1/sqrt(2 loss)")
                ax.set_yscale("log")
            ax.set_xscale("log")
            ax.set_title(_title(cell, depth), fontsize=9)
        grid.set_axis_labels("loss (1/2 SSE)", FIGURE_LABELS.get(quantity, "effective rank"))
        legend_above(grid, ncol=4)
        grid.figure.subplots_adjust(right=0.86)
        if mappable is not None:
            bar = grid.figure.colorbar(mappable, ax=grid.axes.ravel().tolist(), fraction=0.03,
                                       pad=0.02)
            bar.set_label("time t = lr step (flow: tau / N), median in bin")
        paths.append(save(grid, directory, name))
    return paths


def _norms_figure(bands, directory):
    """``norms_vs_loss``: every norm of the unbounded runs against 1 / sqrt(2 loss)."""
    sub, grid = _panels(bands, "|w11|", outcomes=("unbounded",))
    norms = bands[(bands["outcome"] == "unbounded") & bands["quantity"].isin(QUANTITIES[:4])]
    for (depth, panel), ax in grid.axes_dict.items():
        cells = sub[(sub["depth"] == depth) & (sub["panel"] == panel)]
        cell = norms[norms["cell"].isin(cells["cell"].unique())]
        for k, (quantity, part) in enumerate(cell.groupby("quantity", sort=False)):
            band(ax, part, "inv_sqrt_2loss", f"C{k}", label=FIGURE_LABELS.get(quantity, quantity))
        if len(cell):
            x = np.geomspace(cell["inv_sqrt_2loss"].min(), cell["inv_sqrt_2loss"].max(), 20)
            ax.plot(x, x, "k:", linewidth=1, label="identity")
        ax.set(xscale="log", yscale="log")
        ax.set_title(_title(cells, depth), fontsize=9)
    grid.set_axis_labels("1 / sqrt(2 loss)", "norm of W (unbounded runs)")
    legend_above(grid, ncol=5)
    return save(grid, directory, "norms_vs_loss")


def _outcomes_figure(outcomes, directory):
    """``outcomes``: stacked bars of the labels per cell (paper and flow series), with the
    Wilson interval of the unbounded fraction."""
    out = outcomes[outcomes["series"] != "lr_sweep"].sort_values(["depth", "engine", "setting"])
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(out) + 1.6))
    y = np.arange(len(out))
    left = np.zeros(len(out))
    for label in LABELS:
        frac = (out[f"n_{label}"] / out["runs"]).to_numpy()
        ax.barh(y, frac, left=left, color=COLOURS[label], alpha=0.75, label=label)
        left += frac
    ax.errorbar(out["frac_unbounded"], y,
                xerr=[out["frac_unbounded"] - out["unbounded_lo"],
                      out["unbounded_hi"] - out["frac_unbounded"]],
                fmt="none", ecolor="k", capsize=2, label="unbounded: 95% Wilson interval")
    ax.set(yticks=y, yticklabels=[f"N={d:g} {e}: {s}" for d, e, s in
                                  zip(out["depth"], out["engine"], out["setting"])],
           xlim=(0, 1.0), xlabel="fraction of trajectories (labels from the signs of det W(0), "
                                 "det W(end))")
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.4, -0.12), ncol=2)
    return save(fig, directory, "outcomes")


def _sweep_figure(sweep, crossings, directory):
    """``step_size_sweep``: against lr / lr0, the fraction of runs that crossed and, for the
    crossed runs (dots; line: median), the time t, the loss and |det W| / ||W||_F^2 at the
    bracket's last checkpoint with det > 0."""
    runs = crossings[crossings["series"] == "lr_sweep"].merge(
        sweep[["cell", "lr_over_lr0"]], on="cell")
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    for k, (depth, part) in enumerate(sweep.groupby("depth")):
        colour, label = f"C{k}", f"N={depth:g}"
        axes[0].errorbar(part["lr_over_lr0"], part["frac_crossed"],
                         yerr=[part["frac_crossed"] - part["crossed_lo"],
                               part["crossed_hi"] - part["frac_crossed"]],
                         fmt="o-", color=colour, capsize=3, label=label)
        dots = runs[runs["depth"] == depth]
        for ax, name in zip(axes[1:], ("t_before", "loss_before", "rel_det_before")):
            if len(dots):
                ax.scatter(dots["lr_over_lr0"], dots[name], s=6, alpha=0.3, color=colour,
                           edgecolors="none")
            if f"{name}_median" in part:
                ax.plot(part["lr_over_lr0"], part[f"{name}_median"], "o-", color=colour,
                        label=f"{label} (median)")
    axes[3].axhline(DET_FLOOR, color="k", linestyle=":", linewidth=1,
                    label="16 eps (float64 floor)")
    axes[0].set(ylabel="fraction crossed (95% Wilson)", ylim=(-0.03, 1.03))
    axes[1].set(ylabel="time t = lr step before the crossing")
    axes[2].set(ylabel="loss before the crossing", yscale="log")
    axes[3].set(ylabel="|det W| / ||W||_F^2 before", yscale="log")
    ticks = [1 / f for f in sorted(SWEEP_FACTORS, reverse=True)]
    for ax in axes:
        ax.set(xscale="log", xlabel="lr / lr0")
        ax.set_xticks(ticks, [f"1/{f}" if f > 1 else "1" for f in sorted(SWEEP_FACTORS,
                                                                         reverse=True)])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, directory, "step_size_sweep")


def figures(final, history, tables, directory) -> list:
    """``w11_vs_loss`` and ``erank_vs_loss`` (bands per label, paper and flow cells, coloured
    by time t), ``norms_vs_loss``, ``outcomes`` (labels per cell) and ``step_size_sweep``."""
    use_theme()
    bands = tables["bands"]
    paths = _band_figures(bands, directory)
    paths.append(_norms_figure(bands, directory))
    paths.append(_outcomes_figure(tables["outcomes"], directory))
    paths.append(_sweep_figure(tables["step_size_sweep"], tables["crossings"], directory))
    return paths
