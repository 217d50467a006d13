"""The small-init limit on the hyperbola task (issue 12; mathematics.md sections 5.2 and 5.2.1):
how the law of t = log|a| of the endpoints on the curve ab = 1 depends on the init scale s and
the depth N, and whether it tends to a nondegenerate law as s -> 0.

Task and init: the 2x2 task w11 = w22 = 1 (``diagonal_2x2``), balanced init (Arora, Cohen,
Golowich & Hu 2019; mathematics.md section 1.4) at product scales s = 1, 10^-1/2, ..., 1e-8
(two per decade), 2000 runs per cell.  "On the curve" is :func:`dlnmc.stats.endpoint_status`
(converged and |1 - ab| < 0.05) in every table; stuck and unconverged runs are counted by label
in ``spread``, never dropped silently.

Engines and their cost (measured on the 2-core machine, 100 runs per cell).  Near the origin
the largest singular value grows like ds/dtau = s^{2(N-1)/N}, so the escape takes
tau_esc(N, s) = (s^{-(1 - 2/N)} - 1) / (1 - 2/N) (log(1/s) at N = 2, 1/s - 1 at N = inf) on the
normalized clock, and GD, which advances tau by ``lr_tau`` per step, needs tau_esc / lr_tau
steps per run (median 1.5e5 steps at N = 5, s = 1e-6; the slowest run of 100 took 11x the
median).  At N = 20 and s = 1e-8 that is ~2e8 steps per run, ~3 hours per cell: infeasible.
Gradient descent therefore runs N = 2 and 3 at every scale, N = 5 down to 1e-6, N = 10 down to
1e-4, N = 20 down to 10^-3.5 (about 10 s per 2000-run cell at the floor); below each floor,
and at N = inf, the end-to-end flow runs instead (:func:`dlnmc.flow.simulate_flow`; its
adaptive steps grow near the origin: 100-430 steps per run at s = 1e-8 at every depth, 0.03 s
per 100 runs).  The flow also runs at two scales per finite depth where GD runs (the two
smallest GD scales at N = 5, 10, 20; 1e-4 and 1e-8 at N = 2, 3), on the same inits (same
seed and run ids give bitwise the same W(0)), as the cross-check of table ``step_check``.

Step sizes.  GD's bias of the spread is first order in lr_tau and largest at N = 2 (measured
on 400 paired runs against the flow, relative bias of std(t): N = 2, s = 1e-4: -21%, -11%,
-5.5%, -2.8% at lr_tau = 0.1, 0.05, 0.025, 0.0125; N = 5, s = 1e-4: -1.0% at 0.1, -0.5% at
0.05; N = 20, s = 1e-3: -0.3% at 0.1, -0.16% at 0.05).  Hence ``LR_TAU``: 0.0125 at N = 2, 3
and 0.05 at N >= 5, where halving it moves the spread by about 1.4% (N = 2) and 0.1%
(N = 20), below the +-3% bootstrap interval of a 2000-run cell.  The halving cells (lr / 2 at
N = 2, s = 1e-6 and N = 20, s = 1e-3) are part of the grid; ``step_check`` gives the ratio of
the spreads on paired runs with a bootstrap interval.

Cost of the full grid (114 cells, 228,000 runs): 5 min wall, 4 min CPU on the 2-core
machine while another job shared it (``dlnmc run small_init_limit --threads 2``), almost all
of it in the GD cells at the GD floors and the N = 20 halving cell.

Horizons.  GD: ``HORIZON`` x (tau_esc + 10) / lr_tau steps; flow: tau = ``HORIZON`` x
(tau_esc + 10).  The escape time of a run scales like (s c)^{-(1 - 2/N)} with c its init's
component along the escape direction, so the fraction of runs slower than k times the median
falls like k^{-1/(1 - 2/N)}: at most a few of 2000 at N = 20 at k = 200; those runs are
labelled ``stuck_at_origin`` (or ``not_converged``) and counted.

Analysis (:func:`analyse`): the spread (std and IQR of t, bootstrap intervals) per cell, the
local slopes d log std / d log s per decade, three models of std(t) against s fitted per depth
over s <= 1e-2 by generalized least squares in log std (:func:`fit_spread`): a power law
C s^alpha, the derived law A (2/N) / ((s*/s)^{2/N} - 1) of mathematics.md section 5.2.1 (A / log(s*/s)
at N = inf) and the same with the exponent beta free (beta < 0 would mean a nondegenerate
limit, beta = 0 is the logarithmic law); the collapse of t / std(t) between the two smallest
scales (two-sample KS, :func:`collapse`); and the volume hypothesis at each depth's smallest
scale (:func:`dlnmc.stats.hypotheses`, P1-P3 against the uniform baseline).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy import optimize
from scipy import stats as sst

from dlnmc import diagonal_2x2, manifold, predictions, stats
from dlnmc.figures import save, use_theme
from dlnmc.stats.fit import percentile_ci
from dlnmc.study import Cell

NAME = "small_init_limit"
DESCRIPTION = (
    "The small-init limit of the endpoint law on the hyperbola ab = 1 (2x2 task w11 = w22 = 1, "
    "balanced init): depths 2, 3, 5, 10, 20 and infinity, init scales 1 .. 1e-8 (two per "
    "decade), 2000 runs per cell; gradient descent where its escape from the origin is "
    "affordable, the end-to-end flow below that and at N = infinity, both at two scales per "
    "finite depth.  The spread of t = log|a| on the curve against s: local slopes, fitted "
    "laws (power law, the derived law (2/N) / ((s*/s)^{2/N} - 1), free exponent), the "
    "collapse of t / spread across s, and the limit law against P1, P2, P3."
)

DEPTHS = (2, 3, 5, 10, 20, math.inf)
SCALES = tuple(10.0 ** (-k / 2) for k in range(17))
"""1, 10^-1/2, ..., 1e-8: two scales per decade."""
LR_TAU = {2: 0.0125, 3: 0.0125, 5: 0.05, 10: 0.05, 20: 0.05}
"""GD step on the normalized clock (lr = lr_tau / N); the module docstring gives the bias."""
GD_FLOOR = {2: 1e-8, 3: 1e-8, 5: 1e-6, 10: 1e-4, 20: 10.0 ** -3.5}
"""Smallest scale run by GD at each depth (the flow runs below it)."""
CROSSCHECK = {2: (1e-4, 1e-8), 3: (1e-4, 1e-8), 5: (10.0 ** -5.5, 1e-6),
              10: (10.0 ** -3.5, 1e-4), 20: (1e-3, 10.0 ** -3.5)}
"""Scales at which the flow runs too, on the same inits as GD."""
HALVING = ((2, 1e-6), (20, 1e-3))
"""(depth, scale) of the cells run at lr_tau / 2."""
HORIZON = 200
"""Budget in units of tau_esc + 10 (the escape and about ten units of the nonlinear phase)."""
TOL = 1e-10
RUNS = 2000
FIT_MAX = 1e-2
"""Models are fitted over s <= FIT_MAX, the small-init regime (above it the escape is not
separated from the nonlinear phase and most runs end off the curve)."""
N_BOOT = 500
"""Bootstrap resamples of the spreads (per cell), slopes and collapse test."""
N_BOOT_FIT = 200
"""Bootstrap refits of each model (their parameter intervals)."""
WINDOW = (-3.0, 3.0)
"""Window of the candidate CDFs drawn in the limit figure."""
LEVEL = 0.95


def depth_label(depth) -> str:
    return "inf" if math.isinf(depth) else str(int(depth))


def escape_time(depth, scale) -> float:
    """tau_esc(N, s) = int_s^1 ds' / s'^{2(N-1)/N}: the normalized time for the largest singular
    value to grow from s to 1 under ds/dtau = s^{2(N-1)/N} (mathematics.md section 2.4 with
    G = -I near the origin); log(1/s) at N = 2, 1/s - 1 at N = inf."""
    p = 1.0 if math.isinf(depth) else 1.0 - 2.0 / depth
    return math.log(1.0 / scale) if p == 0 else (scale ** -p - 1.0) / p


def _gd(depth, scale, lr_tau, quick):
    horizon = (20 if quick else HORIZON) * (escape_time(depth, scale) + 10.0) / lr_tau
    return "gd", dict(depth=depth, lr=lr_tau / depth, init="balanced", init_scale=scale,
                      tol=TOL, max_steps=int(math.ceil(horizon)), checkpoints=None)


def _flow(depth, scale, quick):
    horizon = (20 if quick else HORIZON) * (escape_time(depth, scale) + 10.0)
    return "flow", dict(depth=depth, init="balanced", init_scale=scale, tol=TOL,
                        t_max=horizon, checkpoints=None)


def _cell(depth, scale, series, engine, params, runs):
    lr_tau = params["lr"] * depth if engine == "gd" else math.nan
    suffix = {"main": "", "crosscheck": "_check", "halving": "_half"}[series]
    return Cell(key=f"N{depth_label(depth)}_{engine}_s{scale:.3g}{suffix}", problem="diagonal_2x2",
                engine=engine, params=params, runs=runs,
                labels={"N": depth_label(depth), "engine": engine, "series": series,
                        "lr_tau": lr_tau})


def cells(quick: bool) -> list[Cell]:
    """Full: 6 depths x 17 scales (the ``main`` series: GD above ``GD_FLOOR``, the flow below
    and at N = inf), the flow at the ``CROSSCHECK`` scales and GD at lr_tau / 2 at ``HALVING``;
    2000 runs each.  Quick: depths 2, 5, inf at scales 1e-2 .. 1e-5, GD at N = 2, 5 (the flow
    cross-checks at 1e-3 and 1e-4, lr_tau / 2 at 1e-4), 40 runs, horizons 20 x the escape."""
    depths = (2, 5, math.inf) if quick else DEPTHS
    scales = (1e-2, 1e-3, 1e-4, 1e-5) if quick else SCALES
    floor = {2: 1e-5, 5: 1e-5} if quick else GD_FLOOR
    check = {2: (1e-3, 1e-4), 5: (1e-3, 1e-4)} if quick else CROSSCHECK
    halving = ((2, 1e-4), (5, 1e-4)) if quick else HALVING
    runs = 40 if quick else RUNS
    grid = []
    for depth in depths:
        for scale in scales:
            if math.isfinite(depth) and scale >= floor[depth] * (1 - 1e-9):
                grid.append(_cell(depth, scale, "main", *_gd(depth, scale, LR_TAU[depth], quick),
                                  runs))
            else:
                grid.append(_cell(depth, scale, "main", *_flow(depth, scale, quick), runs))
        for scale in check.get(depth, ()):
            grid.append(_cell(depth, scale, "crosscheck", *_flow(depth, scale, quick), runs))
    for depth, scale in halving:
        grid.append(_cell(depth, scale, "halving", *_gd(depth, scale, LR_TAU[depth] / 2, quick),
                          runs))
    return grid


# -- statistics on planted or simulated spreads ----------------------------------------------

def local_slopes(scales, spreads, boot, level=LEVEL) -> pd.DataFrame:
    """Local slopes d log(spread) / d log(s) over each decade [s, 10 s] of the grid.

    Parameters
    ----------
    scales, spreads : array_like (n,)
        Init scales and the spread at each.
    boot : array_like (n, B)
        Bootstrap replicates of each spread (column b of every row from one resample: jointly
        resampled run ids where the cells share their inits, independent draws otherwise);
        the slope's interval is the percentile interval of the replicates' slopes.

    Returns
    -------
    DataFrame
        ``scale_lo``, ``scale_hi``, ``slope``, ``ci_low``, ``ci_high``: one row per pair of
        scales a decade apart (to 1%).
    """
    s = np.asarray(scales, dtype=float)
    y = np.log(np.asarray(spreads, dtype=float))
    b = np.log(np.asarray(boot, dtype=float))
    rows = []
    for i in range(len(s)):
        for j in range(len(s)):
            ratio = math.log10(s[j] / s[i])
            if abs(ratio - 1) < 0.01:
                d = math.log(s[j] / s[i])
                lo, hi = percentile_ci((b[j] - b[i]) / d, level)
                rows.append((s[i], s[j], (y[j] - y[i]) / d, float(lo), float(hi)))
    return pd.DataFrame(rows, columns=["scale_lo", "scale_hi", "slope", "ci_low", "ci_high"])


PARAMS = {"power": ("log_c", "alpha"), "derived": ("log_a", "log_s_star"),
          "free_exponent": ("log_a", "log_s_star", "beta")}
"""Models of the spread against s (:func:`spread_model`) and their parameters."""
MODELS = tuple(PARAMS)


def spread_model(model, params, scales, depth) -> np.ndarray:
    """The spread predicted by ``model`` at ``scales`` (:func:`log_spread_model`, exponentiated)."""
    return np.exp(log_spread_model(model, params, scales, depth))


def log_spread_model(model, params, scales, depth) -> np.ndarray:
    """The logarithm of the spread predicted by ``model`` at ``scales``.

    - ``power``: C s^alpha, params (log C, alpha);
    - ``derived``: A beta / expm1(beta L), L = log(s*/s) > 0, with beta = 2/N (mathematics.md
      section 5.2.1; A / L at N = inf), params (log A, log s*);
    - ``free_exponent``: the same with beta free, params (log A, log s*, beta): beta > 0 a
      spread that vanishes like s^beta, beta = 0 like 1 / log(1/s), beta < 0 a spread that tends
      to A |beta| (a nondegenerate limit).

    Evaluated in a form that neither overflows nor cancels: log(beta / expm1(beta L)) is
    log(beta) - beta L - log(-expm1(-beta L)) for beta > 0 and log(-beta) - log(-expm1(beta L))
    for beta < 0.
    """
    log_s = np.log(np.asarray(scales, dtype=float))
    if model == "power":
        return params[0] + params[1] * log_s
    if model == "derived":
        beta = 0.0 if math.isinf(depth) else 2.0 / depth
    elif model == "free_exponent":
        beta = params[2]
    else:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    L = params[1] - log_s
    if abs(beta) * L.max() < 1e-9:
        shape = -np.log(L)
    elif beta > 0:
        shape = np.log(beta) - beta * L - np.log(-np.expm1(-beta * L))
    else:
        shape = np.log(-beta) - np.log(-np.expm1(beta * L))
    return params[0] + shape


def _least_squares(model, scales, log_y, sigma, depth):
    """Weighted least squares of log(spread) for one model, residuals in units of ``sigma``;
    returns (params, chi2)."""
    s = np.asarray(scales, dtype=float)
    top = math.log(s.max())
    if model == "power":
        x0, lo, hi = [log_y.mean(), 0.5], [-np.inf, -3.0], [np.inf, 3.0]
    else:
        x0 = [np.mean(log_y + np.log(top + 1.0 - np.log(s))), top + 1.0]
        lo, hi = [-np.inf, top + 1e-3], [np.inf, top + 30.0]
        if model == "free_exponent":
            x0, lo, hi = x0 + [0.1], lo + [-2.0], hi + [3.0]

    def residual(p):
        return (log_y - log_spread_model(model, p, s, depth)) / sigma

    fit = optimize.least_squares(residual, x0, bounds=(lo, hi))
    return fit.x, float(np.sum(fit.fun**2))


def fit_spread(scales, spreads, boot, depth, model, level=LEVEL,
               n_boot=N_BOOT_FIT) -> dict:
    """Fit one model of the spread against s (:func:`spread_model`) by weighted least squares in
    log(spread), each point weighted by the bootstrap variance of its log spread.

    The parameters' intervals come from refits on bootstrap replicates resampled jointly over
    the scales (so they carry the correlation of cells that share their inits, as a study's
    scales do).  ``chi2`` is in units of each point's own sampling noise: chi2 / dof near 1
    means the model passes within the noise of the individual cells, chi2 / dof >> 1 that it
    misses them.  It is not a calibrated test (the errors of paired cells are correlated), so
    no p-value is given; ``rms_residual`` is the root mean square of log(spread / model).

    Parameters
    ----------
    scales, spreads : array_like (n,)
    boot : array_like (n, B)
        Bootstrap replicates of the spreads, resampled jointly where the cells are paired.
    depth : int or numpy.inf
    model : one of :data:`MODELS`

    Returns
    -------
    dict
        ``model``, ``n_scales``, ``params`` (names), the estimates and their bootstrap
        percentile intervals (refits on ``n_boot`` bootstrap replicates of the spreads) as
        ``<name>``, ``<name>_lo``, ``<name>_hi``; ``chi2``, ``dof``, ``chi2_per_dof`` and
        ``rms_residual``.  With no more points than parameters the estimates are NaN.
    """
    names = PARAMS[model]
    s = np.asarray(scales, dtype=float)
    log_b = np.log(np.asarray(boot, dtype=float))
    out = dict(model=model, n_scales=len(s), dof=len(s) - len(names))
    if out["dof"] < 1:
        return out | {name: np.nan for name in names} | dict(chi2=np.nan, chi2_per_dof=np.nan,
                                                              rms_residual=np.nan)
    sigma = np.std(log_b, axis=1, ddof=1)
    log_y = np.log(np.asarray(spreads, dtype=float))
    params, chi2 = _least_squares(model, s, log_y, sigma, depth)
    cols = np.random.default_rng(0).integers(0, log_b.shape[1], n_boot)
    refits = np.array([_least_squares(model, s, log_b[:, c], sigma, depth)[0] for c in cols])
    lo, hi = percentile_ci(refits, level)
    for k, name in enumerate(names):
        out |= {name: params[k], f"{name}_lo": lo[k], f"{name}_hi": hi[k]}
    rms = float(np.sqrt(np.mean((log_y - log_spread_model(model, params, s, depth))**2)))
    return out | dict(chi2=chi2, chi2_per_dof=chi2 / out["dof"], rms_residual=rms)


def paired_boot(t, n_boot, seed) -> np.ndarray:
    """Bootstrap standard deviations of the columns of ``t`` (runs x cells, NaN where a run is
    not on the curve), the run ids resampled jointly for all cells: shape (cells, n_boot)."""
    t = np.asarray(t, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(t), (n_boot, len(t)))
    return np.stack([np.nanstd(t[idx, j], ddof=1, axis=1) for j in range(t.shape[1])])


def collapse(t_a, t_b) -> tuple[float, float]:
    """Two-sample KS test of t / std(t) between two independent samples: (statistic,
    p-value).  A p-value above the level says the rescaled laws are not distinguishable (one
    shape across s)."""
    za = np.asarray(t_a, dtype=float) / np.std(t_a, ddof=1)
    zb = np.asarray(t_b, dtype=float) / np.std(t_b, ddof=1)
    test = sst.ks_2samp(za, zb)
    return float(test.statistic), float(test.pvalue)


# -- the study's tables ------------------------------------------------------------------------

GROUP = ["N", "depth", "engine", "series", "lr_tau", "init_scale"]


def _order(values) -> list[str]:
    return [d for d in map(depth_label, DEPTHS) if d in set(values)]


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """Tables ``spread`` (one row per cell: the label counts of
    :func:`dlnmc.stats.endpoint_status`, the runs on the curve, the branch split, std and IQR
    of t with bootstrap intervals), ``slopes`` (per depth, main series: :func:`local_slopes`),
    ``fit`` (per depth and model: :func:`fit_spread` over s <= ``FIT_MAX``), ``fit_curve``
    (the fitted models on a grid of s, for the figure), ``collapse`` (per depth:
    :func:`collapse` between the two smallest scales of the main series), ``step_check``
    (paired runs on the curve in both cells: std ratio of GD at lr_tau / 2 against lr_tau,
    and of GD against the flow, with paired bootstrap intervals), ``coordinates`` (t and
    t / std(t) of the runs on the curve), ``verdicts`` (:func:`dlnmc.stats.hypotheses` at each
    depth's smallest scale) and ``candidate_cdf`` (P1, P2, P3 and the uniform baseline on
    ``WINDOW``)."""
    problem = diagonal_2x2()
    status = stats.endpoint_status(final, problem)
    coords = manifold.hyperbola_coordinates(final, problem)
    ends = final.assign(t=coords["t"], branch=coords["branch"], status_label=status)
    rows, on_curve = [], []
    for k, (key, part) in enumerate(ends.groupby(GROUP, observed=True, dropna=False, sort=True)):
        on = part[part["status_label"] == "on_curve"]
        t = on["t"].to_numpy()
        row = dict(zip(GROUP, key), runs=len(part), runs_on_curve=len(t),
                   **stats.status_counts(part["status_label"], problem),
                   frac_positive_branch=float(np.mean(on["branch"] > 0)) if len(t) else np.nan)
        row["t_std"] = np.std(t, ddof=1) if len(t) > 1 else np.nan
        q25, q75 = np.quantile(t, [0.25, 0.75]) if len(t) else (np.nan, np.nan)
        row["t_iqr"] = q75 - q25
        if len(t) > 1:
            idx = np.random.default_rng(k).integers(0, len(t), (N_BOOT, len(t)))
            boot = np.stack([np.std(t[idx], ddof=1, axis=1),
                             np.subtract(*np.quantile(t[idx], [0.75, 0.25], axis=1))], axis=1)
            (row["t_std_lo"], row["t_iqr_lo"]), (row["t_std_hi"], row["t_iqr_hi"]) = \
                percentile_ci(boot, LEVEL)
        rows.append(row)
        on_curve.append(on.assign(z=t / row["t_std"])[GROUP + ["run", "t", "z", "branch"]])
    spread = pd.DataFrame(rows).rename(columns={"init_scale": "scale"})
    coordinates = pd.concat(on_curve, ignore_index=True).rename(columns={"init_scale": "scale"})
    main = spread[(spread["series"] == "main") & spread["t_std"].notna()]
    slopes, fits, curves, collapses = [], [], [], []
    for (label, depth), part in main.groupby(["N", "depth"], sort=False):
        part = part.sort_values("scale")
        runs = coordinates[(coordinates["N"] == label) & (coordinates["series"] == "main")]
        table = runs.pivot(index="run", columns="scale", values="t")
        boot = paired_boot(table.reindex(columns=part["scale"]).to_numpy(), N_BOOT,
                           len(slopes))
        slopes.append(local_slopes(part["scale"], part["t_std"], boot).assign(depth=depth))
        small = (part["scale"] <= FIT_MAX * (1 + 1e-9)).to_numpy()
        grid = np.geomspace(part["scale"][small].min(), FIT_MAX, 60)
        for model in MODELS:
            fit = fit_spread(part["scale"][small], part["t_std"][small], boot[small], depth,
                             model)
            fits.append(dict(N=label, depth=depth, **fit))
            if np.isfinite(fit["chi2"]):
                params = [fit[name] for name in PARAMS[model]]
                curves.append(pd.DataFrame(dict(N=label, depth=depth, model=model, scale=grid,
                                                t_std=spread_model(model, params, grid, depth))))
        collapses.append(_collapse_row(label, depth, part, coordinates))
    tables = {
        "spread": spread,
        "slopes": pd.concat(slopes, ignore_index=True)[
            ["depth", "scale_lo", "scale_hi", "slope", "ci_low", "ci_high"]],
        "fit": pd.DataFrame(fits),
        "fit_curve": pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
            columns=["N", "depth", "model", "scale", "t_std"]),
        "collapse": pd.DataFrame(collapses),
        "step_check": _step_check(spread, coordinates),
        "coordinates": coordinates,
    }
    tables["verdicts"] = _verdicts(final, main, problem)
    tables["candidate_cdf"] = pd.concat(
        [pd.DataFrame({"N": label, "candidate": name, "t": np.linspace(*WINDOW, 241),
                       "cdf": cand.cdf(np.linspace(*WINDOW, 241))})
         for label in _order(main["N"])
         for name, cand in predictions.candidates(_depth(label), WINDOW).items()
         if name != "norm_minimizer"], ignore_index=True)
    return tables


def _depth(label) -> float:
    return math.inf if label == "inf" else float(label)


def _collapse_row(label, depth, part, coordinates) -> dict:
    """KS of t / std(t) between the two smallest scales of one depth's main series: the even
    run ids at the smallest scale against the odd ones at the next, since a run id has the
    same init direction at every scale (W(0) = s Z) and the test needs independent samples."""
    a, b = part["scale"].iloc[0], part["scale"].iloc[1]
    main = coordinates[(coordinates["N"] == label) & (coordinates["series"] == "main")]
    ta = main[(main["scale"] == a) & (main["run"] % 2 == 0)]["t"].to_numpy()
    tb = main[(main["scale"] == b) & (main["run"] % 2 == 1)]["t"].to_numpy()
    ks, p = collapse(ta, tb) if min(len(ta), len(tb)) > 1 else (np.nan, np.nan)
    return dict(N=label, depth=depth, scale_a=a, scale_b=b, n_a=len(ta), n_b=len(tb), ks=ks,
                p_value=p, collapses=bool(p >= 1 - LEVEL) if np.isfinite(p) else pd.NA)


def _step_check(spread, coordinates) -> pd.DataFrame:
    """Paired comparisons on the same inits: GD at lr_tau / 2 against GD at lr_tau (``halving``)
    and the flow against GD (``crosscheck``); the std of t over the runs on the curve in both
    cells, their ratio with a paired bootstrap interval, and the relative half-width of the
    reference cell's interval (the change is below the noise when the ratio's distance from 1
    is smaller)."""
    rows = []
    key = ["N", "scale"]
    for series in ("halving", "crosscheck"):
        for _, alt in spread[spread["series"] == series].iterrows():
            ref = spread[(spread["series"] == "main") & (spread["N"] == alt["N"])
                         & (spread["scale"] == alt["scale"])].iloc[0]
            pick = coordinates[key + ["series", "run", "t"]]
            a = pick[(pick["N"] == alt["N"]) & (pick["scale"] == alt["scale"])
                     & (pick["series"] == "main")]
            b = pick[(pick["N"] == alt["N"]) & (pick["scale"] == alt["scale"])
                     & (pick["series"] == series)]
            both = a.merge(b, on="run", suffixes=("_ref", "_alt"))
            ta, tb = both["t_ref"].to_numpy(), both["t_alt"].to_numpy()
            idx = np.random.default_rng(0).integers(0, len(ta), (N_BOOT, len(ta)))
            boot = np.std(tb[idx], ddof=1, axis=1) / np.std(ta[idx], ddof=1, axis=1)
            lo, hi = percentile_ci(boot, LEVEL)
            rows.append(dict(N=alt["N"], depth=alt["depth"], scale=alt["scale"], check=series,
                             reference=f"{ref['engine']} lr_tau {ref['lr_tau']:g}",
                             alternative=(f"{alt['engine']} lr_tau {alt['lr_tau']:g}"
                                          if alt["engine"] == "gd" else "flow"),
                             n_paired=len(ta), std_ref=np.std(ta, ddof=1),
                             std_alt=np.std(tb, ddof=1),
                             ratio=np.std(tb, ddof=1) / np.std(ta, ddof=1), ci_low=float(lo),
                             ci_high=float(hi),
                             ref_rel_halfwidth=(ref["t_std_hi"] - ref["t_std_lo"])
                             / (2 * ref["t_std"])))
    return pd.DataFrame(rows)


def _verdicts(final, main, problem) -> pd.DataFrame:
    """:func:`dlnmc.stats.hypotheses` on the cell of each depth's smallest scale (main series)."""
    out = []
    for label, part in main.groupby("N", sort=False):
        cell = part.loc[part["scale"].idxmin()]
        rows = final[(final["N"] == label) & (final["series"] == "main")
                     & (final["init_scale"] == cell["scale"])]
        out.append(stats.hypotheses(rows, problem, depth=_depth(label), n_boot=300)
                   .assign(N=label, init_scale=cell["scale"]))
    return pd.concat(out, ignore_index=True)


