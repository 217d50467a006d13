"""The statistics of the small_init_limit study on planted spreads and laws: the local slopes and
the fitted models recover a known exponent or floor, a wrong model fits poorly and its p-value
says so, also when the cells share their inits; the block estimates calibrate the bootstrap;
the holdout predicts a law that continues and misses one that bends; the collapse test tells one
rescaled shape from two; the linearized GD exponent at N = 2 matches gradient descent itself."""
import math

import numpy as np
import pandas as pd
import pytest

from dlnmc import diagonal_2x2, manifold, simulate, stats
from dlnmc.flow import simulate_flow
from dlnmc.runner import load_study

study = load_study("small_init_limit")

SCALES = 10.0 ** -(np.arange(4, 17) / 2)  # 1e-2 .. 1e-8, the study's fit range
NOISE = 0.03
"""Relative noise of a planted spread, that of the std of 2000 runs."""


def planted(log_spread, seed=0, n_boot=400, common=0.0):
    """Spreads exp(log_spread) with lognormal noise and their bootstrap replicates (the same
    noise law around the observed value).  ``common``: the share of the noise's variance that
    is one draw for all scales (cells that share their inits), the rest independent per
    scale."""
    rng = np.random.default_rng(seed)
    n = len(log_spread)
    a, b = NOISE * math.sqrt(common), NOISE * math.sqrt(1.0 - common)

    def noise(*shape):
        return a * rng.standard_normal((1,) + shape[1:]) + b * rng.standard_normal(shape)

    observed = log_spread + noise(n)
    boot = observed[:, None] + noise(n, n_boot)
    return np.exp(observed), np.exp(boot)


def test_local_slopes_recover_a_planted_power_law():
    alpha = 0.4
    spreads, boot = planted(math.log(0.3) + alpha * np.log(SCALES))
    slopes = study.local_slopes(SCALES, spreads, boot)
    assert len(slopes) == 11  # pairs of grid points a decade apart
    assert np.allclose(slopes["scale_hi"] / slopes["scale_lo"], 10)
    inside = (slopes["ci_low"] <= alpha) & (alpha <= slopes["ci_high"])
    assert inside.mean() >= 0.8
    assert np.all(slopes["ci_high"] - slopes["ci_low"] < 0.1)


@pytest.mark.parametrize("depth", [2, 5, 20])
def test_free_exponent_recovers_the_planted_exponent(depth):
    beta = 2.0 / depth
    params = [math.log(0.5), math.log(1e-2) + 1.5]
    spreads, boot = planted(study.log_spread_model("derived", params, SCALES, depth))
    fit = study.fit_spread(SCALES, spreads, boot, depth, "free_exponent", n_boot=100)
    width = fit["beta_hi"] - fit["beta_lo"]
    assert abs(fit["beta"] - beta) < 2 * width  # the 95% interval misses about 1 time in 20
    assert width < 0.25 * beta
    assert fit["beta_se"] == pytest.approx(width / (2 * 1.96), rel=0.35)
    assert fit["chi2_per_dof"] < 2.5 and fit["p_value"] > 0.01
    derived = study.fit_spread(SCALES, spreads, boot, depth, "derived", n_boot=100)
    assert derived["chi2_per_dof"] < 2.5 and derived["p_value"] > 0.01


def test_power_law_recovers_its_exponent():
    spreads, boot = planted(math.log(0.2) + 0.25 * np.log(SCALES))
    fit = study.fit_spread(SCALES, spreads, boot, 10, "power", n_boot=100)
    assert fit["alpha_lo"] <= 0.25 <= fit["alpha_hi"]
    assert fit["chi2_per_dof"] < 2.5


def test_a_wrong_model_fits_poorly():
    """A logarithmic law (the derived law at N = inf) is no power law: the power law misses the
    points by many times their noise, the free exponent finds beta = 0."""
    spreads, boot = planted(study.log_spread_model("derived", [0.0, math.log(1e-2) + 1.0],
                                                   SCALES, math.inf))
    power = study.fit_spread(SCALES, spreads, boot, math.inf, "power", n_boot=100)
    assert power["chi2_per_dof"] > 10 and power["p_value"] < 0.02
    free = study.fit_spread(SCALES, spreads, boot, math.inf, "free_exponent", test=False)
    assert free["beta_lo"] <= 0.0 <= free["beta_hi"]
    assert free["chi2_per_dof"] < 2.5
    # and a power law is not the derived law of N = 2 with the wrong exponent
    spreads, boot = planted(math.log(0.2) + 0.25 * np.log(SCALES))
    assert study.fit_spread(SCALES, spreads, boot, 2, "derived", n_boot=100)["chi2_per_dof"] > 10


