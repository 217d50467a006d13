"""dlnmc compare: a run against a reference, value by value within a tolerance; planted
rounding-level differences agree, planted larger ones are counted per column."""
import shutil

import numpy as np
import pandas as pd
import pytest

from dlnmc import compare
from dlnmc.cli import main


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An output folder's tables: 21 runs, their history, one analysis table."""
    out = tmp_path_factory.mktemp("reference") / "tiny"
    (out / "tables").mkdir(parents=True)
    rng = np.random.default_rng(0)
    final = pd.DataFrame({
        "cell": pd.Categorical(["a"] * 10 + ["b"] * 11), "run": np.r_[0:10, 0:11],
        "loss": 10.0 ** rng.uniform(-12, -2, 21), "w_0_1": rng.normal(size=21),
        "status": pd.Categorical(["converged"] * 20 + ["max_steps"]),
        "det": np.r_[rng.normal(size=20), np.nan]})
    final.to_parquet(out / "final.parquet")
    final.loc[final.index.repeat(3), ["cell", "run", "loss"]].to_parquet(out / "history.parquet")
    pd.DataFrame({"cell": ["a", "b"], "loss_median": [1e-3, 2e-3],
                  "holds": pd.array([True, None], dtype="boolean")}).to_parquet(
        out / "tables" / "summary.parquet")
    return out


def _plant(path, column, rows, change):
    df = pd.read_parquet(path)
    df.loc[rows, column] = change(df.loc[rows, column])
    df.to_parquet(path)


def test_identical_folders_agree(reference, capsys):
    assert main(["compare", str(reference), str(reference)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "tolerance: |a - b| <= 0 + 1e-08 max(|a|, |b|) (NaN agrees with NaN)"
    assert out[-1] == "agree within tolerance: all 3 tables"
    assert out[2].startswith("final: 21 rows, ") and out[2].endswith(" identical")


def test_planted_differences_are_counted(reference, tmp_path, capsys):
    run = shutil.copytree(reference, tmp_path / "run")
    _plant(run / "final.parquet", "loss", [0, 5, 9], lambda x: x * (1 + 1e-12))
    _plant(run / "final.parquet", "w_0_1", [2, 3], lambda x: x + 1e-3)
    _plant(run / "tables" / "summary.parquet", "loss_median", [1], lambda x: x * 1.01)
    pd.DataFrame({"x": [1]}).to_parquet(reference.parent / "extra.parquet")
    shutil.copy(reference.parent / "extra.parquet", run / "tables" / "only_here.parquet")

    assert main(["compare", str(run), str(reference)]) == 1
    lines = capsys.readouterr().out.splitlines()
    final = next(line for line in lines if line.startswith("final:"))
    assert "1 within tolerance (3 values differ, max relative 1e-12)" in final
    assert final.endswith("beyond tolerance: w_0_1 2 rows (max relative "
                          f"{_max_rel(reference, run, 'w_0_1'):.2g})")
    assert next(line for line in lines if line.startswith("history:")).endswith("identical")
    assert "beyond tolerance: loss_median 1 rows (max relative 0.0099)" in next(
        line for line in lines if line.startswith("tables/summary:"))
    assert f"tables/only_here: not compared (not in {reference})" in lines
    assert lines[-1] == ("agree within tolerance: 1 of 4 tables; beyond tolerance or not "
                         "comparable: final, tables/only_here, tables/summary")
    assert compare.compare(run, reference, rtol=0.02)[3].agrees  # the summary, at 2%


def _max_rel(reference, run, column):
    a = pd.read_parquet(reference / "final.parquet")[column].to_numpy()
    b = pd.read_parquet(run / "final.parquet")[column].to_numpy()
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), np.abs(b))))


def test_folders_without_tables_are_an_error(reference, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["compare", str(tmp_path), str(reference)])
    assert err.value.code == 2 and "no tables in" in capsys.readouterr().err