def findings(tables) -> list[str]:
    """Sentences for the report, each computed from the table it names."""
    spread, slopes, fit = tables["spread"], tables["slopes"], tables["fit"]
    main = spread[spread["series"] == "main"]
    out = []
    for label in _order(main["N"]):
        part = main[main["N"] == label].sort_values("scale")
        r = part.iloc[0]
        out.append(
            f"N = {label}, s = {r['scale']:.3g} ({r['engine']}): {r['runs_on_curve']} of "
            f"{r['runs']} runs on the curve (off the curve {r['n_off_curve']}, stuck at the "
            f"origin {r['n_stuck_at_origin']}, not converged {r['n_not_converged']}), std of t "
            f"{r['t_std']:.3g} [{r['t_std_lo']:.3g}, {r['t_std_hi']:.3g}] (`spread`).")
        sl = slopes[slopes["depth"] == r["depth"]].sort_values("scale_lo")
        if len(sl):
            first, last = sl.iloc[0], sl.iloc[-1]
            out.append(
                f"N = {label}: local slope d log std / d log s {first['slope']:.3g} "
                f"[{first['ci_low']:.3g}, {first['ci_high']:.3g}] over s in "
                f"[{first['scale_lo']:.3g}, {first['scale_hi']:.3g}], {last['slope']:.3g} "
                f"[{last['ci_low']:.3g}, {last['ci_high']:.3g}] over "
                f"[{last['scale_lo']:.3g}, {last['scale_hi']:.3g}] (`slopes`).")
        f = fit[fit["N"] == label].set_index("model")
        if np.isfinite(f.loc["free_exponent", "chi2"]):
            beta = f.loc["free_exponent"]
            out.append(
                f"N = {label}, s <= {FIT_MAX:g}: exponent beta of the free law "
                f"{beta['beta']:.3g} [{beta['beta_lo']:.3g}, {beta['beta_hi']:.3g}] "
                f"(derived: {0 if label == 'inf' else 2 / float(label):.3g}); chi2 / dof: "
                + ", ".join(f"{m} {f.loc[m, 'chi2_per_dof']:.3g} (rms of log(std / model) "
                            f"{f.loc[m, 'rms_residual']:.2g})" for m in MODELS)
                + f"; power-law exponent {f.loc['power', 'alpha']:.3g} "
                f"[{f.loc['power', 'alpha_lo']:.3g}, {f.loc['power', 'alpha_hi']:.3g}] (`fit`).")
    rank = {label: k for k, label in enumerate(map(depth_label, DEPTHS))}
    col = tables["collapse"].sort_values("N", key=lambda n: n.map(rank))
    out.append("Collapse of t / std(t) between the two smallest scales (two-sample KS): "
               + ", ".join(f"N = {r.N} p {r.p_value:.2g}" for r in col.itertuples())
               + f"; not distinguishable at 5% at {int(col['collapses'].fillna(False).sum())} "
                 f"of {len(col)} depths (`collapse`).")
    chk = tables["step_check"]
    if len(chk):
        out.append("Paired std ratios on the same inits: " + "; ".join(
            f"N = {r.N}, s = {r.scale:.3g}, {r.alternative} / {r.reference} {r.ratio:.4f} "
            f"[{r.ci_low:.4f}, {r.ci_high:.4f}]" for r in chk.itertuples()) + " (`step_check`).")
    v = tables["verdicts"]
    vol = v[v["hypothesis"] == "volume"].sort_values("N", key=lambda n: n.map(rank))
    held = vol[vol["holds"].fillna(False).astype(bool)]
    out.append(f"The volume hypothesis (P1-P3, KS, Bonferroni 5%) at each depth's smallest "
               f"scale holds in {len(held)} of {len(vol)} depths; KS p of the best candidate: "
               + ", ".join(f"N = {r.N} {r.p_value:.2g}" for r in vol.itertuples())
               + " (`verdicts`).")
    return out


