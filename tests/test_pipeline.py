"""dlnmc.pipeline: run = `dlnmc run` (same files, bitwise), each step redone from the saved
tables without simulating again, clear errors on a folder that holds no tables."""
import json
import re
import shutil
from pathlib import Path

import pytest

from dlnmc import pipeline, runner
from dlnmc.cli import main

from . import reference as ref

TINY = str(Path(__file__).parent / "studies" / "tiny.py")
PNG = b"\x89PNG\r\n\x1a\n"
SAVED = ("final.parquet", "history.parquet", "tables/summary.parquet", "figures/loss.png",
         "manifest.json", "report.md")


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """The quick tiny study through :func:`pipeline.run`."""
    out = tmp_path_factory.mktemp("python") / "tiny"
    return pipeline.run(TINY, out=out, quick=True, chunk_runs=3, progress=False)


def test_run_writes_what_the_cli_writes(done, tmp_path, capsys):
    out = done.out
    assert out.is_absolute() and list(done.tables) == ["summary"]
    assert done.figures == [out / "figures" / "loss.png"] and done.report == out / "report.md"
    assert done.figures[0].read_bytes()[:8] == PNG
    assert json.loads((out / "manifest.json").read_text()) == {
        "tables": ["summary"], "figures": ["figures/loss.png"]}

    cli = tmp_path / "tiny"
    assert main(["run", TINY, "--quick", "--out", str(cli), "--chunk-runs", "3",
                 "--no-progress"]) == 0
    assert f"report:  {cli / 'report.md'}" in capsys.readouterr().out
    for name in SAVED:
        assert (out / name).read_bytes() == (cli / name).read_bytes(), name

    saved = pipeline.load(out)
    assert saved.out == out and saved.figures == done.figures and saved.report == done.report
    ref.assert_tables_identical(saved.tables["summary"], done.tables["summary"])


def test_steps_from_saved_tables_without_simulating(done, tmp_path, monkeypatch):
    out = tmp_path / "tiny"
    out.mkdir()
    for name in ("final.parquet", "history.parquet"):  # as left by runner.run_study alone
        shutil.copy(done.out / name, out / name)
    with pytest.raises(ValueError, match="no analysis tables in .*pipeline.analyse"):
        pipeline.draw(TINY, out)
    with pytest.raises(ValueError, match="no analysis tables in"):
        pipeline.write_report(TINY, out)

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated again")

    monkeypatch.setattr(runner, "run_study", no_simulation)
    monkeypatch.setattr(runner, "run_chunk", no_simulation)
    study = runner.load_study(TINY)
    tables = pipeline.analyse(study, out)
    ref.assert_tables_identical(tables["summary"], done.tables["summary"])
    assert pipeline.draw(study, out) == [out / "figures" / "loss.png"]
    assert pipeline.write_report(study, out) == out / "report.md"
    for name in SAVED:
        assert (out / name).read_bytes() == (done.out / name).read_bytes(), name


def test_a_folder_without_tables_is_a_value_error(tmp_path):
    for step in (pipeline.analyse, pipeline.draw, pipeline.write_report):
        with pytest.raises(ValueError, match=f"no tables in {re.escape(str(tmp_path.resolve()))}: "):
            step(TINY, tmp_path)
    with pytest.raises(ValueError, match="no tables in"):
        pipeline.load(tmp_path)
    assert list(tmp_path.iterdir()) == []
