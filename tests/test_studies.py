"""The studies of issue 5: grids valid for the engines, quick runs end to end through the
runner (tables, figures, report), and the qualitative Razin-Cohen result at quick size."""
import math

import matplotlib.image
import numpy as np
import pytest
import scipy.stats

from dlnmc.report import write_report
from dlnmc.runner import list_studies, load_study, load_tables, run_study, study_cells

STUDIES = ("razin_cohen_2020", "cmv_hyperbola", "diagonal_3x3", "nuclear_norm",
           "noise_and_discretization")
QUICK_RUNS = {"razin_cohen_2020": None, "cmv_hyperbola": 40, "diagonal_3x3": 40,
              "nuclear_norm": 2, "noise_and_discretization": 24}
"""Runs per cell of the end-to-end test (None: the quick grid's own counts)."""
EXPECTED = {
    "razin_cohen_2020": {
        "outcomes": {"depth", "init", "setting", "runs", "frac_det_pos", "frac_unbounded",
                     "unbounded_lo", "unbounded_hi"},
        "growth": {"median_abs_w11", "median_|w11|_x_sqrt2loss", "median_erank"},
        "bands": {"quantity", "outcome", "loss", "q10", "median", "q90", "step_median"}},
    "cmv_hyperbola": {
        "endpoints": {"N", "init_scale", "erank_median", "frac_erank_below_1_06"},
        "t_spread": {"N", "init_scale", "t_std", "frac_on_curve", "distance_median"},
        "t_density": {"N", "candidate", "t", "density"}},
    "diagonal_3x3": {"endpoints": {"variant", "depth", "erank_median"},
                     "ranks": {"variant", "depth", "rank", "fraction"}},
    "nuclear_norm": {"errors": {"size", "rank", "n_observed", "depth", "init_scale",
                                "rel_error_median"}},
    "noise_and_discretization": {
        "outcomes": {"task", "sweep", "engine", "lr_over_edge", "temperature", "t_std",
                     "frac_det_above_minus_half"}},
}
FULL_RUNS = {"razin_cohen_2020": 200, "cmv_hyperbola": 1000, "diagonal_3x3": 500}
"""Least trajectories per cell at full size (issue 5)."""


def test_every_study_is_listed():
    assert set(STUDIES) <= set(list_studies())


@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize("quick", [True, False])
def test_grid_is_valid(name, quick):
    # study_cells checks the catalogue problems, the engines' signatures and the labels.
    cells = study_cells(load_study(name), quick=quick)
    assert len({c.key for c in cells}) == len(cells)
    if not quick and name in FULL_RUNS:
        assert min(c.runs for c in cells) >= FULL_RUNS[name]


def test_razin_cohen_grid_mirrors_the_paper():
    study = load_study("razin_cohen_2020")
    cells = study.cells(False)
    settings = {(c.params["depth"], c.params["lr"], c.params["init_scale"], c.params["init"])
                for c in cells}
    assert len(settings) == len(cells) == 12
    for c in cells:
        assert c.params["tol"] == 1e-4 and c.params["max_steps"] >= 5 * 10**6
        assert c.params.get("det_sign") == (1 if c.params["init"] == "gaussian" else None)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Each study's quick grid run through the runner (fewer runs where the check allows)."""
    root = tmp_path_factory.mktemp("studies")
    return {name: run_study(load_study(name), root / name, quick=True, runs=QUICK_RUNS[name],
                            seed=3, threads=2, progress=False) for name in STUDIES}


def _is_drawn_png(path):
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG") or len(data) < 5000:
        return False
    pixels = matplotlib.image.imread(path)
    return pixels.shape[0] > 200 and pixels.shape[1] > 200 and float(np.std(pixels)) > 0.01


@pytest.mark.parametrize("name", STUDIES)
def test_quick_study_end_to_end(name, quick_runs):
    study, out = load_study(name), quick_runs[name]
    final, history = load_tables(out)
    tables = study.analyse(final, history)
    for table, columns in EXPECTED[name].items():
        assert table in tables, f"{name}: analyse lacks table {table}"
        assert len(tables[table]) > 0
        assert columns <= set(tables[table].columns), columns - set(tables[table].columns)
    paths = study.figures(final, history, tables, out / "figures")
    assert paths and all(_is_drawn_png(p) for p in paths)
    report = write_report(study, out, tables, paths, cells=study.cells(True)).read_text()
    assert report.startswith(f"# {study.NAME}")
    for table in tables:
        assert f"## Table: {table}" in report or table == "verdicts"
    for path in paths:
        assert f"](figures/{path.name})" in report
    for cell in study.cells(True):
        assert f"| {cell.key} |" in report


def test_razin_cohen_quick_shows_diverging_w11(quick_runs):
    """Depth 3 (quick grid): the runs that never approach the solutions (det W > -1/2 at the
    end; every solution has det = -1) are most of those with det W(0) > 0 for Gaussian init
    (redrawn to det > 0), their |w11| exceeds 10 and tracks 1/sqrt(2 loss), and erank -> 1."""
    final, _ = load_tables(quick_runs["razin_cohen_2020"])
    deep = final[final["depth"] == 3]
    gaussian = deep[deep["init"] == "gaussian"]
    assert (gaussian["det_init"] > 0).all()
    unbounded = deep[deep["det"] > -0.5]
    assert (gaussian["det"] > -0.5).mean() >= 0.5
    assert len(unbounded) >= 8
    w11 = unbounded["w_0_0"].abs()
    assert (w11 > 10).all()
    # |w11| ~ 1/|w22| and the loss is dominated by w22^2 / 2 on the det ~ 0 sheet.
    np.testing.assert_allclose(w11 * np.sqrt(2 * unbounded["loss"]), 1.0, atol=0.05)
    assert (unbounded["erank"] < 1.01).all()
    # Depth 2 flips the sign early (REFERENCE.md 5.1): no run stays away from the solutions.
    assert (final[final["depth"] == 2]["det"] < -0.5).all()


def test_wilson_interval_matches_scipy():
    wilson_interval = load_study("razin_cohen_2020").wilson_interval
    for k, n in [(0, 16), (7, 16), (16, 16), (120, 256)]:
        ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        np.testing.assert_allclose(wilson_interval(k, n, z=scipy.stats.norm.ppf(0.975)),
                                   (ci.low, ci.high), atol=1e-12)


def test_cmv_flow_cells_reach_infinite_depth(quick_runs):
    final, _ = load_tables(quick_runs["cmv_hyperbola"])
    assert math.isinf(final["depth"].max())
    assert set(final["N"]) == {"2", "5", "20", "inf"}
