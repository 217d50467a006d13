"""The studies of issue 5: grids valid for the engines, quick runs end to end through the
runner (tables, figures, report), and the qualitative Razin-Cohen result at quick size."""
import math
import re
import tomllib
from pathlib import Path

import matplotlib.image
import matplotlib.text
import numpy as np
import pytest

import dlnmc.figures
from dlnmc.report import write_report
from dlnmc.runner import list_studies, load_study, load_tables, run_study, study_cells

STUDIES = ("razin_cohen_2020", "cmv_hyperbola", "diagonal_3x3", "nuclear_norm",
           "noise_and_discretization", "small_init_limit")
QUICK_RUNS = {"razin_cohen_2020": None, "cmv_hyperbola": 40, "diagonal_3x3": 40,
              "nuclear_norm": 2, "noise_and_discretization": 24, "small_init_limit": 40}
"""Runs per cell of the end-to-end test (None: the quick grid's own counts)."""
EXPECTED = {
    "razin_cohen_2020": {
        "outcomes": {"depth", "init", "setting", "runs", "frac_det_pos", "frac_unbounded",
                     "unbounded_lo", "unbounded_hi"},
        "growth": {"median_abs_w11", "median_|w11|_x_sqrt2loss", "median_erank"},
        "bands": {"quantity", "outcome", "loss", "q10", "median", "q90", "step_median"}},
    "cmv_hyperbola": {
        "endpoints": {"N", "init_scale", "erank_median", "frac_erank_below_1_06"},
        "t_spread": {"N", "init_scale", "t_std", "t_std_lo", "t_std_hi", "t_iqr",
                     "runs_on_curve", "n_off_curve", "n_stuck_at_origin", "distance_median"},
        "t_density": {"N", "candidate", "t", "density"}},
    "diagonal_3x3": {"endpoints": {"variant", "depth", "erank_median"},
                     "ranks": {"variant", "depth", "rank", "fraction"}},
    "nuclear_norm": {"errors": {"size", "rank", "n_observed", "depth", "init_scale",
                                "rel_error_median"}},
    "noise_and_discretization": {
        "outcomes": {"task", "sweep", "engine", "lr_over_edge", "temperature", "t_std",
                     "n_on_curve", "frac_det_positive"}},
    "small_init_limit": {
        "spread": {"N", "depth", "engine", "series", "scale", "runs_on_curve", "n_off_curve",
                   "n_stuck_at_origin", "n_not_converged", "frac_positive_branch", "t_std",
                   "t_std_lo", "t_std_hi", "t_iqr", "t_iqr_lo", "t_iqr_hi"},
        "slopes": {"depth", "scale_lo", "scale_hi", "slope", "ci_low", "ci_high"},
        "fit": {"N", "model", "chi2_per_dof", "alpha", "beta", "beta_lo", "beta_hi"},
        "collapse": {"N", "ks", "p_value", "collapses"},
        "step_check": {"N", "scale", "check", "ratio", "ci_low", "ci_high"}},
}
ROOT = Path(__file__).resolve().parents[1]
ONE_BASED = re.compile(r"\bw_?\{?\d\d\}?")
"""An entry named by two digits (w12, w_12, w_{12}): figures name entries 0-based, as the
tables' columns do (w_0_1)."""
FULL_RUNS = {"razin_cohen_2020": 200, "cmv_hyperbola": 1000, "diagonal_3x3": 500,
             "small_init_limit": 2000}
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


@pytest.fixture
def figure_texts(monkeypatch):
    """The texts (labels, titles, legends) of every figure saved through dlnmc.figures.save."""
    texts, save = [], dlnmc.figures.save

    def recording(fig, directory, name):
        figure = getattr(fig, "figure", fig)
        texts.extend(t.get_text() for t in figure.findobj(matplotlib.text.Text))
        return save(fig, directory, name)

    monkeypatch.setattr(dlnmc.figures, "save", recording)
    return texts


@pytest.mark.parametrize("name", STUDIES)
def test_quick_study_end_to_end(name, quick_runs, figure_texts):
    study, out = load_study(name), quick_runs[name]
    final, history = load_tables(out)
    tables = study.analyse(final, history)
    for table, columns in EXPECTED[name].items():
        assert table in tables, f"{name}: analyse lacks table {table}"
        assert len(tables[table]) > 0
        assert columns <= set(tables[table].columns), columns - set(tables[table].columns)
    paths = study.figures(final, history, tables, out / "figures")
    assert paths and all(_is_drawn_png(p) for p in paths)
    assert figure_texts and not [t for t in figure_texts if ONE_BASED.search(t)]
    report = write_report(study, out, tables, paths, cells=study.cells(True)).read_text()
    assert report.startswith(f"# {study.NAME}")
    for table in tables:
        assert f"## Table: {table}" in report or table == "verdicts"
    for path in paths:
        assert f"](figures/{path.name})" in report
    for cell in study.cells(True):
        assert f"| {cell.key} |" in report


def test_cmv_flow_cells_reach_infinite_depth(quick_runs):
    final, _ = load_tables(quick_runs["cmv_hyperbola"])
    assert math.isinf(final["depth"].max())
    assert set(final["N"]) == {"2", "5", "20", "inf"}


def test_studies_ship_with_the_package():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"dlnmc.studies": "studies"}
    packages = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
                for p in (ROOT / "dlnmc").rglob("__init__.py")}
    assert set(setuptools["packages"]) == packages | {"dlnmc.studies"}
    assert (ROOT / "studies" / "__init__.py").is_file()
