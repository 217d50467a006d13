"""The Razin-Cohen study (studies/razin_cohen_2020.py): the grid, the labels from the signs of
det W, the crossing brackets, and the quick grid's qualitative result."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from dlnmc import razin_cohen_2x2
from dlnmc.init import init_factors
from dlnmc.results import det_sign
from dlnmc.runner import load_study, load_tables, run_study

STUDY = load_study("razin_cohen_2020")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick grid through the runner, and its analysis tables."""
    out = run_study(STUDY, tmp_path_factory.mktemp("rc") / "quick", quick=True, seed=3,
                    threads=2, progress=False)
    final, history = load_tables(out)
    return final, history, STUDY.analyse(final, history)


def test_razin_cohen_grid_mirrors_the_paper():
    cells = STUDY.cells(False)
    paper = [c for c in cells if c.labels["series"] == "paper"]
    settings = {(c.params["depth"], c.params["lr"], c.params["init_scale"], c.params["init"])
                for c in paper}
    assert len(settings) == len(paper) == 12
    assert {(d, lr, s) for d, lr, s, _ in settings} == {
        (d, lr, s) for d, pairs in STUDY.SETTINGS.items() for lr, s in pairs}
    for c in paper:
        assert c.engine == "gd" and c.runs >= 200
        assert c.params["tol"] == 1e-4 and c.params["max_steps"] >= 5 * 10**6
        assert c.params.get("det_sign") == (1 if c.params["init"] == "gaussian" else None)
    sweep = [c for c in cells if c.labels["series"] == "lr_sweep"]
    assert {(c.params["depth"], round(STUDY.SETTINGS[c.params["depth"]][0][0] / c.params["lr"]))
            for c in sweep} == {(d, f) for d in (2, 3) for f in (1, 2, 4, 8)}
    for c in sweep:
        lr0, scale = STUDY.SETTINGS[c.params["depth"]][0]
        assert c.params["init"] == "balanced" and c.params["det_sign"] == 1
        assert c.params["init_scale"] == scale
        # the same horizon t = lr * max_steps at every step size
        assert c.params["lr"] * c.params["max_steps"] == pytest.approx(lr0 * 5 * 10**6)
    flow = [c for c in cells if c.labels["series"] == "flow"]
    assert sorted(c.params["depth"] for c in flow) == [2, 3, 4]
    for c in flow:
        assert c.engine == "flow" == c.labels["engine"]
        assert c.params["init"] == "balanced" and c.params["init_scale"] == 1e-3
        assert c.params["det_sign"] == 1 and c.params["tol"] == 1e-4
        assert c.params["checkpoints"] == "log"


def test_labels_on_a_planted_final_table():
    final = pd.DataFrame({
        "det_init": [1e-9, 1e-9, 1e-9, -1e-9, 0.0, 1e-9, 1e-9, 1e-9],
        "det": [0.3, -0.9, 0.0, 0.5, 0.2, 0.0, -0.0, -0.0],
        # the flow's carried log|det|: zeros that underflowed keep their sign
        "log_abs_det": [np.nan, np.nan, np.nan, np.nan, np.nan, -2500.0, -2500.0, np.nan]})
    labels = STUDY.run_labels(final).astype(str).tolist()
    assert labels == ["unbounded", "crossed", "crossed", "negative_start", "negative_start",
                      "unbounded", "crossed", "crossed"]
    np.testing.assert_array_equal(det_sign(final), [1, -1, 0, 1, 1, 1, -1, 0])


def _planted(dets, steps, t_scale, engine, depth, lr, own_det=None):
    """A history of one run whose det at each step is ``dets`` (W = [[d, 0], [0, 1]]), and its
    final row."""
    n = len(dets)
    history = pd.DataFrame({
        "cell": engine, "setting": engine, "engine": engine, "series": engine, "run": 0,
        "step": steps, "loss": np.geomspace(1, 1e-3, n), "w_0_0": dets, "w_0_1": 0.0,
        "w_1_0": 0.0, "w_1_1": 1.0})
    if engine == "flow":
        history["time_tau"] = np.asarray(steps) * t_scale * depth
        if own_det is not None:
            history["det"] = own_det
    final = history.iloc[[-1]].drop(columns="step").assign(
        steps=steps[-1], det_init=dets[0], det=history.get("det", history["w_0_0"]).iloc[-1],
        depth=float(depth), lr=lr, init="balanced", init_scale=1e-5, status="converged")
    if engine == "flow":
        final["time_tau"] = history["time_tau"].iloc[-1]
    return final, history


