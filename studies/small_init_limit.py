"""The small-init limit on the hyperbola task (issue 12; mathematics.md sections 5.2 and 5.2.1):
how the law of t = log|a| of the endpoints on the curve ab = 1 depends on the init scale s and
the depth N, and whether it tends to a nondegenerate law as s -> 0.

Task and init: the 2x2 task w11 = w22 = 1 (``diagonal_2x2``), balanced init (Arora, Cohen,
Golowich & Hu 2019; mathematics.md section 1.4) at product scales s = 1, 10^-1/2, ..., 1e-16
(two per decade, each depth down to what its engines reach), 2000 runs per cell.  "On the
curve" is :func:`dlnmc.stats.endpoint_status` (converged and |1 - ab| < 0.05) in every table;
stuck, unconverged and failed runs are counted by label in ``spread``, never dropped silently.

Engines.  Near the origin the largest singular value grows like ds/dtau = s^{2(N-1)/N}, so the
escape takes tau_esc(N, s) = (s^{-(1 - 2/N)} - 1) / (1 - 2/N) (log(1/s) at N = 2, 1/s - 1 at
N = inf) on the normalized clock (:func:`escape_time`).  The end-to-end flow
(:func:`dlnmc.flow.simulate_flow`; adaptive steps that grow near the origin, 200-550 steps per
run at every scale) runs every depth at every scale of the grid down to its floor: 1e-8 at
N = 2, 3 (where the spread, ~ s^{2/N}, is already pinned over eight decades) and, deeper, the
smallest scale whose escape fits the float64 clock, tau_esc <= ``TAU_MAX`` = 1e12: 1e-16 at
N = 5, 10^-14.5 at N = 10, 1e-13 at N = 20, 1e-12 at N = inf.  Beyond it the spacing of
float64 numbers at tau_esc (2.2e-16 tau_esc) exceeds the steps the O(1) nonlinear phase after
the escape needs, and runs end as ``diverged`` (step-size underflow): measured at N = inf on
2000 runs, 11 at s = 1e-12, 46 at 10^-12.5, 137 at 1e-13, all slow escapers, so the losses
select the runs and cells below the floor would be biased; 0 of 2000 at N = 20, s = 1e-13.
Gradient descent (the algorithm the flow approximates) runs where its escape is affordable
(``GD_FLOOR``: N = 2 and 3 down to 1e-8, N = 5 to 1e-6, N = 10 to 1e-4, N = 20 to 10^-3.5;
it needs tau_esc / lr_tau steps per run, ~2e8 at N = 20, s = 1e-8).  Both engines start from
the same inits (same seed and run ids give bitwise the same W(0)), so ``step_check`` compares
them run by run wherever both ran.

Flow tolerances (``RTOL``, ``ATOL``).  rtol = 1e-8 (1e-10 at N = 2, where t ~ 0.37 s must be
resolved on entries of size one) and atol = 1e-4 rtol s.  The default absolute tolerance 1e-12
does not scale with the state, which near the origin is of size s, so below s ~ 1e-9 it lets
the integrator step over the escape (measured at N = inf on 200 runs, s = 1e-10: std of t
0.0415 against 0.0385 with atol = 1e-22; at s = 1e-8 a change of t of 2.7e-4 at most, 0.6% of
the std); with atol proportional to s the control is the same relative control at every
scale.  The ``tolerance`` series reruns each flow depth's smallest scale with both tolerances
divided by ``TOL_CHECK`` = 100; ``step_check`` gives the paired std ratio and the largest
change of t of a run.

Step sizes of GD.  GD's bias of the spread is first order in lr_tau and largest at N = 2
(measured on 400 paired runs against the flow, relative bias of std(t) at N = 2, s = 1e-4:
-21%, -11%, -5.5%, -2.8% at lr_tau = 0.1, 0.05, 0.025, 0.0125; N = 5, s = 1e-4: -1.0% at 0.1,
-0.5% at 0.05; N = 20, s = 1e-3: -0.3% at 0.1, -0.16% at 0.05).  Hence ``LR_TAU``: 0.0125 at
N = 2, 3 and 0.05 at N >= 5.  At N = 2 the bias is not constant in s: GD's exponent is
log((1 + lr)/(1 - lr)) / (2 log(1 + lr)) = 1 + lr/2 + O(lr^2), lr = lr_tau / 2
(:func:`gd_exponent_n2`, mathematics.md section 5.2.1).  The halving cells (lr_tau / 2 at
N = 2, s = 1e-6 and N = 20, s = 1e-3) are part of the grid.

Horizons.  GD: ``HORIZON`` x (tau_esc + 10) / lr_tau steps; flow: tau = ``HORIZON`` x
(tau_esc + 10).  The escape time of a run scales like (s c)^{-(1 - 2/N)} with c its init's
component along the escape direction, so the runs slower than k times the median are a fixed
set of inits at every scale, a fraction falling like k^{-1/(1 - 2/N)}: 7 of 2000 at N = inf,
3 at N = 20 at k = 200; they are labelled ``stuck_at_origin`` and counted.

Statistics (:func:`analyse`).  Each series (the main cells of one depth and one engine) is
analysed on its own, on the runs that fail at none of its scales s <= 1e-2 (a run stuck at the
origin, or lost to the flow's clock at the smallest scale, is dropped at every scale:
:func:`series_runs`).  Every scale uses the same inits (run id r starts from W(0) = s Z_r at
every s), so the spreads of a series are strongly positively correlated,
and every bootstrap resamples run ids jointly across the scales (:func:`paired_boot`: a block
bootstrap whose block is one run id's row of endpoints, the bootstrap of this paired design).
Its intervals are narrow because the pairing cancels the init-to-init noise common to all
scales, not because they miss it: ``calibration`` refits the exponent on ``N_BLOCKS`` disjoint
blocks of run ids (independent sets of inits) and compares the scatter of the block estimates
with their bootstrap standard errors (:func:`block_exponents`).  Independent seeds per scale
were not used: the runner gives every cell the run ids 0 .. runs - 1 of one study seed, and
independent inits would forgo the cancellation that the exponents' precision rests on.

Per series: the spread (std and IQR of t, bootstrap intervals), the local slopes
d log std / d log s per decade, models of std(t) against s fitted over s <= 1e-2
(:func:`fit_spread`; :func:`log_spread_model`): a power law C s^alpha, the derived law
A (2/N) / expm1((2/N) log(s*/s)) of mathematics.md section 5.2.1 (A / log(s*/s) at N = inf), the
same with the exponent beta free (the exponent of table ``exponents``, also over s <= 1e-4,
past the crossover), and at N = inf the logarithmic law with a floor, A / log(s*/s) + f, and
with a free power, A / log(s*/s)^gamma, each over the ranges s <= 1e-2 .. 1e-7 (``floor``): a
floor, the limit of a nondegenerate law, would come out the same in every range.
Each fit gives chi2 in units of each point's bootstrap noise and a p-value from chi2's
bootstrap null distribution (the fitted model plus the joint bootstrap deviations, so the
correlation of the paired cells is in it).  ``holdout`` fits the derived law on the upper half
of a series' scales and predicts the lower half.  The collapse of t / std(t) between the two
smallest scales (two-sample KS, :func:`collapse`) and the volume hypothesis at each depth's
smallest scale (:func:`dlnmc.stats.hypotheses`, P1-P3 against the uniform baseline) complete
the tables.

Cost of the full grid (221 cells, 442,000 runs) on the 2-core machine
(``dlnmc run small_init_limit --out data/small_init_limit --threads 2``), from scratch while
other jobs shared it: 11.7 min wall, 8 min CPU, of which the analysis (bootstrap refits of every
model) takes 3 min wall and the 157 flow cells about 4; the rest is GD at its floors.
"""
from __future__ import annotations

