"""TOML studies (dlnmc.config): a hand-written 3x3 problem runs end to end from a TOML file
with the standard analysis; grids expand to products; bad input names its key."""
import math
import re

import pandas as pd
import pytest

from dlnmc import config, runner
from dlnmc.cli import main
from dlnmc.problems import CompletionProblem

HAND = """
name = "hand_3x3"
description = "A hand-written 3x3 problem."
runs = 3
quick_runs = 2
seed = 4

[problem]
shape = [3, 3]
entries = [[0, 0, 1.0], [0, 1, 2.0], [1, 1, 1.0], [2, 0, -1.0], [2, 2, 0.5]]

[grid]
engine = "gd"
depth = [2, 3]
lr = 0.05
init_scale = 1e-2
max_steps = 400
tol = 1e-10
checkpoints = 3
"""


def _write(tmp_path, text, name="study.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_toml_study_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, HAND, "hand.toml")
    assert main(["run", "hand.toml", "--quick", "--no-progress"]) == 0
    out = tmp_path / "runs" / "hand_3x3-quick"
    assert f"report:  {out / 'report.md'}" in capsys.readouterr().out
    final, _ = runner.load_tables(out)
    assert final.attrs["dlnmc"]["seed"] == 4 and len(final) == 4
    assert final.attrs["dlnmc"]["grid"][0]["problem"]["entries"][1] == [0, 1, 2.0]
    tables = {p.stem: pd.read_parquet(p) for p in (out / "tables").glob("*.parquet")}
    assert set(tables) == {"verdicts", "endpoints", "descriptors", "clusters"}
    assert list(tables["endpoints"]["cell"]) == ["gd_depth=2", "gd_depth=3"]
    assert list(tables["endpoints"].columns[:4]) == ["cell", "engine", "depth", "runs"]
    assert set(tables["verdicts"]["hypothesis"]) == {"norm", "rank", "volume"}
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["clusters.png", "erank.png", "loss.png", "status.png"]
    report = (out / "report.md").read_text()
    assert report.startswith("# hand_3x3\n\nA hand-written 3x3 problem.\n\n## Findings\n\n"
                             "- gd_depth=2: ")
    assert "| gd_depth=2 | hand_3x3 (3x3, 5 observed entries) | gd | 2 |" in report


def test_grids_expand_to_products_and_unions(tmp_path):
    study = config.load(_write(tmp_path, """
runs = 10
problem = "diagonal_2x2"
[[grid]]
depth = [2, 5]
lr = [0.1, 0.01]
init = "gaussian"
[[grid]]
engine = "flow"
depth = [5, inf]
"""))
    assert study.NAME == "study" and study.SEED == 0 and study.quick_runs == 10
    cells = study.cells(quick=False)
    assert [c.key for c in cells] == [
        "gd_depth=2_lr=0.1", "gd_depth=2_lr=0.01", "gd_depth=5_lr=0.1", "gd_depth=5_lr=0.01",
        "flow_depth=5", "flow_depth=inf"]
    assert dict(cells[1].params) == {"depth": 2, "lr": 0.01, "init": "gaussian"}
    assert math.isinf(cells[-1].params["depth"]) and cells[-1].engine == "flow"
    assert all(c.problem == "diagonal_2x2" and c.runs == 10 for c in cells)
    assert study.axes.to_dict("list") == {
        "cell": [c.key for c in cells], "engine": ["gd"] * 4 + ["flow"] * 2,
        "depth": [2, 2, 5, 5, 5, math.inf], "lr": ["0.1", "0.01", "0.1", "0.01", "", ""]}
    assert runner.load_study(tmp_path / "study.toml").NAME == "study"
    inline = config.load(_write(tmp_path, HAND)).cells(quick=True)[0]
    assert isinstance(inline.problem, CompletionProblem) and inline.runs == 2
    assert dict(inline.problem.entries)[(2, 0)] == -1.0


BASE = HAND.split("[problem]")[0]
GRID = "\n[grid]\ndepth = 2\nlr = 0.1\n"
PROBLEM = "\n[problem]\nshape = [3, 3]\nentries = [[0, 0, 1.0]]\n"


CASES = [
    (BASE + "rnus = 3" + PROBLEM + GRID, r"unknown key 'rnus' \(known: name, description, "),
    (BASE.replace("runs = 3", 'runs = "3"') + PROBLEM + GRID, "runs: must be an integer >= 1"),
    (BASE.replace("runs = 3", "") + PROBLEM + GRID, "runs: missing"),
    (BASE.replace("seed = 4", "seed = -1") + PROBLEM + GRID, "seed: must be an integer >= 0"),
    (BASE.replace('name = "hand_3x3"', "name = 3") + PROBLEM + GRID, "name: must be a string"),
    (BASE + PROBLEM + GRID.replace("lr = 0.1", "lr = nan"), "grid.lr: NaN is not a value"),
    (BASE + PROBLEM + GRID.replace("lr = 0.1", "lr = [0.1, nan]"), r"grid.lr\[1\]: NaN"),
    (BASE + PROBLEM + GRID + "when = 2024-01-01", "grid.when: must be a number, a string"),
    (BASE + PROBLEM.replace("[0, 0, 1.0]", "[0, 3, 1.0]") + GRID,
     r"problem.entries\[0\]: entry \(0, 3\) is outside the shape 3 x 3 \(entries are 0-based\)"),
    (BASE + PROBLEM.replace("[0, 0, 1.0]", "[0, 0, 1.0], [1, 1, nan]") + GRID,
     r"problem.entries\[1\]\[2\]: NaN"),
    (BASE + PROBLEM.replace("[0, 0, 1.0]", "[0, 0, 1.0], [0, 0, 2.0]") + GRID,
     r"problem.entries\[1\]: entry \(0, 0\) is observed twice \(also problem.entries\[0\]\)"),
    (BASE + PROBLEM.replace("[0, 0, 1.0]", "[0, 0]") + GRID,
     r"problem.entries\[0\]: must be \[row, column, value\]"),
    (BASE + PROBLEM.replace("[0, 0, 1.0]", "[0.5, 0, 1.0]") + GRID,
     r"problem.entries\[0\]: row and column must be integers"),
    (BASE + PROBLEM.replace("[3, 3]", "[3, 0]") + GRID, "problem.shape: must be"),
    (BASE + PROBLEM + "size = 3\n" + GRID, "problem: unknown key 'size'"),
    (BASE + 'problem = "nope"' + GRID, "problem.catalogue: unknown problem 'nope'"),
    (BASE + '[problem]\ncatalogue = "diagonal_3x3"\nargs = {values = [1, 2]}' + GRID,
     "problem.args: .*three values"),
    (BASE + GRID, "problem: missing"),
    (BASE + PROBLEM, "grid: missing"),
    (BASE + PROBLEM + GRID + "steps = 5", "grid.steps: not a parameter of the gd engine"),
    (BASE + PROBLEM + GRID + 'engine = "flow"', "grid.lr: not a parameter of the flow engine"),
    (BASE + PROBLEM + GRID + 'engine = "sgd"', "grid.engine: unknown engine 'sgd'"),
    (BASE + PROBLEM + GRID + "seed = 1", "grid.seed: set by the runner"),
    (BASE + PROBLEM + GRID.replace("lr = 0.1", "lr = []"), "grid.lr: an empty list"),
    (BASE + PROBLEM + GRID.replace("lr = 0.1", "lr = {a = 1}"), "grid.lr: must be a value"),
    (BASE + PROBLEM + GRID + "[[other]]", "unknown key 'other'"),
    (BASE + PROBLEM + GRID + "lr = 0.2", "not a TOML file"),
]


@pytest.mark.parametrize("text, message", CASES,
                         ids=[re.sub(r"\W+", "-", message)[:48] for _, message in CASES])
def test_bad_input_names_the_key(tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(SystemExit) as err:
        main(["run", str(path), "--out", str(tmp_path / "out")])
    assert err.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"dlnmc: error: {path}: ") and re.search(message, stderr), stderr
    assert not (tmp_path / "out").exists()


def test_duplicate_cells_and_engine_errors_name_the_cell(tmp_path):
    with pytest.raises(ValueError, match=r"grid: cell gd appears twice \(points 0 and 1 of"):
        config.load(_write(tmp_path, BASE + PROBLEM + "[[grid]]\ndepth = 2\nlr = 0.1\n" * 2))
    two = config.load(_write(tmp_path, BASE + PROBLEM + "[[grid]]\ndepth = 2\nlr = 0.1\n" * 2
                             + 'init = "gaussian"\n'))
    assert [key for key, _, _ in two.grid] == ["gd", "gd_init=gaussian"]
    bad = _write(tmp_path, BASE + PROBLEM + GRID.replace("lr = 0.1", 'lr = "fast"'))
    with pytest.raises(ValueError, match="cell gd: lr must be"):
        runner.run_study(bad, out=tmp_path / "out", progress=False)