def test_p_value_accounts_for_shared_inits():
    """With 95% of the noise common to all scales (paired cells) chi2 in units of each point's
    noise is far below its degrees of freedom, so the chi2 distribution would pass any model
    (p ~ 1); the bootstrap null distribution passes the true law and rejects a law whose
    exponent is off by 0.005, which the chi2 distribution would pass."""
    depth = 5
    truth = study.log_spread_model("derived", [math.log(0.5), math.log(1e-2) + 1.5], SCALES,
                                   depth)
    p_true, p_wrong = [], []
    for seed in range(6):
        spreads, boot = planted(truth, seed, common=0.95)
        fit = study.fit_spread(SCALES, spreads, boot, depth, "derived", n_boot=100)
        assert fit["chi2"] < 0.5 * fit["dof"]
        p_true.append(fit["p_value"])
        wrong = study.fit_spread(SCALES, spreads, boot, 2.0 / 0.405, "derived", n_boot=100)
        assert wrong["chi2"] < wrong["dof"]  # the chi2 distribution would accept it
        p_wrong.append(wrong["p_value"])
    assert np.median(p_true) > 0.1 and max(p_wrong) < 0.02


def test_floor_and_power_of_the_logarithmic_law():
    """A / log(s*/s) + f recovers a planted floor and finds none where there is none; the free
    power of 1 / log finds gamma = 1 on the logarithmic law."""
    scales = 10.0 ** -(np.arange(4, 25) / 2)  # 1e-2 .. 1e-12, the N = inf fit range
    params = [0.0, math.log(1e-2) + 2.0]
    for floor in (0.0, 0.01):
        log_y = np.log(np.exp(study.log_spread_model("derived", params, scales, math.inf))
                       + floor)
        assert np.allclose(study.log_spread_model("log_floor", params + [floor], scales,
                                                  math.inf), log_y)
        spreads, boot = planted(log_y, seed=1, common=0.5)
        fit = study.fit_spread(scales, spreads, boot, math.inf, "log_floor", n_boot=100)
        assert fit["floor_lo"] <= floor <= fit["floor_hi"]
        assert (fit["floor_lo"] > 0) == (floor > 0)
    spreads, boot = planted(study.log_spread_model("derived", params, scales, math.inf))
    fit = study.fit_spread(scales, spreads, boot, math.inf, "log_power", n_boot=100)
    assert fit["gamma_lo"] <= 1.0 <= fit["gamma_hi"] and fit["gamma_hi"] - fit["gamma_lo"] < 0.3


def test_too_few_scales_give_no_fit():
    fit = study.fit_spread(SCALES[:3], np.ones(3), np.ones((3, 10)), 5, "free_exponent")
    assert fit["dof"] == 0 and math.isnan(fit["beta"]) and math.isnan(fit["p_value"])


def test_collapse_tells_one_shape_from_two():
    rng = np.random.default_rng(1)
    a, b = 1e-3 * rng.standard_normal(1000), 0.4 * rng.standard_normal(1000)
    assert study.collapse(a, b)[1] > 0.05  # one shape at two scales
    c = np.sign(rng.standard_normal(1000)) * (1 + 0.3 * rng.standard_normal(1000))  # bimodal
    ks, p = study.collapse(a, c)
    assert p < 1e-6 and ks > 0.1


def test_paired_boot_resamples_runs_jointly():
    z = np.random.default_rng(2).standard_normal(500)
    t = np.stack([1e-3 * z, 1e-2 * z], axis=1)  # the same runs at two scales
    t[:10, 0] = np.nan  # ten runs off the curve at one scale
    boot = study.paired_boot(t, 200, 0)
    slopes = study.local_slopes([1e-3, 1e-2], [np.nanstd(t[:, 0], ddof=1),
                                                np.std(t[:, 1], ddof=1)], boot)
    assert slopes["ci_high"].iloc[0] - slopes["ci_low"].iloc[0] < 0.02
    assert slopes["slope"].iloc[0] == pytest.approx(1.0, abs=0.01)