import math
import warnings

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
    "balanced init): depths 2, 3, 5, 10, 20 and infinity, init scales 1 .. 1e-16 (two per "
    "decade), 2000 runs per cell; the end-to-end flow at every depth down to 1e-8 (N = 2, 3) "
    "or the smallest scale its float64 clock resolves (1e-16 at N = 5 .. 1e-12 at N = "
    "infinity), gradient descent where its escape from the origin is affordable, on the same "
    "inits.  The spread of t = log|a| on the curve against s: local slopes, fitted laws "
    "(power law, the derived law (2/N) / ((s*/s)^{2/N} - 1), free exponent; at N = infinity "
    "1 / log(s*/s) with a floor or a free power), exponents with bootstrap intervals checked on "
    "disjoint blocks of runs, chi2 p-values, the collapse of t / spread across s, and the "
    "limit law against P1, P2, P3."
)

DEPTHS = (2, 3, 5, 10, 20, math.inf)
SCALES = tuple(10.0 ** (-k / 2) for k in range(33))
"""1, 10^-1/2, ..., 1e-16: two scales per decade."""
LR_TAU = {2: 0.0125, 3: 0.0125, 5: 0.05, 10: 0.05, 20: 0.05}
"""GD step on the normalized clock (lr = lr_tau / N); the module docstring gives the bias."""
GD_FLOOR = {2: 1e-8, 3: 1e-8, 5: 1e-6, 10: 1e-4, 20: 10.0 ** -3.5}
"""Smallest scale run by GD at each depth."""
FLOW_FLOOR = {2: 1e-8, 3: 1e-8}
"""Smallest scale run by the flow at N = 2, 3; deeper, :func:`flow_floor` (``TAU_MAX``)."""
TAU_MAX = 1e12
"""Longest escape (normalized clock) the flow runs: the float64 spacing at tau_esc, 2.2e-16
tau_esc, must stay well below the steps of the nonlinear phase after the escape."""
HALVING = ((2, 1e-6), (20, 1e-3))
"""(depth, scale) of the cells run at lr_tau / 2."""
HORIZON = 200
"""Budget in units of tau_esc + 10 (the escape and about ten units of the nonlinear phase)."""
TOL = 1e-10
RTOL = {2: 1e-10, 3: 1e-8, 5: 1e-8, 10: 1e-8, 20: 1e-8, math.inf: 1e-8}
"""Relative tolerance of the flow: the default 1e-8, and 1e-10 at N = 2, where t ~ 0.37 s on the
curve is resolved on entries of size one (with 1e-8 the std of t at s = 1e-8 is off by 0.16%)."""
ATOL = 1e-4
"""Absolute tolerance of the flow over its relative one and s: atol = ATOL x rtol x s (the
default 1e-12 = 1e-4 x 1e-8 at s = 1)."""
TOL_CHECK = 100
"""The ``tolerance`` series divides both tolerances by this at each flow depth's smallest scale."""
RUNS = 2000
FIT_MAX = 1e-2
"""Models are fitted over s <= FIT_MAX, the small-init regime (above it the escape is not
separated from the nonlinear phase and most runs end off the curve)."""
N_BOOT = 500
"""Bootstrap resamples of the spreads (per cell and per series), slopes and collapse test."""
N_BOOT_FIT = 200
"""Bootstrap refits of each model (its parameter intervals, and chi2's null distribution)."""
ASYMPTOTIC = 1e-4
"""Second fit range of ``exponents``, s <= ASYMPTOTIC: past the crossover of the derived law."""
FLOOR_WINDOWS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
"""Fit ranges s <= w of the ``floor`` table (N = inf)."""
N_BLOCKS = 10
"""Disjoint blocks of run ids (independent sets of inits) of the ``calibration`` table."""
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


def flow_floor(depth) -> float:
    """Smallest scale of ``SCALES`` run by the flow: ``FLOW_FLOOR`` at N = 2, 3, else the
    smallest whose escape time is at most ``TAU_MAX`` (1e-16 at N = 5, 10^-14.5 at N = 10,
    1e-13 at N = 20, 1e-12 at N = inf)."""
    if depth in FLOW_FLOOR:
        return FLOW_FLOOR[depth]
    return min(s for s in SCALES if escape_time(depth, s) <= TAU_MAX)


def gd_exponent_n2(lr) -> float:
    """Exponent of std(t) against s for gradient descent at N = 2 with step ``lr`` (mathematics.md
    section 5.2.1): near the origin GD multiplies the symmetric part W_1 + W_2^T of the factors
    by 1 + lr and the antisymmetric part W_1 - W_2^T by 1 - lr per step, so the asymmetry left
    at the escape scales like s^beta with beta = log((1 + lr) / (1 - lr)) / (2 log(1 + lr))
    = 1 + lr / 2 + O(lr^2) (1 for the flow)."""
    return (math.log1p(lr) - math.log1p(-lr)) / (2.0 * math.log1p(lr))


def _gd(depth, scale, lr_tau, quick):
    horizon = (20 if quick else HORIZON) * (escape_time(depth, scale) + 10.0) / lr_tau
    return "gd", dict(depth=depth, lr=lr_tau / depth, init="balanced", init_scale=scale,
                      tol=TOL, max_steps=int(math.ceil(horizon)), checkpoints=None)


def _flow(depth, scale, quick, tighter=1):
    horizon = (20 if quick else HORIZON) * (escape_time(depth, scale) + 10.0)
    rtol = RTOL[depth] / tighter
    return "flow", dict(depth=depth, init="balanced", init_scale=scale, tol=TOL,
                        t_max=horizon, checkpoints=None, rtol=rtol, atol=ATOL * rtol * scale)


def _cell(depth, scale, series, engine, params, runs):
    lr_tau = params["lr"] * depth if engine == "gd" else math.nan
    suffix = {"main": "", "halving": "_half", "tolerance": "_tol"}[series]
    return Cell(key=f"N{depth_label(depth)}_{engine}_s{scale:.3g}{suffix}", problem="diagonal_2x2",
                engine=engine, params=params, runs=runs,
                labels={"N": depth_label(depth), "engine": engine, "series": series,
                        "lr_tau": lr_tau})