def test_crossing_bracket_on_a_planted_history():
    # GD: det +, +, 0, -, +, -, -: first sign change between steps 20 and 40 (step 30 has
    # det = 0 and belongs to neither end), three sign changes, last positive at step 50.
    dets = [1e-3, 2e-16, 0.0, -3e-16, 1e-16, -1e-2, -0.5]
    steps = [0, 20, 30, 40, 50, 60, 70]
    gd_final, gd_history = _planted(dets, steps, None, "gd", 2, 0.01)
    # flow: the entries say det = 0 from tau 2 on, the flow's own det says it stays positive
    # until t = 3 (tau 6 at N = 2), then negative.
    own = [1e-3, 1e-20, 1e-30, -1e-30, -1e-10]
    flow_final, flow_history = _planted([1e-3, 0.0, 0.0, 0.0, 0.0], [0, 1, 2, 3, 4], 1.0,
                                        "flow", 2, np.nan, own_det=own)
    final = pd.concat([gd_final, flow_final], ignore_index=True)
    history = pd.concat([gd_history, flow_history], ignore_index=True)
    table = STUDY.crossings_table(final, history).set_index("cell")
    gd = table.loc["gd"]
    assert (gd["step_before"], gd["step_after"]) == (20, 40)
    assert (gd["t_before"], gd["t_after"]) == pytest.approx((0.2, 0.4))
    assert gd["abs_det_before"] == pytest.approx(2e-16)
    assert gd["rel_det_before"] == pytest.approx(2e-16 / (1 + 2e-16**2))
    assert gd["abs_det_after"] == pytest.approx(3e-16)
    assert gd["abs_w11_before"] == pytest.approx(2e-16)
    assert gd["loss_before"] == pytest.approx(gd_history["loss"].iloc[1])
    assert gd["sign_changes"] == 3 and gd["t_last_positive"] == pytest.approx(0.5)
    flow = table.loc["flow"]
    assert (flow["step_before"], flow["step_after"]) == (2, 3)
    assert (flow["t_before"], flow["t_after"]) == pytest.approx((2.0, 3.0))
    assert flow["abs_det_before"] == pytest.approx(1e-30)
    summary = STUDY.crossing_summary(STUDY.crossings_table(final, history))
    assert summary.set_index("cell").loc["gd", "frac_at_floor"] == 1.0


def test_frac_unbounded_is_the_fraction_ending_with_positive_det(quick):
    final, _, tables = quick
    det = final["det"]
    positive = det.gt(0)
    if "log_abs_det" in final:  # the flow's det may underflow to +-0
        positive |= det.eq(0) & np.isfinite(final["log_abs_det"]) & ~np.signbit(det)
    expected = positive.groupby(final["cell"].astype(str)).mean()
    outcomes = tables["outcomes"].set_index("cell")
    assert set(outcomes.index) == set(expected.index) == {c.key for c in STUDY.cells(True)}
    np.testing.assert_allclose(outcomes.loc[expected.index, "frac_unbounded"], expected)
    counts = outcomes[["n_unbounded", "n_crossed", "n_negative_start"]].sum(axis=1)
    np.testing.assert_array_equal(counts, outcomes["runs"])
    crossed = (final["det_init"] > 0) & ~positive
    np.testing.assert_array_equal(
        outcomes.loc[expected.index, "n_crossed"],
        crossed.groupby(final["cell"].astype(str)).sum().loc[expected.index])
    assert (outcomes["unbounded_lo"] <= outcomes["frac_unbounded"]).all()
    assert (outcomes["frac_unbounded"] <= outcomes["unbounded_hi"]).all()
    # one crossing row per crossed run
    assert len(tables["crossings"]) == int(outcomes["n_crossed"].sum())


