"""dlnmc.runner: chunking, merging, resume, provenance checks and validation, on the tiny study."""
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

import dlnmc
import dlnmc.flow
from dlnmc import runner, study
from dlnmc.engines import ENGINES
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
    assert all(p.parent == study.studies_dir() and p.suffix == ".py"
               for p in runner.list_studies().values())


def test_studies_are_found_in_the_package_else_next_to_the_source_tree(tmp_path, monkeypatch):
    # A checkout (or an editable install): studies/ next to the package's source tree.
    assert study.studies_dir() == Path(dlnmc.__file__).parents[1] / "studies"
    packaged, checkout = tmp_path / "dlnmc" / "studies", tmp_path / "studies"
    monkeypatch.setattr(study, "STUDY_FOLDERS", (packaged, checkout))
    assert runner.list_studies() == {} and study.studies_dir() is None
    checkout.mkdir()
    shutil.copy(TINY, checkout / "copy.py")
    (checkout / "_private.py").write_text("")
    assert list(runner.list_studies()) == ["copy"]
    assert runner.load_study("copy").NAME == "tiny"
    packaged.mkdir(parents=True)  # an installed package: its own dlnmc/studies
    shutil.copy(TINY, packaged / "shipped.py")
    assert list(runner.list_studies()) == ["shipped"]
    with pytest.raises(ValueError, match="no study named 'copy'.*known: shipped"):
        runner.load_study("copy")


def test_studies_are_read_without_running_them(tmp_path):
    assert study.read_header(TINY) == ("tiny", runner.load_study(TINY).DESCRIPTION)
    computed = tmp_path / "computed.py"
    computed.write_text(TINY.read_text().replace('NAME = "tiny"', 'NAME = "ti" + "ny2"'))
    assert study.read_header(computed)[0] == "tiny2"  # not a literal: loaded


def _inline(entries, key="inline", runs=4):
    """A one-cell study of an inline 2x2 problem."""
    problem = dlnmc.CompletionProblem((2, 2), entries, name="hand")
    return _study([Cell(key, problem, params=dict(depth=2, lr=0.05, init_scale=0.1,
                                                  max_steps=200, checkpoints=3), runs=runs)],
                  name="inline")


def test_an_inline_problem_runs_like_the_catalogue_one_and_is_part_of_the_spec(tmp_path):
    diagonal = {(0, 0): 1.0, (1, 1): 1.0}
    out = runner.run_study(_inline(diagonal), out=tmp_path / "out", chunk_runs=2,
                           progress=False)
    final, history = runner.load_tables(out)
    assert final.attrs["dlnmc"]["grid"][0]["problem"] == {
        "name": "hand", "shape": [2, 2], "entries": [[0, 0, 1.0], [1, 1, 1.0]]}
    catalogue = _study([Cell("inline", "diagonal_2x2", params=dict(
        depth=2, lr=0.05, init_scale=0.1, max_steps=200, checkpoints=3), runs=4)])
    same = runner.run_study(catalogue, out=tmp_path / "catalogue", progress=False)
    for a, b in zip((final, history), runner.load_tables(same)):  # but study and provenance
        a, b = a.drop(columns="study"), b.drop(columns="study")
        a.attrs = b.attrs = {}
        ref.assert_tables_identical(a, b)
    # A changed value, or a changed shape, never reuses the parts.
    before = _mtimes(out)
    for entries in ({(0, 0): 1.0, (1, 1): 0.5}, {(0, 0): 1.0, (1, 1): 1.0, (0, 1): 0.0}):
        with pytest.raises(ValueError, match=r"inline chunks 0-1 changed: \['problem'\]"):
            runner.run_study(_inline(entries), out=out, chunk_runs=2, progress=False)
    assert _mtimes(out) == before
    # The report rebuilds the grid, inline problem included, from the provenance.
    cell = Cell(**final.attrs["dlnmc"]["grid"][0])
    assert cell.make_problem().entries == dlnmc.CompletionProblem((2, 2), diagonal).entries


def test_the_engine_registry():
    assert list(ENGINES) == ["gd", "flow"] and study.ENGINES is ENGINES
    assert ENGINES["gd"].load() is dlnmc.simulate
    assert ENGINES["flow"].load() is dlnmc.flow.simulate_flow
    for engine in ENGINES.values():
        assert "depth" in engine.parameters()
        assert not set(engine.runner_sets) & set(engine.parameters())
    assert "lr" not in ENGINES["flow"].parameters() and "t_max" in ENGINES["flow"].parameters()
    with pytest.raises(ValueError, match=r"engine must be one of \('gd', 'flow'\)"):
        Cell("a", "diagonal_2x2", engine="sgd")
    with pytest.raises(ValueError, match=r"params may not set \['seed'\]"):
        Cell("a", "diagonal_2x2", params={"seed": 1})
    with pytest.raises(ValueError, match="problem_args apply to catalogue names"):
        Cell("a", dlnmc.diagonal_2x2(), problem_args={"x": 1})


def test_a_study_seed_is_the_default_seed(tiny, tmp_path):
    seeded = _study(tiny.cells(True), name="seeded")
    seeded.SEED = 5
    out = runner.run_study(seeded, out=tmp_path / "out", runs=2, progress=False)
    assert runner.load_tables(out)[0].attrs["dlnmc"]["seed"] == 5
    assert runner.prepare(seeded, tmp_path / "other", seed=0).seed == 0


def test_parts_of_another_dlnmc_version_are_an_error(tiny, baseline, tmp_path, monkeypatch):
    out = shutil.copytree(baseline, tmp_path / "out")
    monkeypatch.setattr(runner, "__version__", "99.0")
    with pytest.raises(ValueError, match=f"made by dlnmc {dlnmc.__version__}, this is 99.0"):
        runner.run_study(tiny, out=out, quick=True, chunk_runs=4, progress=False)
