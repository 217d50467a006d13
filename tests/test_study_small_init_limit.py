"""The statistics of the small_init_limit study on planted spreads and laws: the local slopes and
the fitted models recover a known exponent, a wrong model fits poorly, and the collapse test
tells one rescaled shape from two."""
import math

import numpy as np
import pytest

from dlnmc.runner import load_study

study = load_study("small_init_limit")

SCALES = 10.0 ** -(np.arange(4, 17) / 2)  # 1e-2 .. 1e-8, the study's fit range
NOISE = 0.03
"""Relative noise of a planted spread, that of the std of 2000 runs."""


def planted(log_spread, seed=0, n_boot=400):
    """Spreads exp(log_spread) with independent lognormal noise per scale, and their
    bootstrap replicates (the same noise law around the observed value)."""
    rng = np.random.default_rng(seed)
    observed = log_spread + NOISE * rng.standard_normal(len(log_spread))
    boot = observed[:, None] + NOISE * rng.standard_normal((len(log_spread), n_boot))
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
    fit = study.fit_spread(SCALES, spreads, boot, depth, "free_exponent")
    width = fit["beta_hi"] - fit["beta_lo"]
    assert abs(fit["beta"] - beta) < 2 * width  # the 95% interval misses about 1 time in 20
    assert width < 0.25 * beta
    assert fit["chi2_per_dof"] < 2.5
    derived = study.fit_spread(SCALES, spreads, boot, depth, "derived")
    assert derived["chi2_per_dof"] < 2.5


def test_power_law_recovers_its_exponent():
    spreads, boot = planted(math.log(0.2) + 0.25 * np.log(SCALES))
    fit = study.fit_spread(SCALES, spreads, boot, 10, "power")
    assert fit["alpha_lo"] <= 0.25 <= fit["alpha_hi"]
    assert fit["chi2_per_dof"] < 2.5


def test_a_wrong_model_fits_poorly():
    """A logarithmic law (the derived law at N = inf) is no power law: the power law misses the
    points by many times their noise, the free exponent finds beta = 0."""
    spreads, boot = planted(study.log_spread_model("derived", [0.0, math.log(1e-2) + 1.0],
                                                   SCALES, math.inf))
    power = study.fit_spread(SCALES, spreads, boot, math.inf, "power")
    assert power["chi2_per_dof"] > 10
    free = study.fit_spread(SCALES, spreads, boot, math.inf, "free_exponent")
    assert free["beta_lo"] <= 0.0 <= free["beta_hi"]
    assert free["chi2_per_dof"] < 2.5
    # and a power law is not the derived law of N = 2 with the wrong exponent
    spreads, boot = planted(math.log(0.2) + 0.25 * np.log(SCALES))
    assert study.fit_spread(SCALES, spreads, boot, 2, "derived")["chi2_per_dof"] > 10


def test_too_few_scales_give_no_fit():
    fit = study.fit_spread(SCALES[:3], np.ones(3), np.ones((3, 10)), 5, "free_exponent")
    assert fit["dof"] == 0 and math.isnan(fit["beta"])


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


def test_escape_time_limits():
    assert study.escape_time(2, 1e-4) == pytest.approx(math.log(1e4))
    assert study.escape_time(math.inf, 1e-4) == pytest.approx(1e4 - 1)
    assert study.escape_time(5, 1e-5) == pytest.approx((1e-5 ** -0.6 - 1) / 0.6)