def paired_runs(runs, scales, depth, seed=0):
    """Endpoints t of ``runs`` inits at every scale (runs x scales), t_r(s) = X_r g(s) +
    Y_r h(s) with g the derived law and h a steeper one: a run's t scales like the derived law
    only on average over runs, so the exponent fitted to a sample varies with the sample."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(runs), rng.standard_exponential(runs)
    g = np.exp(study.log_spread_model("derived", [math.log(0.5), math.log(1e-2) + 1.5], scales,
                                      depth))
    return np.outer(x, g) + np.outer(y, g * (scales / 1e-2) ** 0.1)


def test_block_exponents_calibrate_the_joint_bootstrap():
    """On independent blocks of paired runs the scatter of the fitted exponents matches their
    joint bootstrap standard errors; standard errors four times too small would show."""
    scales = SCALES[::2]
    t = paired_runs(4000, scales, 5)
    blocks = study.block_exponents(t, scales, 5, n_blocks=16, n_boot=100)
    assert list(blocks["runs"]) == [250] * 16
    assert blocks["beta"].std(ddof=1) > 0
    good = study.calibration(blocks)
    assert good["dof"] == 15 and 0.6 < good["ratio"] < 1.6
    bad = study.calibration(blocks.assign(beta_se=blocks["beta_se"] / 4))
    assert bad["ratio"] == pytest.approx(4 * good["ratio"]) and bad["p_value"] < 1e-3
    # fewer rows than blocks of min_runs: fewer blocks
    assert len(study.block_exponents(t[:45], scales, 5, n_blocks=8, n_boot=10)) == 2


def test_calibration_arithmetic():
    blocks = dict(block=[0, 1, 2], runs=[10, 10, 10], beta=[1.0, 2.0, 3.0], beta_se=[1.0] * 3)
    row = study.calibration(pd.DataFrame(blocks))
    assert row["chi2"] == pytest.approx(2.0) and row["dof"] == 2
    assert row["ratio"] == pytest.approx(1.0) and row["beta_sd"] == pytest.approx(1.0)


def test_holdout_predicts_a_law_that_continues_and_misses_one_that_bends():
    depth = 10
    truth = study.log_spread_model("derived", [0.0, math.log(1e-2) + 1.0], SCALES, depth)
    spreads, boot = planted(truth, seed=3, common=0.5)
    rows = study.holdout(SCALES, spreads, boot, depth, n_boot=100)
    assert len(rows) == 6 and rows["scale"].max() < rows["fit_min"].iloc[0]
    assert np.all(np.abs(np.log(rows["ratio"])) < 0.1)
    assert ((rows["ci_low"] <= 1) & (1 <= rows["ci_high"])).mean() >= 0.5
    # a floor appearing below 1e-5 is missed by the law fitted above
    spreads, boot = planted(np.log(np.exp(truth) + 0.01 * (SCALES < 1e-5)), seed=3, common=0.5)
    rows = study.holdout(SCALES, spreads, boot, depth, n_boot=100)
    assert rows["ci_low"].iloc[0] > 1.1


def test_log_spread_model_forms():
    s = np.array([1e-3, 1e-6])
    L = math.log(0.1) - np.log(s)
    A = 0.7
    assert np.allclose(study.spread_model("derived", [math.log(A), math.log(0.1)], s, 4),
                       A * 0.5 / np.expm1(0.5 * L))
    assert np.allclose(study.spread_model("free_exponent", [math.log(A), math.log(0.1), -0.2],
                                          s, 4), A * 0.2 / -np.expm1(-0.2 * L))
    assert np.allclose(study.spread_model("log_power", [math.log(A), math.log(0.1), 0.5], s,
                                          math.inf), A / np.sqrt(L))
    with pytest.raises(ValueError, match="model must be one of"):
        study.log_spread_model("cubic", [0.0], s, 2)


def test_escape_time_limits_and_flow_floors():
    assert study.escape_time(2, 1e-4) == pytest.approx(math.log(1e4))
    assert study.escape_time(math.inf, 1e-4) == pytest.approx(1e4 - 1)
    assert study.escape_time(5, 1e-5) == pytest.approx((1e-5 ** -0.6 - 1) / 0.6)
    floors = {d: study.flow_floor(d) for d in study.DEPTHS}
    assert floors == pytest.approx({2: 1e-8, 3: 1e-8, 5: 1e-16, 10: 10 ** -14.5, 20: 1e-13,
                                    math.inf: 1e-12})
    for depth in (5, 10, 20, math.inf):
        assert study.escape_time(depth, floors[depth]) <= study.TAU_MAX
        if floors[depth] > min(study.SCALES):
            assert study.escape_time(depth, floors[depth] / 10 ** 0.5) > study.TAU_MAX


def test_grid():
    """Per depth: GD down to its floor, the flow at every scale down to its own, at the
    tolerances scaled with s, and one tolerance cell at the flow's smallest scale."""
    grid = study.cells(quick=False)
    assert len({c.key for c in grid}) == len(grid) and min(c.runs for c in grid) == 2000
    for depth in study.DEPTHS:
        n = study.depth_label(depth)
        flow = [c for c in grid if c.labels["N"] == n and c.engine == "flow"]
        main = sorted(c.params["init_scale"] for c in flow if c.labels["series"] == "main")
        assert main[0] == pytest.approx(study.flow_floor(depth)) and main[-1] == 1.0
        assert len(main) == round(-2 * math.log10(main[0])) + 1  # two per decade
        for c in flow:
            tighter = study.TOL_CHECK if c.labels["series"] == "tolerance" else 1
            assert c.params["rtol"] == pytest.approx(study.RTOL[depth] / tighter)
            assert c.params["atol"] == pytest.approx(study.ATOL * c.params["rtol"]
                                                     * c.params["init_scale"])
        tol = [c for c in flow if c.labels["series"] == "tolerance"]
        assert len(tol) == 1 and tol[0].params["init_scale"] == main[0]
        gd = [c.params["init_scale"] for c in grid if c.labels["N"] == n and c.engine == "gd"
              and c.labels["series"] == "main"]
        if math.isfinite(depth):
            assert min(gd) == pytest.approx(study.GD_FLOOR[depth])
    quick = study.cells(quick=True)
    assert {c.labels["series"] for c in quick} == {"main", "tolerance", "halving"}