def figures(final, history, tables, directory) -> list:
    """``spread_vs_scale`` (std of t against s, log-log, one line per depth, the derived and
    free-exponent fits drawn over s <= 1e-2, the flow cross-checks as open markers),
    ``rescaled_laws`` (CDF of t / std(t) per scale, one panel per depth) and ``limit_law`` (CDF
    of t at each depth's smallest scale against P1, P2, P3 and the uniform baseline)."""
    use_theme()
    spread = tables["spread"]
    order = _order(spread["N"])
    colours = dict(zip(order, sns.color_palette(n_colors=len(order))))
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    for label in order:
        part = spread[(spread["N"] == label) & (spread["series"] == "main")].sort_values("scale")
        ax.errorbar(part["scale"], part["t_std"], fmt="o", ms=4, color=colours[label],
                    yerr=[part["t_std"] - part["t_std_lo"], part["t_std_hi"] - part["t_std"]],
                    label=f"N = {label}")
        chk = spread[(spread["N"] == label) & (spread["series"] == "crosscheck")]
        ax.plot(chk["scale"], chk["t_std"], "s", mfc="none", ms=8, color=colours[label])
        for model, style in (("derived", "-"), ("free_exponent", ":")):
            cur = tables["fit_curve"]
            cur = cur[(cur["N"] == label) & (cur["model"] == model)]
            ax.plot(cur["scale"], cur["t_std"], style, color=colours[label], linewidth=1)
    ax.plot([], [], "k-", label="derived law, beta = 2/N")
    ax.plot([], [], "k:", label="beta free")
    ax.plot([], [], "ks", mfc="none", label="flow cross-check")
    ax.set(xscale="log", yscale="log", xlabel="init scale s",
           ylabel=f"std of t on the curve (|1 - ab| < {stats.ON_CURVE_TOL:g})")
    ax.legend(ncol=2, fontsize=9)
    paths = [save(fig, directory, "spread_vs_scale")]

    coords = tables["coordinates"]
    coords = coords[(coords["series"] == "main") & (coords["scale"] <= FIT_MAX * (1 + 1e-9))]
    grid = sns.displot(data=coords.assign(log10_s=np.log10(coords["scale"]).round(1)), x="z",
                       hue="log10_s", col="N", col_order=order, col_wrap=3, kind="ecdf",
                       palette="viridis", height=2.8, linewidth=1)
    grid.set(xlim=(-4, 4))
    grid.set_titles("N = {col_name}")
    grid.set_axis_labels("t / std(t)", "CDF")
    paths.append(save(grid, directory, "rescaled_laws"))

    smallest = coords.loc[coords.groupby("N")["scale"].transform("min") == coords["scale"]]
    cdf = tables["candidate_cdf"]
    fig, axes = plt.subplots(2, math.ceil(len(order) / 2), figsize=(12, 6), squeeze=False,
                             layout="constrained", sharey=True)
    for ax, label in zip(axes.flat, order):
        t = np.sort(smallest[smallest["N"] == label]["t"].to_numpy())
        ax.step(t, np.arange(1, len(t) + 1) / len(t), where="post", color="k", label="endpoints")
        for k, (name, part) in enumerate(cdf[cdf["N"] == label].groupby("candidate")):
            ax.plot(part["t"], part["cdf"], color=f"C{k}", label=name)
        s = smallest[smallest["N"] == label]["scale"].min()
        ax.set(xlim=WINDOW, title=f"N = {label}, s = {s:.3g}", xlabel="t = log|a|")
    for ax in axes.flat[len(order):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(names))
    paths.append(save(fig, directory, "limit_law"))
    return paths