def cells(quick: bool) -> list[Cell]:
    """Full: per depth, GD at the scales of ``SCALES`` down to ``GD_FLOOR`` and the flow down to
    :func:`flow_floor` (the ``main`` series of each engine), the flow at rtol / ``TOL_CHECK``
    at the flow's smallest scale (``tolerance``) and GD at lr_tau / 2 at ``HALVING``; 2000 runs
    each.  Quick: depths 2, 5, inf at scales 1e-2 .. 1e-7 (one per decade), GD at N = 2 down to
    1e-5 and N = 5 down to 1e-4, the flow down to 1e-5 at N = 2 and 1e-7 at N = 5, inf,
    lr_tau / 2 at 1e-4, 40 runs, horizons 20 x the escape."""
    depths = (2, 5, math.inf) if quick else DEPTHS
    scales = tuple(10.0 ** -k for k in range(2, 8)) if quick else SCALES
    gd_floor = {2: 1e-5, 5: 1e-4} if quick else GD_FLOOR
    floor = {2: 1e-5, 5: 1e-7, math.inf: 1e-7} if quick else {d: flow_floor(d) for d in depths}
    halving = ((2, 1e-4), (5, 1e-4)) if quick else HALVING
    runs = 40 if quick else RUNS
    grid = []
    for depth in depths:
        if math.isfinite(depth):
            grid += [_cell(depth, s, "main", *_gd(depth, s, LR_TAU[depth], quick), runs)
                     for s in scales if s >= gd_floor[depth] * (1 - 1e-9)]
        flows = [s for s in scales if s >= floor[depth] * (1 - 1e-9)]
        grid += [_cell(depth, s, "main", *_flow(depth, s, quick), runs) for s in flows]
        grid.append(_cell(depth, flows[-1], "tolerance",
                          *_flow(depth, flows[-1], quick, TOL_CHECK), runs))
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
          "free_exponent": ("log_a", "log_s_star", "beta"),
          "log_floor": ("log_a", "log_s_star", "floor"),
          "log_power": ("log_a", "log_s_star", "gamma")}
