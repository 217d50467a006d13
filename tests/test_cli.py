"""dlnmc.cli: run / figures / report / list / bench / demo verbs, config errors, and resume
after a real SIGKILL of a running `dlnmc run`."""
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import dlnmc
from dlnmc import runner, study
from dlnmc.cli import _parser, main
from dlnmc.engines import ENGINES

from . import reference as ref

TINY = str(Path(__file__).parent / "studies" / "tiny.py")
PNG = b"\x89PNG\r\n\x1a\n"


def _lines(capsys):
    return dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines() if ":" in line)


def test_run_then_figures_and_report_from_saved_tables(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["run", TINY, "--quick", "--out", str(out), "--chunk-runs", "3",
                 "--no-progress"]) == 0
    where = _lines(capsys)
    assert str(out / "final.parquet") in where["tables"]
    final, history = runner.load_tables(out)
    tiny = runner.load_study(TINY)
    saved = pd.read_parquet(out / "tables" / "summary.parquet")
    pd.testing.assert_frame_equal(saved, tiny.analyse(final, history)["summary"])
    assert saved["runs"].tolist() == [c.runs for c in tiny.cells(True)]
    figure = out / "figures" / "loss.png"
    assert figure.read_bytes()[:8] == PNG and "1 PNG" in where["figures"]
    report = out / "report.md"
    assert where["report"].strip() == str(report) and "(figures/loss.png)" in report.read_text()

    figure.unlink()
    report.unlink()
    assert main(["figures", TINY, "--out", str(out)]) == 0
    assert figure.read_bytes()[:8] == PNG and not report.exists()
    assert main(["report", TINY, "--out", str(out)]) == 0
    assert "summary" in report.read_text() and str(report) in _lines(capsys)["report"]


@pytest.mark.parametrize("argv, message", [
    (["run", TINY, "--runs", "0"], "runs must be a positive integer"),
    (["run", TINY, "--chunk-runs", "0"], "chunk_runs must be"),
    (["run", TINY, "--threads", "100000"], "--threads must be at most"),
    (["run", TINY, "--local-cluster", "0"], "--local-cluster needs"),
    (["run", "no_such_study"], "no study named 'no_such_study'"),
    (["run", "bad.py"], r"cell a: unknown gd engine parameter\(s\) \['steps'\]"),
    (["figures", TINY], "no tables in"),
])
def test_config_errors_exit_2_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.py").write_text(
        "from dlnmc.study import Cell\nNAME = 'bad'\nDESCRIPTION = ''\n"
        "def cells(quick):\n    return [Cell('a', 'diagonal_2x2', params={'depth': 2, 'lr': 0.1, "
        "'steps': 5})]\nanalyse = figures = print\n")
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("dlnmc: error: ") and re.search(message, stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]


def test_list_bench_and_demo(tmp_path, monkeypatch, capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{name}\n" in listed for name in runner.list_studies())
    assert all(f"{name}\n    " in listed for name in ENGINES)
    calls = []
    monkeypatch.setattr(runpy, "run_module", lambda name, **kw: calls.append((name, sys.argv[1:])))
    assert main(["bench", "engine", "--quick"]) == 0
    assert calls == [("dlnmc.bench", ["engine", "--quick"])]
    assert main(["demo", "--runs", "4", "--max-steps", "50", "--out", str(tmp_path)]) == 0
    assert len(pd.read_parquet(tmp_path / "final.parquet")) == 4


def test_resume_after_sigkill_gives_the_uninterrupted_tables(tmp_path):
    out = tmp_path / "killed"
    # The full tiny grid (5000 steps per run), one run per chunk: 32 chunks.
    argv = ["run", TINY, "--runs", "8", "--chunk-runs", "1", "--threads", "1", "--out", str(out),
            "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "dlnmc", *argv], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while (len(list(out.glob("parts/*/*.sha256"))) < 3 and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Finished chunks: their digests are written last.
    done = {p: p.stat().st_mtime_ns for d in out.glob("parts/*/*.sha256")
            for p in (d, d.with_suffix(".final.parquet"), d.with_suffix(".history.parquet"))}
    assert 3 <= len(done) // 3 < 32 and not (out / "final.parquet").exists()
    assert f'"pid": {proc.pid}' in (out / runner.LOCK).read_text()  # its lock, now stale

    assert main(argv) == 0
    assert not (out / runner.LOCK).exists()
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # not recomputed
    assert len(list(out.glob("parts/*/*.final.parquet"))) == 32
    whole = runner.run_study(TINY, out=tmp_path / "whole", runs=8, chunk_runs=8, progress=False)
    for a, b in zip(runner.load_tables(out), runner.load_tables(whole)):
        ref.assert_tables_identical(a, b)


def test_list_without_studies_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study, "STUDY_FOLDERS", (tmp_path / "dlnmc" / "studies",
                                                 tmp_path / "studies"))
    with pytest.raises(SystemExit) as err:
        main(["list"])
    assert err.value.code == 2
    assert capsys.readouterr().err.startswith(f"dlnmc: error: no studies found (looked in "
                                              f"{tmp_path / 'dlnmc' / 'studies'}, ")


def test_version_and_help_texts(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--version"])
    assert err.value.code == 0 and capsys.readouterr().out == f"dlnmc {dlnmc.__version__}\n"
    parser = _parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert set(verbs) == {"run", "figures", "report", "compare", "list", "bench", "demo"}
    for text in [parser.format_help(), *(verb.format_help() for verb in verbs.values())]:
        assert "``" not in text
    for verb in verbs.values():  # every option says what it does
        assert all(action.help for action in verb._actions), verb.prog


def test_help_and_list_load_no_engine():
    code = ("import sys, contextlib, io\nfrom dlnmc.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['list'])\n"
            "    with contextlib.suppress(SystemExit):\n        main(['--help'])\n"
            "print(sorted({'numba', 'pandas', 'dlnmc.kernels', 'dlnmc.runner'}\n"
            "             & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout == "[]\n"
