"""The arora_2019 study: its claims on planted samples where they must hold, fail or be n/a,
the relative error against a direct computation, and the quick grid end to end."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlnmc import pipeline

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("arora_2019", ROOT / "studies" / "arora_2019.py")
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def _runs(errors, inits=(1e-3, 1e-3, 1e-6, 1e-6), status=None, depth=3):
    """A planted ``runs`` table: one optimizer, m = 2000, one depth."""
    n = len(errors)
    return pd.DataFrame(dict(size=100, n_observed=2000, optimizer="rmsprop", depth=depth,
                             arora_init=list(inits), run=range(n), steps=1000, erank=5.0,
                             status=status or ["converged"] * n, rel_error=errors,
                             nuclear_norm=1.0))


NUCLEAR = pd.DataFrame(dict(size=[100], n_observed=[2000], norm=[1.0], rel_error=[0.13],
                            erank=[6.0], truth_nuclear_norm=[1.0], truth_erank=[4.95]))


def _holds(table, claim):
    return table.set_index("claim").loc[claim, "holds"]


def test_claims_hold_on_a_planted_recovery():
    table = study.claims(_runs([0.02, 0.03, 0.005, 0.004]), NUCLEAR)
    assert bool(_holds(table, "beats_nuclear"))
    assert bool(_holds(table, "error_falls_with_init"))
    row = table.set_index("claim").loc["beats_nuclear"]
    assert row["value"] == 0.03 and row["reference"] == 0.13 and row["n"] == 2


def test_claims_fail_on_a_planted_failure():
    table = study.claims(_runs([0.02, 0.2, 0.3, 0.4]), NUCLEAR)
    assert not bool(_holds(table, "beats_nuclear"))  # one run above the nuclear norm's error
    assert not bool(_holds(table, "error_falls_with_init"))


def test_claims_count_excluded_runs_and_are_na_without_converged_runs():
    status = ["converged", "not_converged", "converged", "converged"]
    table = study.claims(_runs([0.02, 0.9, 0.005, 0.004], status=status), NUCLEAR)
    row = table.set_index("claim").loc["beats_nuclear"]
    assert bool(row["holds"]) and row["n"] == 1 and row["n_excluded"] == 1
    status = ["diverged", "not_converged", "converged", "converged"]
    table = study.claims(_runs([0.02, 0.03, 0.005, 0.004], status=status), NUCLEAR)
    assert pd.isna(_holds(table, "beats_nuclear")) and pd.isna(_holds(table, "error_falls_with_init"))


def test_depth_two_has_both_claims():
    table = study.claims(_runs([0.02, 0.03, 0.005, 0.004], depth=2), NUCLEAR)
    assert list(table["claim"]) == ["beats_nuclear", "error_falls_with_init"]


def test_relative_error_and_grid():
    problem = study.problem_of(20, 2, 160)
    rng = np.random.default_rng(0)
    W = problem.ground_truth + 0.1 * rng.standard_normal((3, 20, 20))
    final = pd.DataFrame({f"w_{i}_{j}": W[:, i, j] for i in range(20) for j in range(20)})
    want = [np.sqrt(((w - problem.ground_truth) ** 2).sum() / (problem.ground_truth ** 2).sum())
            for w in W]
    np.testing.assert_allclose(study.relative_errors(final, problem), want, rtol=1e-13)
    full = study.cells(quick=False)
    assert len(full) == 3 * 3 * (4 + 2) and all(c.runs == 2 for c in full)
    one = next(c for c in full if c.key == "m2000_N3_rmsprop_init0.001")
    assert one.params["init_scale"] == pytest.approx(1e-4)  # their init / sqrt(100)
    assert one.params["tol"] == pytest.approx(1e-3) and one.params["objective"] == "mse"


def test_quick_study_end_to_end(tmp_path):
    pipeline.run(study, tmp_path, quick=True, progress=False)
    claims = pd.read_parquet(tmp_path / "tables" / "claims.parquet")
    runs = pd.read_parquet(tmp_path / "tables" / "runs.parquet")
    assert len(runs) == 4 and set(runs["optimizer"]) == {"gd", "rmsprop"}
    assert set(claims["claim"]) == {"beats_nuclear"}
    assert (tmp_path / "figures" / "error_vs_m.png").exists()
    assert "## Findings" in (tmp_path / "report.md").read_text()