"""Models of the spread against s (:func:`log_spread_model`) and their parameters."""
MODELS = ("power", "derived", "free_exponent")
"""The models fitted at every depth."""
MODELS_INF = ("log_floor", "log_power")
"""The models fitted at N = inf besides ``MODELS``: a floor, a free power of 1 / log."""


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
      to A |beta| (a nondegenerate limit);
    - ``log_floor``: A / L + f, params (log A, log s*, f): the logarithmic law of N = inf with a
      floor f, the limit of the spread as s -> 0 (f = 0: the law is degenerate);
    - ``log_power``: A / L^gamma, params (log A, log s*, gamma) (gamma = 1: the derived law).

    ``depth`` only sets beta of ``derived``.  The expm1 law is evaluated in a form that neither
    overflows nor cancels: log(beta / expm1(beta L)) is log(beta) - beta L -
    log(-expm1(-beta L)) for beta > 0 and log(-beta) - log(-expm1(beta L)) for beta < 0.
    """
    if model not in PARAMS:
        raise ValueError(f"model must be one of {tuple(PARAMS)}, got {model!r}")
    log_s = np.log(np.asarray(scales, dtype=float))
    if model == "power":
        return params[0] + params[1] * log_s
    L = params[1] - log_s
    if model == "log_floor":
        return np.log(np.maximum(np.exp(params[0]) / L + params[2], 1e-300))
    if model == "log_power":
        return params[0] - params[2] * np.log(L)
    beta = params[2] if model == "free_exponent" else (0.0 if math.isinf(depth) else 2.0 / depth)
    if abs(beta) * L.max() < 1e-9:
        shape = -np.log(L)
    elif beta > 0:
        shape = np.log(beta) - beta * L - np.log(-np.expm1(-beta * L))
    else:
        shape = np.log(-beta) - np.log(-np.expm1(beta * L))
    return params[0] + shape


def _start(model, s, log_y):
    """Starting point and bounds of the least squares of ``model``."""
    top = math.log(s.max())
    if model == "power":
        return [log_y.mean(), 0.5], [-np.inf, -3.0], [np.inf, 3.0]
    x0 = [np.mean(log_y + np.log(top + 1.0 - np.log(s))), top + 1.0]
    lo, hi = [-np.inf, top + 1e-3], [np.inf, top + 30.0]
    third = {"free_exponent": (0.1, -2.0, 3.0), "log_power": (1.0, -2.0, 5.0),
             "log_floor": (0.0, -np.exp(log_y).min(), np.exp(log_y).max())}
    if model in third:
        x0, lo, hi = x0 + [third[model][0]], lo + [third[model][1]], hi + [third[model][2]]
    return x0, lo, hi


def _least_squares(model, scales, log_y, sigma, depth, x0=None):
    """Weighted least squares of log(spread) for one model, residuals in units of ``sigma``;
    returns (params, chi2).  ``x0`` (default: a start from the data) is clipped to the
    bounds."""
    s = np.asarray(scales, dtype=float)
    start, lo, hi = _start(model, s, log_y)
    if x0 is not None:
        room = 1e-9 * (1.0 + np.abs(x0))
        start = np.clip(x0, np.add(lo, room), np.subtract(hi, room))

    def residual(p):
        return (log_y - log_spread_model(model, p, s, depth)) / sigma

    fit = optimize.least_squares(residual, start, bounds=(lo, hi))
    return fit.x, float(np.sum(fit.fun**2))


def fit_spread(scales, spreads, boot, depth, model, level=LEVEL, n_boot=N_BOOT_FIT,
               test=True) -> dict:
    """Fit one model of the spread against s (:func:`log_spread_model`) by weighted least squares
    in log(spread), each point weighted by the bootstrap variance of its log spread.

    The parameters' intervals come from refits on bootstrap replicates resampled jointly over
    the scales (so they carry the correlation of cells that share their inits, as a study's
    scales do).  ``chi2`` is in units of each point's own sampling noise; its p-value is the
    fraction of refits of the null replicates, the fitted model plus the bootstrap deviations
    (replicate minus the replicates' mean, per column), whose chi2 is at least ``chi2``
    (Davison & Hinkley 1997, section 4.2; the (1 + k) / (1 + n) estimate).  The null replicates
    carry the same correlation as the data, so the p-value is calibrated for paired cells as
    for independent ones, where the chi2 distribution with ``dof`` degrees of freedom is not.
    ``rms_residual`` is the root mean square of log(spread / model).

    Parameters
    ----------
    scales, spreads : array_like (n,)
    boot : array_like (n, B)
        Bootstrap replicates of the spreads, resampled jointly where the cells are paired.
    depth : int or numpy.inf
    model : one of ``PARAMS``
    n_boot : int
        Refits for the intervals and as many for chi2's null distribution.
    test : bool
        Compute the p-value (False: NaN, half the refits).

    Returns
    -------
    dict
        ``model``, ``n_scales``, the estimates, their bootstrap percentile intervals and
        standard deviations as ``<name>``, ``<name>_lo``, ``<name>_hi``, ``<name>_se``;
        ``chi2``, ``dof``, ``chi2_per_dof``, ``p_value`` and ``rms_residual``.  With no more
        points than parameters the estimates are NaN.
    """
    names = PARAMS[model]
    s = np.asarray(scales, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_b = np.log(np.asarray(boot, dtype=float))
        log_y = np.log(np.asarray(spreads, dtype=float))
        sigma = np.std(log_b, axis=1, ddof=1)
    out = dict(model=model, n_scales=len(s), dof=len(s) - len(names))
    if out["dof"] < 1 or not (np.all(np.isfinite(log_b)) and np.all(np.isfinite(log_y))
                              and np.all(sigma > 0)):
        return out | {f"{name}{end}": np.nan for name in names for end in ("", "_lo", "_hi", "_se")} \
            | dict(chi2=np.nan, chi2_per_dof=np.nan, p_value=np.nan, rms_residual=np.nan)
    params, chi2 = _least_squares(model, s, log_y, sigma, depth)
    cols = np.random.default_rng(0).integers(0, log_b.shape[1], n_boot)
    refits = np.array([_least_squares(model, s, log_b[:, c], sigma, depth, params)[0]
                       for c in cols])
    lo, hi = percentile_ci(refits, level)
    se = np.std(refits, axis=0, ddof=1)
    for k, name in enumerate(names):
        out |= {name: params[k], f"{name}_lo": lo[k], f"{name}_hi": hi[k], f"{name}_se": se[k]}
    p_value = np.nan
    if test:
        fitted = log_spread_model(model, params, s, depth)
        dev = log_b - log_b.mean(axis=1, keepdims=True)
        null = np.array([_least_squares(model, s, fitted + dev[:, c], sigma, depth, params)[1]
                         for c in cols])
        p_value = (1.0 + np.sum(null >= chi2)) / (1.0 + n_boot)
    rms = float(np.sqrt(np.mean((log_y - log_spread_model(model, params, s, depth))**2)))
    return out | dict(chi2=chi2, chi2_per_dof=chi2 / out["dof"], p_value=p_value,
                      rms_residual=rms)


def paired_boot(t, n_boot, seed) -> np.ndarray:
    """Bootstrap standard deviations of the columns of ``t`` (runs x cells, NaN where a run is
    not on the curve), the run ids resampled jointly for all cells: shape (cells, n_boot); NaN
    where a resample holds fewer than two runs on the curve."""
    t = np.asarray(t, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(t), (n_boot, len(t)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with < 2 on the curve
        return np.stack([np.nanstd(t[idx, j], ddof=1, axis=1) for j in range(t.shape[1])])


def block_exponents(t, scales, depth, n_blocks=N_BLOCKS, n_boot=N_BOOT_FIT, seed=0,
                    min_runs=20) -> pd.DataFrame:
    """The free exponent beta (:func:`fit_spread`, ``free_exponent``) on disjoint blocks of runs.

    Row k of ``t`` (runs x scales, NaN off the curve) goes to block k mod B, B = ``n_blocks``
    or fewer so that a block has at least ``min_runs`` rows; the blocks are independent sets of
    inits, so the scatter of their estimates measures the sampling error of beta directly, with
    which the joint bootstrap's standard error of each block is compared (:func:`calibration`).

    Returns
    -------
    DataFrame
        ``block``, ``runs``, ``beta``, ``beta_se`` (bootstrap standard deviation).
    """
    t = np.asarray(t, dtype=float)
    n_blocks = min(n_blocks, len(t) // min_runs)
    rows = []
    for k in range(n_blocks):
        tk = t[k::n_blocks]
        boot = paired_boot(tk, N_BOOT, seed + k)
        fit = fit_spread(scales, np.nanstd(tk, axis=0, ddof=1), boot, depth, "free_exponent",
                         n_boot=n_boot, test=False)
        rows.append(dict(block=k, runs=len(tk), beta=fit["beta"], beta_se=fit["beta_se"]))
    return pd.DataFrame(rows)


def calibration(blocks) -> dict:
    """Whether the joint bootstrap's standard errors match the scatter of independent estimates:
    chi2 = sum_k (beta_k - mean beta)^2 / se_k^2 over the blocks of :func:`block_exponents`,
    on K - 1 degrees of freedom.  ``ratio`` = sqrt(chi2 / dof) is the scatter in units of the
    standard errors (1 when they are right, > 1 when the intervals are too narrow); ``p_value``
    the upper tail of chi2."""
    b = blocks.dropna(subset=["beta", "beta_se"]) if len(blocks) else pd.DataFrame(
        columns=["runs", "beta", "beta_se"])
    chi2 = float(np.sum(((b["beta"] - b["beta"].mean()) / b["beta_se"])**2))
    dof = max(len(b) - 1, 0)
    return dict(blocks=len(b), block_runs=int(b["runs"].median()) if len(b) else 0,
                beta_sd=float(np.std(b["beta"], ddof=1)) if dof > 0 else np.nan,
                beta_se=float(np.sqrt(np.mean(b["beta_se"]**2))) if len(b) else np.nan,
                chi2=chi2, dof=dof, ratio=math.sqrt(chi2 / dof) if dof > 0 else np.nan,
                p_value=float(sst.chi2.sf(chi2, dof)) if dof > 0 else np.nan)


def holdout(scales, spreads, boot, depth, level=LEVEL, n_boot=N_BOOT_FIT) -> pd.DataFrame:
    """The derived law fitted on the upper half of the scales (in log s) predicting the lower
    half: measured / predicted spread at each lower scale, its interval from refits on the
    joint bootstrap replicates (each replicate's measured spread over its own refit's
    prediction).  Empty with fewer than three upper scales or a spread that is not positive."""
    s = np.asarray(scales, dtype=float)
    log_s = np.log(s)
    upper = log_s >= 0.5 * (log_s.max() + log_s.min())
    cols = ["scale", "fit_min", "measured", "predicted", "ratio", "ci_low", "ci_high"]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_y = np.log(np.asarray(spreads, dtype=float))
        log_b = np.log(np.asarray(boot, dtype=float))
        sigma = np.std(log_b[upper], axis=1, ddof=1)
    if (upper.sum() < 3 or upper.all() or not np.all(np.isfinite(log_b))
            or not np.all(np.isfinite(log_y)) or not np.all(sigma > 0)):
        return pd.DataFrame(columns=cols)
    params, _ = _least_squares("derived", s[upper], log_y[upper], sigma, depth)
    pred = log_spread_model("derived", params, s[~upper], depth)
    ratios = []
    for c in np.random.default_rng(0).integers(0, log_b.shape[1], n_boot):
        p = _least_squares("derived", s[upper], log_b[upper, c], sigma, depth, params)[0]
        ratios.append(log_b[~upper, c] - log_spread_model("derived", p, s[~upper], depth))
    lo, hi = percentile_ci(np.exp(np.array(ratios)), level)
    return pd.DataFrame(dict(scale=s[~upper], fit_min=s[upper].min(),
                             measured=np.exp(log_y[~upper]), predicted=np.exp(pred),
                             ratio=np.exp(log_y[~upper] - pred), ci_low=lo, ci_high=hi),
                        columns=cols)


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
SERIES = ["N", "depth", "engine"]
"""A series: the ``main`` cells of one depth and one engine."""


def _order(values) -> list[str]:
    return [d for d in map(depth_label, DEPTHS) if d in set(values)]


def _rank(labels):
    rank = {label: k for k, label in enumerate(map(depth_label, DEPTHS))}
    return labels.map(rank)


def analyse(final, history) -> dict[str, pd.DataFrame]:
    """Tables ``spread`` (one row per cell: the label counts of
    :func:`dlnmc.stats.endpoint_status`, the runs on the curve, the branch split, std and IQR
    of t with bootstrap intervals) and, per series (the ``main`` cells of one depth and
    engine, on the runs that fail at none of its scales s <= ``FIT_MAX``, :func:`series_runs`):
    ``series`` (the std of t of each scale on those runs), ``slopes`` (:func:`local_slopes`),
    ``fit`` (:func:`fit_spread` over s <= ``FIT_MAX``: ``MODELS``, and ``MODELS_INF`` at
    N = inf), ``exponents`` (:func:`exponent_row` over s <= ``FIT_MAX`` and s <=
    ``ASYMPTOTIC``), ``floor`` (N = inf: :func:`floor_table`), ``calibration``
    (:func:`calibration` of :func:`block_exponents` over s <= ``FIT_MAX``, and a pooled row
    ``N = all``), ``holdout`` (:func:`holdout`), ``fit_curve`` (the fitted models on a grid of
    s, for the figure) and ``collapse`` (:func:`collapse` between the two smallest scales);
    ``step_check`` (paired runs on the curve in both cells: std ratio of GD at lr_tau / 2
    against lr_tau, of the flow against GD at every common scale s <= ``FIT_MAX``, and of the
    flow at tighter tolerances against the flow, with paired bootstrap intervals and the
    largest change of t of a run), ``coordinates`` (t and t / std(t) of the runs on the
    curve), ``verdicts`` (:func:`dlnmc.stats.hypotheses` at each depth's smallest scale) and
    ``candidate_cdf`` (P1, P2, P3 and the uniform baseline on ``WINDOW``)."""
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
    ends = ends[ends["series"] == "main"]
    out = {name: [] for name in ("series", "slopes", "fit", "fit_curve", "exponents", "floor",
                                 "calibration", "holdout", "collapse")}
    for n, ((label, depth, engine), part) in enumerate(main.groupby(SERIES, sort=False)):
        part = part.sort_values("scale")
        s_all = part["scale"].to_numpy()
        rows = ends[(ends["N"] == label) & (ends["engine"] == engine)]
        t, failed = series_runs(rows, s_all)
        y_all = np.nanstd(t, axis=0, ddof=1)
        boot = paired_boot(t, N_BOOT, n)
        tag = dict(N=label, depth=depth, engine=engine)
        out["series"].append(pd.DataFrame(tag | dict(
            scale=s_all, runs=len(t), n_failed=failed, t_std=y_all,
            ratio_to_cell=y_all / part["t_std"].to_numpy())))
        slopes = local_slopes(s_all, y_all, boot)
        out["slopes"].append(slopes.assign(**tag))
        small = s_all <= FIT_MAX * (1 + 1e-9)
        s, y = s_all[small], y_all[small]
        fits = {}
        for model in MODELS + (MODELS_INF if math.isinf(depth) else ()):
            fits[model] = fit_spread(s, y, boot[small], depth, model)
            out["fit"].append(tag | fits[model])
            if np.isfinite(fits[model]["chi2"]):
                grid = np.geomspace(s.min(), FIT_MAX, 80)
                params = [fits[model][name] for name in PARAMS[model]]
                out["fit_curve"].append(pd.DataFrame(
                    tag | dict(model=model, scale=grid,
                               t_std=spread_model(model, params, grid, depth))))
        for top in (FIT_MAX, ASYMPTOTIC):
            m = s_all <= top * (1 + 1e-9)
            out["exponents"].append(tag | exponent_row(s_all[m], y_all[m], boot[m], depth,
                                                       top, slopes, part["lr_tau"].iloc[0],
                                                       engine, fits if top == FIT_MAX else None))
        if math.isinf(depth):
            out["floor"].append(floor_table(s_all, y_all, boot).assign(**tag))
        if small.sum() > len(PARAMS["free_exponent"]):
            out["calibration"].append(tag | calibration(block_exponents(t[:, small], s, depth,
                                                                        seed=100 * n)))
        out["holdout"].append(holdout(s, y, boot[small], depth).assign(**tag))
        out["collapse"].append(_collapse_row(tag, part, coordinates[
            (coordinates["N"] == label) & (coordinates["engine"] == engine)
            & (coordinates["series"] == "main")]))
    calib = pd.DataFrame(out["calibration"])
    if len(calib) and calib["dof"].sum() > 0:
        pooled = dict(N="all", chi2=calib["chi2"].sum(), dof=int(calib["dof"].sum()),
                      blocks=int(calib["blocks"].sum()))
        pooled |= dict(ratio=math.sqrt(pooled["chi2"] / pooled["dof"]),
                       p_value=float(sst.chi2.sf(pooled["chi2"], pooled["dof"])))
        calib = pd.concat([calib, pd.DataFrame([pooled])], ignore_index=True)
    tables = {
        "spread": spread,
        "series": pd.concat(out["series"], ignore_index=True),
        "slopes": pd.concat(out["slopes"], ignore_index=True)[
            ["N", "depth", "engine", "scale_lo", "scale_hi", "slope", "ci_low", "ci_high"]],
        "fit": pd.DataFrame(out["fit"]),
        "exponents": pd.DataFrame(out["exponents"]),
        "floor": pd.concat(out["floor"], ignore_index=True) if out["floor"] else pd.DataFrame(),
        "calibration": calib,
        "holdout": pd.concat(out["holdout"], ignore_index=True),
        "fit_curve": pd.concat(out["fit_curve"], ignore_index=True) if out["fit_curve"] else
        pd.DataFrame(columns=SERIES + ["model", "scale", "t_std"]),
        "collapse": pd.DataFrame(out["collapse"]),
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


FAILURES = ("stuck_at_origin", "diverged", "not_converged")
"""Labels of :func:`dlnmc.stats.endpoint_status` that are no endpoint: the run did not finish."""


def series_runs(rows, scales) -> tuple[np.ndarray, int]:
    """The endpoints of one series as a matrix: t of every run (rows, by run id) at every scale
    (columns), NaN where the run ends off the curve; the runs that fail (``FAILURES``) at any
    scale s <= ``FIT_MAX`` are dropped at every scale, so that a failure at one scale (stuck
    at the origin, or the float64 clock of the flow at its smallest scale) does not select the
    inits there and not elsewhere.  ``rows``: the series' rows of the final table with columns
    ``run``, ``init_scale``, ``status_label``, ``t``.  Returns (matrix, number dropped)."""
    label = rows.pivot(index="run", columns="init_scale", values="status_label").reindex(
        columns=scales)
    fit = [s for s in scales if s <= FIT_MAX * (1 + 1e-9)]
    failed = label[fit].isin(FAILURES).any(axis=1).to_numpy()
    t = rows.pivot(index="run", columns="init_scale", values="t").reindex(
        index=label.index, columns=scales).to_numpy(dtype=float, copy=True)
    t[(label != "on_curve").to_numpy()] = np.nan
    return t[~failed], int(failed.sum())


def _depth(label) -> float:
    return math.inf if label == "inf" else float(label)


def exponent_row(scales, spreads, boot, depth, top, slopes, lr_tau, engine, fits=None) -> dict:
    """One row of ``exponents``: over s <= ``top``, the free exponent beta (:func:`fit_spread`,
    ``free_exponent``) with its interval and p-value, next to 2/N, and the derived law's
    (beta = 2/N) chi2 and p-value; the local slope of the smallest decade and the fitted
    derived law's slope over the same decade; with GD at N = 2, the linearized GD exponent
    :func:`gd_exponent_n2`.  ``fits``: the two fits if already made over these scales."""
    fits = fits or {m: fit_spread(scales, spreads, boot, depth, m)
                    for m in ("free_exponent", "derived")}
    free, derived = fits["free_exponent"], fits["derived"]
    row = dict(fit_max=top, two_over_n=0.0 if math.isinf(depth) else 2.0 / depth,
               lr_tau=lr_tau, n_scales=free["n_scales"],
               scale_min=float(np.min(scales)) if len(scales) else np.nan,
               beta=free["beta"], beta_lo=free["beta_lo"], beta_hi=free["beta_hi"],
               beta_se=free["beta_se"], free_chi2=free["chi2"], free_dof=free["dof"],
               free_p_value=free["p_value"], derived_chi2=derived["chi2"],
               derived_dof=derived["dof"], derived_p_value=derived["p_value"],
               derived_rms=derived["rms_residual"],
               beta_gd_linear=gd_exponent_n2(lr_tau / 2) if depth == 2 and engine == "gd"
               else np.nan,
               slope_scale_lo=np.nan, slope_scale_hi=np.nan, slope=np.nan, slope_lo=np.nan,
               slope_hi=np.nan, slope_derived=np.nan)
    first = slopes.sort_values("scale_lo").head(1)
    if len(first):
        r = first.iloc[0]
        row |= dict(slope_scale_lo=r["scale_lo"], slope_scale_hi=r["scale_hi"],
                    slope=r["slope"], slope_lo=r["ci_low"], slope_hi=r["ci_high"])
        if np.isfinite(derived["chi2"]):
            ends = spread_model("derived", [derived["log_a"], derived["log_s_star"]],
                                [r["scale_lo"], r["scale_hi"]], depth)
            row["slope_derived"] = math.log(ends[1] / ends[0]) / math.log(10.0)
    return row


def floor_table(scales, spreads, boot, windows=FLOOR_WINDOWS, n_boot=N_BOOT_FIT) -> pd.DataFrame:
    """N = inf: the logarithmic law with a floor, A / log(s*/s) + f, and with a free power,
    A / log(s*/s)^gamma (:func:`fit_spread`), fitted over s <= w for each w of ``windows``.  A
    floor, the nondegenerate limit of the spread, is the same in every window; an f that
    shrinks as the window moves to small s is a correction to the logarithmic law that the
    floor absorbs.

    Returns
    -------
    DataFrame
        One row per window: ``fit_max``, ``n_scales``, ``floor`` with ``floor_lo``,
        ``floor_hi``, its fit's ``floor_chi2``, ``floor_p_value``; ``gamma`` with ``gamma_lo``,
        ``gamma_hi``, ``gamma_p_value``; the logarithmic law's ``log_chi2``, ``log_p_value``.
    """
    s, y, b = (np.asarray(a, dtype=float) for a in (scales, spreads, boot))
    rows = []
    for top in windows:
        m = s <= top * (1 + 1e-9)
        fl, pw, lg = (fit_spread(s[m], y[m], b[m], math.inf, model, n_boot=n_boot)
                      for model in ("log_floor", "log_power", "derived"))
        rows.append(dict(fit_max=top, n_scales=int(m.sum()), scale_min=s[m].min(),
                         floor=fl["floor"], floor_lo=fl["floor_lo"], floor_hi=fl["floor_hi"],
                         floor_chi2=fl["chi2"], floor_p_value=fl["p_value"],
                         gamma=pw["gamma"], gamma_lo=pw["gamma_lo"], gamma_hi=pw["gamma_hi"],
                         gamma_p_value=pw["p_value"], log_chi2=lg["chi2"],
                         log_p_value=lg["p_value"]))
    return pd.DataFrame(rows)


def _collapse_row(tag, part, runs) -> dict:
    """KS of t / std(t) between the two smallest scales of a series: the even run ids at the
    smallest scale against the odd ones at the next, since a run id has the same init
    direction at every scale (W(0) = s Z) and the test needs independent samples."""
    a, b = part["scale"].iloc[0], part["scale"].iloc[1] if len(part) > 1 else np.nan
    ta = runs[(runs["scale"] == a) & (runs["run"] % 2 == 0)]["t"].to_numpy()
    tb = runs[(runs["scale"] == b) & (runs["run"] % 2 == 1)]["t"].to_numpy()
    ks, p = collapse(ta, tb) if min(len(ta), len(tb)) > 1 else (np.nan, np.nan)
    return tag | dict(scale_a=a, scale_b=b, n_a=len(ta), n_b=len(tb), ks=ks, p_value=p,
                      collapses=bool(p >= 1 - LEVEL) if np.isfinite(p) else pd.NA)


def _step_check(spread, coordinates) -> pd.DataFrame:
    """Paired comparisons on the same inits: GD at lr_tau / 2 against GD at lr_tau (``halving``),
    the flow against GD at every scale s <= ``FIT_MAX`` where both ran (``crosscheck``) and the
    flow at tolerances / ``TOL_CHECK`` against the flow (``tolerance``); the std of t over the
    runs on the curve in both cells, their ratio with a paired bootstrap interval, the largest
    change of t of a run relative to the reference std, and the relative half-width of the
    reference cell's interval (the change is below the noise when the ratio's distance from 1
    is smaller)."""
    main = spread[spread["series"] == "main"].set_index(["N", "engine", "scale"])
    pick = coordinates.set_index(["N", "engine", "series", "scale"])[["run", "t"]].sort_index()
    rows = []
    for _, alt in spread.iterrows():
        if alt["series"] == "halving":
            check, ref_engine = "halving", "gd"
        elif alt["series"] == "tolerance":
            check, ref_engine = "tolerance", "flow"
        elif (alt["series"] == "main" and alt["engine"] == "flow"
              and alt["scale"] <= FIT_MAX * (1 + 1e-9)
              and (alt["N"], "gd", alt["scale"]) in main.index):
            check, ref_engine = "crosscheck", "gd"
        else:
            continue
        ref = main.loc[(alt["N"], ref_engine, alt["scale"])]
        a = pick.loc[(alt["N"], ref_engine, "main", alt["scale"])]
        b = pick.loc[(alt["N"], alt["engine"], alt["series"], alt["scale"])]
        both = a.merge(b, on="run", suffixes=("_ref", "_alt"))
        ta, tb = both["t_ref"].to_numpy(), both["t_alt"].to_numpy()
        idx = np.random.default_rng(0).integers(0, len(ta), (N_BOOT, len(ta)))
        boot = np.std(tb[idx], ddof=1, axis=1) / np.std(ta[idx], ddof=1, axis=1)
        lo, hi = percentile_ci(boot, LEVEL)
        std_ref, std_alt = np.std(ta, ddof=1), np.std(tb, ddof=1)
        name = {"gd": f"gd lr_tau {ref['lr_tau']:g}", "flow": "flow"}
        rows.append(dict(N=alt["N"], depth=alt["depth"], scale=alt["scale"], check=check,
                         reference=name[ref_engine],
                         alternative=(f"gd lr_tau {alt['lr_tau']:g}" if alt["engine"] == "gd"
                                      else f"flow rtol / {TOL_CHECK}" if check ==
                                      "tolerance" else "flow"),
                         n_paired=len(ta), std_ref=std_ref, std_alt=std_alt,
                         ratio=std_alt / std_ref, ci_low=float(lo), ci_high=float(hi),
                         max_change=float(np.max(np.abs(tb - ta))) / std_ref,
                         ref_rel_halfwidth=(ref["t_std_hi"] - ref["t_std_lo"])
                         / (2 * ref["t_std"])))
    return pd.DataFrame(rows)


def _verdicts(final, main, problem) -> pd.DataFrame:
    """:func:`dlnmc.stats.hypotheses` on the cell of each depth's smallest scale (main series;
    GD where both engines reach it)."""
    out = []
    for label, part in main.groupby("N", sort=False):
        cell = part.sort_values(["scale", "engine"], ascending=[True, False]).iloc[0]
        rows = final[(final["N"] == label) & (final["series"] == "main")
                     & (final["engine"] == cell["engine"])
                     & (final["init_scale"] == cell["scale"])]
        out.append(stats.hypotheses(rows, problem, depth=_depth(label), n_boot=300)
                   .assign(N=label, engine=cell["engine"], init_scale=cell["scale"]))
    return pd.concat(out, ignore_index=True)


def _ci(row, name, fmt=".3g", lo=None, hi=None) -> str:
    lo, hi = row[lo or f"{name}_lo"], row[hi or f"{name}_hi"]
    return f"{row[name]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _p(p) -> str:
    return f"{p:.2g}" if np.isfinite(p) else "n/a"


def findings(tables) -> list[str]:
    """Sentences for the report, each computed from the table it names."""
    spread, slopes, exps = (tables[k] for k in ("spread", "slopes", "exponents"))
    main = spread[spread["series"] == "main"]
    out = []
    for label in _order(main["N"]):
        part = main[(main["N"] == label) & (main["engine"] == "flow")].sort_values("scale")
        r = part.iloc[0]
        out.append(
            f"N = {label}, flow down to s = {r['scale']:.3g}: {r['runs_on_curve']} of "
            f"{r['runs']} runs on the curve there (off the curve {r['n_off_curve']}, stuck at "
            f"the origin {r['n_stuck_at_origin']}, not converged {r['n_not_converged']}, "
            f"diverged {r['n_diverged']}; stuck at the origin at any scale <= {FIT_MAX:g}: "
            f"{part.loc[part['scale'] <= FIT_MAX * (1 + 1e-9), 'n_stuck_at_origin'].min()}-"
            f"{part.loc[part['scale'] <= FIT_MAX * (1 + 1e-9), 'n_stuck_at_origin'].max()}), "
            f"std of t {_ci(r, 't_std', lo='t_std_lo', hi='t_std_hi')} (`spread`).")
        sl = slopes[(slopes["N"] == label) & (slopes["engine"] == "flow")].sort_values("scale_lo")
        if len(sl):
            first, last = sl.iloc[0], sl.iloc[-1]
            out.append(
                f"N = {label} (flow): local slope d log std / d log s "
                f"{_ci(first, 'slope', lo='ci_low', hi='ci_high')} over s in "
                f"[{first['scale_lo']:.3g}, {first['scale_hi']:.3g}], "
                f"{_ci(last, 'slope', lo='ci_low', hi='ci_high')} over "
                f"[{last['scale_lo']:.3g}, {last['scale_hi']:.3g}] (`slopes`).")
        ex = exps[exps["N"] == label]
        parts = []
        for engine in ("flow", "gd"):
            rows = ex[(ex["engine"] == engine) & np.isfinite(ex["beta"])].sort_values(
                "fit_max", ascending=False)
            if len(rows):
                e = rows.iloc[0]
                parts.append(
                    f"{engine} " + ", ".join(
                        f"{_ci(r, 'beta', '.7g')} over {r['scale_min']:.3g} <= s <= "
                        f"{r['fit_max']:g}" for _, r in rows.iterrows())
                    + f" (derived law with beta = 2/N over s <= {e['fit_max']:g}: rms "
                    f"{e['derived_rms']:.2g}, chi2 {e['derived_chi2']:.3g} on "
                    f"{e['derived_dof']} dof, p {_p(e['derived_p_value'])}"
                    + (f"; linearized GD {e['beta_gd_linear']:.7g}"
                       if np.isfinite(e['beta_gd_linear']) else "") + ")")
        if parts:
            out.append(f"N = {label}: exponent of std(t) against s (free exponent of the "
                       "derived law, 95% joint bootstrap interval): " + "; ".join(parts)
                       + f"; 2/N = {ex['two_over_n'].iloc[0]:.4g} (`exponents`).")
    out.append(_infinite_depth(tables))
    cal = tables["calibration"]
    if len(cal):
        pooled, per = cal[cal["N"] == "all"].iloc[0], cal[cal["N"] != "all"]
        out.append(
            f"Calibration of the joint bootstrap: on {int(per['blocks'].max())} disjoint blocks "
            f"of about {int(per['block_runs'].median())} run ids per series (independent inits), "
            f"the scatter of the block exponents is {pooled['ratio']:.3g} times their bootstrap "
            f"standard errors (pooled over {len(per)} series: chi2 {pooled['chi2']:.3g} on "
            f"{int(pooled['dof'])} dof, p {_p(pooled['p_value'])}; per series "
            f"{per['ratio'].min():.3g}-{per['ratio'].max():.3g}) (`calibration`).")
    hold = tables["holdout"]
    if len(hold):
        low = hold.loc[hold.groupby(["N", "engine"])["scale"].idxmin()]
        low = low[low["engine"] == "flow"].sort_values("N", key=_rank)
        out.append(
            "The derived law fitted on the upper half of each flow series' scales, at the "
            "smallest scale (measured / predicted std): " + "; ".join(
                f"N = {r.N}, s = {r.scale:.3g} (fit down to {r.fit_min:.3g}) {r.ratio:.4g} "
                f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" for r in low.itertuples()) + " (`holdout`).")
    col = tables["collapse"].sort_values("N", key=_rank)
    col = col[col["engine"] == "flow"]
    out.append("Collapse of t / std(t) between the two smallest scales of the flow (two-sample "
               "KS): " + ", ".join(f"N = {r.N} p {r.p_value:.2g}" for r in col.itertuples())
               + f"; not distinguishable at 5% at {int(col['collapses'].fillna(False).sum())} "
                 f"of {len(col)} depths (`collapse`).")
    chk = tables["step_check"]
    if len(chk):
        cross = chk[chk["check"] == "crosscheck"]
        out.append("GD / flow std ratio on the same inits at the common scales s <= "
                   f"{FIT_MAX:g} (min-max): " + "; ".join(
                       f"N = {n} {1 / g['ratio'].max():.4f}-{1 / g['ratio'].min():.4f}"
                       for n, g in sorted(cross.groupby("N"), key=lambda x: _depth(x[0])))
                   + "; GD at lr_tau / 2 over GD: " + "; ".join(
                       f"N = {r.N}, s = {r.scale:.3g} {r.ratio:.4f} [{r.ci_low:.4f}, "
                       f"{r.ci_high:.4f}]" for r in chk[chk["check"] == "halving"].itertuples())
                   + f"; flow at tolerances / {TOL_CHECK} over the flow at the smallest scale: "
                   + "; ".join(f"N = {r.N}, s = {r.scale:.3g} {r.ratio:.6f}, largest change of "
                               f"t {r.max_change:.1g} std"
                               for r in chk[chk["check"] == "tolerance"].sort_values(
                                   "N", key=_rank).itertuples()) + " (`step_check`).")
    ser = tables["series"].groupby(SERIES, sort=False)[["n_failed", "runs"]].first()
    ser = ser[(ser["n_failed"] > 0)].reset_index().sort_values("N", key=_rank)
    if len(ser):
        out.append("Runs that fail (stuck at the origin, diverged, not converged) at some scale "
                   f"s <= {FIT_MAX:g} of a series, dropped from its every scale: " + "; ".join(
                       f"N = {r.N} {r.engine} {r.n_failed}" for r in ser.itertuples())
                   + " (`series`).")
    v = tables["verdicts"]
    vol = v[v["hypothesis"] == "volume"].sort_values("N", key=_rank)
    held = vol[vol["holds"].fillna(False).astype(bool)]
    out.append(f"The volume hypothesis (P1-P3, KS, Bonferroni 5%) at each depth's smallest "
               f"scale holds in {len(held)} of {len(vol)} depths; KS p of the best candidate: "
               + ", ".join(f"N = {r.N} {r.p_value:.2g}" for r in vol.itertuples())
               + " (`verdicts`).")
    return out


def _infinite_depth(tables) -> str:
    """The sentence answering whether the limit at N = inf is degenerate (tables ``floor``,
    ``series``, ``slopes``): the floor of A / log(s*/s) + f and the free power of 1 / log in
    every fit range; a floor is called resolved when its intervals lie above 0 and overlap in
    all ranges (a nondegenerate limit is the same whatever the range), and otherwise the
    narrowest range's estimate is quoted."""
    fl = tables["floor"]
    if not len(fl) or not np.isfinite(fl["floor"]).any():
        return "N = inf: too few scales for the floor model (`floor`)."
    fl = fl[np.isfinite(fl["floor"])].sort_values("fit_max", ascending=False)
    ser = tables["series"]
    last = ser[(ser["N"] == "inf") & (ser["engine"] == "flow")].sort_values("scale").iloc[0]
    sl = tables["slopes"]
    sl = sl[(sl["N"] == "inf") & (sl["engine"] == "flow")].sort_values("scale_lo").iloc[0]
    windows = "; ".join(f"s <= {r.fit_max:g}: f {r.floor:.2g} [{r.floor_lo:.2g}, "
                        f"{r.floor_hi:.2g}], gamma {r.gamma:.3g} [{r.gamma_lo:.3g}, "
                        f"{r.gamma_hi:.3g}]" for r in fl.itertuples())
    stable = bool((fl["floor_lo"] > 0).all() and fl["floor_lo"].max() <= fl["floor_hi"].min())
    narrow = fl.iloc[-1]
    if stable:
        verdict = (f"a floor is resolved alike in every range: the limit is nondegenerate, the "
                   f"spread tending to {narrow['floor']:.2g} [{narrow['floor_lo']:.2g}, "
                   f"{narrow['floor_hi']:.2g}] (s <= {narrow['fit_max']:g})")
    else:
        verdict = (f"no floor is resolved: a floor would be the same in every range, but the "
                   f"fitted one falls as the range moves to small s, to {narrow['floor']:.2g} "
                   f"[{narrow['floor_lo']:.2g}, {narrow['floor_hi']:.2g}] over s <= "
                   f"{narrow['fit_max']:g} ({100 * narrow['floor'] / last['t_std']:.2g}% of the "
                   f"spread at s = {last['scale']:.3g}; the intervals are statistical, within "
                   f"each model), while the power of 1 / log rises towards 1; the spread still "
                   f"falls at the smallest scales (local slope {sl['slope']:.3g} "
                   f"[{sl['ci_low']:.3g}, {sl['ci_high']:.3g}] over [{sl['scale_lo']:.3g}, "
                   f"{sl['scale_hi']:.3g}]): within the scales reached the limit is degenerate "
                   f"(the point mass at the corners), approached like 1 / log(1/s)")
    return (f"N = inf (flow, {fl['n_scales'].iloc[0]} scales down to {last['scale']:.3g}, "
            f"std of t there {last['t_std']:.3g}): A / log(s*/s) + f and A / log(s*/s)^gamma "
            f"fitted over s <= w: {windows}; {verdict} (`floor`, `series`, `slopes`).")