def test_gd_exponent_at_depth_2_matches_gradient_descent():
    """mathematics.md section 5.2.1: GD at N = 2 with step lr leaves an asymmetry ~ s^beta at the
    escape, beta = log((1 + lr)/(1 - lr)) / (2 log(1 + lr)) = 1 + lr/2 + O(lr^2); the flow's
    exponent is 1.  Measured run by run on the same inits at s = 1e-3 and 1e-5."""
    assert study.gd_exponent_n2(1e-4) == pytest.approx(1 + 1e-4 / 2 + 1e-8 / 4, abs=1e-11)
    problem = diagonal_2x2()

    def endpoints(result):
        on = (stats.endpoint_status(result.final, problem) == "on_curve").to_numpy()
        return np.where(on, manifold.hyperbola_coordinates(result.final, problem)["t"], np.nan)

    for lr in (0.05, 0.1):
        t = [endpoints(simulate(problem, 2, 40, lr=lr, init_scale=s, max_steps=100_000,
                                tol=1e-12, checkpoints=None, progress=False))
             for s in (1e-3, 1e-5)]
        per_run = np.log(np.abs(t[0] / t[1])) / math.log(100)
        per_run = per_run[np.isfinite(per_run)]
        assert len(per_run) >= 10
        assert np.all(np.abs(per_run - study.gd_exponent_n2(lr)) < 1e-4)
    t = [endpoints(simulate_flow(problem, 2, 40, init_scale=s, t_max=1e3, tol=1e-12,
                                 checkpoints=None, progress=False)) for s in (1e-3, 1e-5)]
    per_run = np.log(np.abs(t[0] / t[1])) / math.log(100)
    assert np.all(np.abs(per_run[np.isfinite(per_run)] - 1.0) < 1e-4)


def test_floor_table_finds_a_floor_in_every_window_only_where_there_is_one():
    scales = 10.0 ** -(np.arange(4, 25) / 2)
    law = study.log_spread_model("derived", [0.0, math.log(1e-2) + 2.0], scales, math.inf)
    for floor in (0.0, 0.01):
        spreads, boot = planted(np.log(np.exp(law) + floor), seed=4, common=0.95)
        table = study.floor_table(scales, spreads, boot, windows=(1e-2, 1e-5), n_boot=60)
        assert list(table["n_scales"]) == [21, 15]
        inside = (table["floor_lo"] <= floor) & (floor <= table["floor_hi"])
        assert inside.all()
        assert (table["floor_lo"] > 0).all() == (floor > 0)


def test_series_runs_drop_failures_at_every_scale():
    """A run stuck at one scale of the fit range is dropped at all scales; a run off the curve
    at one scale is missing there only; failures above FIT_MAX do not count."""
    scales = [1e-1, 1e-3, 1e-5]
    status = {0: ["on_curve"] * 3, 1: ["on_curve", "stuck_at_origin", "on_curve"],
              2: ["on_curve", "on_curve", "off_curve"], 3: ["not_converged", "on_curve",
                                                            "on_curve"]}
    rows = pd.DataFrame([dict(run=r, init_scale=s, status_label=lab, t=r + s)
                         for r, labs in status.items() for s, lab in zip(scales, labs)])
    t, failed = study.series_runs(rows.sample(frac=1, random_state=0), scales)
    assert failed == 1
    expected = np.array([[0.1, 1e-3, 1e-5], [2.1, 2.001, np.nan], [np.nan, 3.001, 3.00001]])
    expected[2, 0] = np.nan
    assert np.allclose(t, expected, equal_nan=True)