def test_razin_cohen_quick_shows_diverging_w11(quick):
    """The flow keeps det W > 0 at every depth; the unbounded runs' |w11| tracks
    1/sqrt(2 loss) with erank -> 1; depth-2 GD leaves the regime in every run that started in
    it; depth-3 balanced GD stays in it."""
    final, _, tables = quick
    out = tables["outcomes"].set_index("cell")
    flow = out[out["engine"] == "flow"]
    assert len(flow) == 3 and (flow["frac_unbounded"] == 1).all()
    unbounded = final[STUDY.run_labels(final).to_numpy() == "unbounded"]
    assert len(unbounded) >= 50
    np.testing.assert_allclose(unbounded["w_0_0"].abs() * np.sqrt(2 * unbounded["loss"]), 1.0,
                               atol=0.01)
    assert (unbounded["w_0_0"].abs() > 20).all() and (unbounded["erank"] < 1.01).all()
    gd2 = out[(out["engine"] == "gd") & (out["depth"] == 2)]
    assert (gd2["n_unbounded"] == 0).all() and (gd2["n_crossed"] > 0).all()
    deep = out[(out["engine"] == "gd") & (out["init"] == "balanced") & (out["depth"] == 3)]
    assert (deep["n_crossed"] == 0).all() and (deep["n_unbounded"] > 0).all()


def test_quick_sweep_crossing_moves_with_the_step_size(quick):
    """Depth 2: every run crosses, later (in t) and at a smaller loss as lr shrinks; the
    Gaussian runs cross far above the float64 floor of det, the balanced ones at it."""
    _, _, tables = quick
    sweep = tables["step_size_sweep"]
    depth2 = sweep[sweep["depth"] == 2].sort_values("lr")
    assert len(depth2) == 4 and (depth2["frac_crossed"] == 1).all()
    assert np.all(np.diff(depth2["t_before_median"]) < 0)
    assert np.all(np.diff(depth2["loss_before_median"]) > 0)
    assert (sweep.loc[sweep["depth"] == 3, "n_crossed"] == 0).all()
    summary = tables["crossing_summary"]
    assert (summary.loc[summary["init"] == "gaussian", "frac_at_floor"] == 0).all()
    assert (summary.loc[summary["series"] == "lr_sweep", "frac_at_floor"] >= 0.75).all()


def test_gd_crossing_is_not_float64_rounding():
    """Plain NumPy GD on the factors of a depth-2 balanced run (det W(0) > 0, the paper's lr
    6e-3 and init 1e-5): a factor's det changes sign at the same step in float64 and in 80-bit
    extended precision, so the crossing is GD's arithmetic, not float64 rounding."""
    if np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps:
        pytest.skip("long double is no wider than float64 here")
    problem = razin_cohen_2x2()
    mask = np.zeros((2, 2))
    target = np.zeros((2, 2))
    for (i, j), v in problem.entries.items():
        mask[i, j], target[i, j] = 1.0, v
    W1, W2 = (F[0] for F in init_factors((2, 2), 2, 1, "balanced", 1e-5, seed=0, det_sign=1))

    def first_crossing(dtype):
        a, b = W1.astype(dtype), W2.astype(dtype)
        lr, m, y = dtype(6e-3), mask.astype(dtype), target.astype(dtype)
        for step in range(1, 10_000):
            G = m * (b @ a - y)
            a, b = a - lr * (b.T @ G), b - lr * (G @ a.T)
            if np.linalg.det(a.astype(np.float64)) * np.linalg.det(b.astype(np.float64)) < 0:
                return step
        return None

    crossing = first_crossing(np.float64)
    assert crossing is not None and crossing == first_crossing(np.longdouble)


def test_wilson_interval_matches_scipy():
    for k, n in [(0, 16), (7, 16), (16, 16), (120, 256)]:
        ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        np.testing.assert_allclose(STUDY.wilson_interval(k, n, z=scipy.stats.norm.ppf(0.975)),
                                   (ci.low, ci.high), atol=1e-12)