def figures(final, history, tables, directory) -> list:
    """``spread_vs_scale`` (std of t against s, log-log, one colour per depth: the flow filled,
    GD open, the derived and free-exponent fits of the flow drawn over s <= 1e-2),
    ``rescaled_laws`` (CDF of t / std(t) per scale of the flow, one panel per depth) and
    ``limit_law`` (CDF of t at each depth's smallest scale against P1, P2, P3 and the uniform
    baseline)."""
    use_theme()
    spread = tables["spread"]
    order = _order(spread["N"])
    colours = dict(zip(order, sns.color_palette(n_colors=len(order))))
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    for label in order:
        for engine, style in (("flow", dict(fmt="o", ms=4)), ("gd", dict(fmt="s", ms=6,
                                                                       mfc="none"))):
            part = spread[(spread["N"] == label) & (spread["series"] == "main")
                          & (spread["engine"] == engine)].sort_values("scale")
            ax.errorbar(part["scale"], part["t_std"], color=colours[label],
                        yerr=[part["t_std"] - part["t_std_lo"], part["t_std_hi"] - part["t_std"]],
                        label=f"N = {label}" if engine == "flow" else None, **style)
        cur = tables["fit_curve"]
        for model, style in (("derived", "-"), ("free_exponent", ":")):
            c = cur[(cur["N"] == label) & (cur["engine"] == "flow") & (cur["model"] == model)]
            ax.plot(c["scale"], c["t_std"], style, color=colours[label], linewidth=1)
    ax.plot([], [], "k-", label="derived law, beta = 2/N")
    ax.plot([], [], "k:", label="beta free")
    ax.plot([], [], "ko", ms=4, label="flow")
    ax.plot([], [], "ks", mfc="none", label="GD")
    ax.set(xscale="log", yscale="log", xlabel="init scale s",
           ylabel=f"std of t on the curve (|1 - ab| < {stats.ON_CURVE_TOL:g})")
    ax.legend(ncol=2, fontsize=9)
    paths = [save(fig, directory, "spread_vs_scale")]

    coords = tables["coordinates"]
    coords = coords[(coords["series"] == "main") & (coords["engine"] == "flow")
                    & (coords["scale"] <= FIT_MAX * (1 + 1e-9))]
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
        ax.set(xlim=WINDOW, title=f"N = {label}, s = {s:.3g} (flow)", xlabel="t = log|a|")
    for ax in axes.flat[len(order):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(names))
    paths.append(save(fig, directory, "limit_law"))
    return paths
