"""dlnmc.runner: chunking, merging, resume, provenance checks and validation, on the tiny study."""
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

import dlnmc
from dlnmc import runner
from dlnmc.results import STATUSES
from dlnmc.study import Cell

from . import reference as ref

TINY = Path(__file__).parent / "studies" / "tiny.py"


@pytest.fixture(scope="module")
def tiny():
    return runner.load_study(TINY)


@pytest.fixture(scope="module")
def baseline(tiny, tmp_path_factory):
    """The quick tiny study, in-process, 4 runs per chunk (cells of 4 to 6 runs)."""
    return runner.run_study(tiny, out=tmp_path_factory.mktemp("baseline"), quick=True,
                            chunk_runs=4, progress=False)


def _identical(out_a, out_b):
    for a, b in zip(runner.load_tables(out_a), runner.load_tables(out_b)):
        ref.assert_tables_identical(a, b)


def _mtimes(out):
    return {p: p.stat().st_mtime_ns for p in (out / "parts").rglob("*.parquet")}


class Reversed:
    """An executor that runs the items last to first and records them."""

    def __init__(self):
        self.done = []

    def map(self, fn, items):
        items = list(items)[::-1]
        self.done += [(c.cell, c.chunk) for c in items]
        return [fn(item) for item in items]


def test_tables_equal_one_engine_call_per_cell(tiny, baseline):
    final, history = runner.load_tables(baseline)
    cells = tiny.cells(True)
    for table in (final, history):
        assert list(table["cell"].cat.categories) == [c.key for c in cells]
        assert list(table.columns[:4]) == ["study", "cell", "setting", "scale"]
    assert list(final["status"].cat.categories) == list(STATUSES)
    # Grid order, then run (then step): the same order as one engine call per cell.
    for cell in cells:
        res = dlnmc.simulate(dlnmc.CATALOGUE[cell.problem](**cell.problem_args), runs=cell.runs,
                             seed=0, progress=False, **cell.params)
        for table, want in ((final, res.final), (history, res.history)):
            rows = table[table["cell"] == cell.key].reset_index(drop=True)
            assert (rows["study"] == "tiny").all()
            for name, value in cell.labels.items():
                assert (rows[name] == value).all()
            for col in want.columns:
                if want[col].dtype == np.float64:
                    assert np.array_equal(rows[col].to_numpy().view(np.int64),
                                          want[col].to_numpy().view(np.int64)), (cell.key, col)
                else:
                    assert rows[col].tolist() == want[col].tolist(), (cell.key, col)
    assert np.all(np.diff(final["cell"].cat.codes) >= 0)
    assert "scale" in final and final.loc[final["cell"] != "diag-d3-gauss", "scale"].isna().all()
    prov = final.attrs["dlnmc"]
    assert prov["study"] == "tiny" and prov["seed"] == 0
    assert [(g["key"], g["runs"]) for g in prov["grid"]] == [(c.key, c.runs) for c in cells]
    assert prov["versions"]["dlnmc"] == dlnmc.__version__
    assert history.attrs == final.attrs


@pytest.mark.parametrize("chunk_runs, threads, executor, write",
                         [(1, 1, Reversed(), "client"), (5, None, None, "workers")])
def test_chunking_threads_order_and_writer_do_not_change_tables(tiny, baseline, tmp_path,
                                                                chunk_runs, threads, executor,
                                                                write):
    out = runner.run_study(tiny, out=tmp_path, quick=True, chunk_runs=chunk_runs,
                           threads=threads, executor=executor, write=write, progress=False)
    _identical(out, baseline)


def test_rerun_computes_only_missing_parts(tiny, baseline, tmp_path):
    out = shutil.copytree(baseline, tmp_path / "out")
    (out / "final.parquet").unlink()
    lost = out / "parts" / "diag-d2" / "000001.final.parquet"  # its history part remains
    for path in [lost, *(out / "parts" / "rc-d3-noisy").glob("000000.*")]:
        path.unlink()
    orphan = out / "parts" / "lowrank-d2" / ".000000.final.parquet.x.tmp"
    orphan.write_bytes(b"partial")
    before = _mtimes(out)
    executor = Reversed()
    runner.run_study(tiny, out=out, quick=True, chunk_runs=4, executor=executor, progress=False)
    assert sorted(executor.done) == [("diag-d2", 1), ("rc-d3-noisy", 0)]
    assert not orphan.exists()
    after = _mtimes(out)
    assert all(after[p] == t for p, t in before.items() if "diag-d2/000001" not in str(p))
    _identical(out, baseline)


@pytest.mark.parametrize("change, message", [
    (dict(seed=1), r"changed: \['seed'\]"),
    (dict(runs=7), r"changed: \['runs'\]"),  # chunk 1 of a 6-run cell held 2 runs, now 3
    (dict(study="lr"), r"changed: \['params'\]"),
])
def test_parts_of_another_spec_are_an_error(tiny, baseline, tmp_path, change, message):
    out = shutil.copytree(baseline, tmp_path / "out")
    before = _mtimes(out)
    study = tiny
    if change.pop("study", None):
        study = _study([Cell(c.key, c.problem, c.problem_args, c.engine,
                             {**c.params, "lr": 0.04}, c.runs, c.labels) for c in tiny.cells(True)],
                       name="tiny")
    with pytest.raises(ValueError, match=message):
        runner.run_study(study, out=out, quick=True, chunk_runs=4, progress=False, **change)
    assert _mtimes(out) == before


def _study(cells, name="bad"):
    study = types.ModuleType(name)
    study.NAME, study.DESCRIPTION = name, "a test study"
    study.cells = lambda quick: cells
    study.analyse = study.figures = lambda *args: None
    return study


def _cell(key="a", problem="diagonal_2x2", problem_args=None, **params):
    return Cell(key, problem, problem_args or {}, params={"depth": 2, "lr": 0.1, **params},
                runs=3)


@pytest.mark.parametrize("cells, message", [
    ([_cell(step_size=0.1)], r"cell a: unknown gd engine parameter\(s\) \['step_size'\]"),
    ([_cell(), _cell()], "cell a: duplicate cell key"),
    ([_cell(problem="nope")], "cell a: unknown problem 'nope'"),
    ([_cell(problem="diagonal_3x3", problem_args={"values": (1, 2)})], "cell a: .*three values"),
    ([_cell(problem="diagonal_3x3", problem_args={"size": 3})], "cell a: .*size"),
    ([Cell("b", "diagonal_2x2", params={"depth": 2})], "cell b: missing .*'lr'"),
    ([Cell("c", "diagonal_2x2", params={"depth": 2, "lr": 0.1}, labels={"run": 1})],
     r"cell c: labels may not be named \['run'\]"),
    ([Cell("c", "diagonal_2x2", params={"depth": 2, "lr": 0.1}, labels={"x": [1]})],
     "cell c: label values"),
    ([_cell(widths=object())], "cell a: object is not JSON"),
    ([], "non-empty"),
    (["a"], "must be dlnmc.study.Cell"),
])
def test_config_errors_are_reported_before_any_work(tmp_path, cells, message):
    with pytest.raises(ValueError, match=message):
        runner.run_study(_study(cells), out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, message", [
    (dict(runs=0), "runs must be"), (dict(chunk_runs=0), "chunk_runs must be"),
    (dict(seed=-1), "seed must be"), (dict(threads=0), "threads must be"),
    (dict(write="nfs"), "write must be"), (dict(executor=object()), "executor must have"),
])
def test_bad_options_are_reported_before_any_work(tiny, tmp_path, option, message):
    with pytest.raises(ValueError, match=message):
        runner.run_study(tiny, out=tmp_path / "out", quick=True, progress=False, **option)
    assert not (tmp_path / "out").exists()


def test_load_study_errors(tmp_path):
    with pytest.raises(ValueError, match="no study named 'no_such_study'.*known"):
        runner.load_study("no_such_study")
    with pytest.raises(ValueError, match="does not exist"):
        runner.load_study(tmp_path / "missing.py")
    path = tmp_path / "half.py"
    path.write_text("NAME = 'half'\nDESCRIPTION = 'no cells'\n")
    with pytest.raises(ValueError, match="cells missing"):
        runner.load_study(path)
    assert all(p.parent == runner.STUDIES and p.suffix == ".py"
               for p in runner.list_studies().values())


def test_studies_are_found_next_to_the_source_tree_else_in_the_current_folder(tmp_path,
                                                                              monkeypatch):
    assert runner.studies_dir() == runner.STUDIES == Path(dlnmc.__file__).parents[1] / "studies"
    monkeypatch.setattr(runner, "STUDIES", tmp_path / "site-packages" / "studies")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    shutil.copy(TINY, tmp_path / "studies" / "copy.py")
    assert list(runner.list_studies()) == ["copy"]
    assert runner.load_study("copy").NAME == "tiny"


def test_parts_of_another_dlnmc_version_are_an_error(tiny, baseline, tmp_path, monkeypatch):
    out = shutil.copytree(baseline, tmp_path / "out")
    monkeypatch.setattr(runner, "__version__", "99.0")
    with pytest.raises(ValueError, match=f"made by dlnmc {dlnmc.__version__}, this is 99.0"):
        runner.run_study(tiny, out=out, quick=True, chunk_runs=4, progress=False)
