"""A study's pipeline: simulate -> analyse -> draw -> report, all into one output folder.

:func:`run` does every step, as ``dlnmc run`` does; :func:`analyse`, :func:`draw` and
:func:`write_report` redo one step from what an earlier run saved in the folder ``out``:

- ``final.parquet``, ``history.parquet``: the merged tables (:func:`dlnmc.runner.run_study`);
- ``tables/<name>.parquet``: the analysis tables of ``study.analyse``;
- ``figures/*.png``: the figures of ``study.figures``;
- ``report.md``: the report (:func:`dlnmc.report.write_report`);
- ``manifest.json``: the analysis tables' names and the figures' paths, in the study's order.

:func:`load` reads the analysis tables and figure paths back.  Everywhere, ``study`` is what
:func:`dlnmc.study.load_study` accepts: a study (module or object), a name, or a path to a
``.py`` or ``.toml`` file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dlnmc import report, runner
from dlnmc.results import write_parquet
from dlnmc.study import Cell

__all__ = ["MANIFEST", "Outputs", "run", "analyse", "draw", "write_report", "load"]

MANIFEST = "manifest.json"
"""``out/manifest.json``: ``{"tables": [names], "figures": [paths relative to out]}``."""


@dataclass(frozen=True)
class Outputs:
    """What a study's pipeline wrote into its output folder.

    Attributes
    ----------
    out : Path
        The output folder (absolute).
    tables : dict of str -> DataFrame
        The analysis tables, also in ``out/tables/<name>.parquet``.
    figures : list of Path
        The figures, under ``out/figures/``.
    report : Path or None
        ``out/report.md`` (None when not written yet).
    """

    out: Path
    tables: dict
    figures: list
    report: Path | None


def _final(out) -> Path:
    """``out/final.parquet``; ValueError when the study was not simulated into ``out``."""
    path = out / "final.parquet"
    if not path.is_file():
        raise ValueError(f"no tables in {out}: run the study into this folder first "
                         "(`dlnmc run`, or dlnmc.pipeline.run)")
    return path


def _manifest(out, **entries) -> dict:
    """Read ``out/manifest.json`` and update it with ``entries`` (when given)."""
    path = out / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    if entries:
        manifest.update(entries)
        path.write_text(json.dumps(manifest, indent=1))
    return manifest


def _analyse(study, out, final, history) -> dict:
    """``study.analyse`` -> ``out/tables/<name>.parquet``, recorded in the manifest."""
    tables = study.analyse(final, history)
    if not (isinstance(tables, dict)
            and all(isinstance(t, pd.DataFrame) for t in tables.values())):
        raise TypeError(f"study {study.NAME}: analyse must return a dict of DataFrames")
    for name, table in tables.items():
        write_parquet(table, out / "tables" / f"{name}.parquet")
    _manifest(out, tables=list(tables))
    return tables


def _draw(study, out, final, history, tables) -> list[Path]:
    """``study.figures`` -> ``out/figures/``, recorded in the manifest."""
    directory = out / "figures"
    directory.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in study.figures(final, history, tables, directory)]
    _manifest(out, figures=[os.path.relpath(p.resolve(), out) for p in paths])
    return paths


def run(study, out=None, quick=False, runs=None, seed=None, threads=None, executor=None,
        chunk_runs=None, progress=True, write="client") -> Outputs:
    """Simulate a study (resuming finished chunks), analyse it, draw its figures and write its
    report: what ``dlnmc run`` does.

    Parameters
    ----------
    study : study, str or path
        A study, its name or its path.
    out, quick, runs, seed, threads, executor, chunk_runs, progress, write
        As for :func:`dlnmc.runner.run_study`.

    Returns
    -------
    Outputs
        The folder and everything written into it.

    Notes
    -----
    Every check of :func:`dlnmc.runner.prepare` runs before any work, and the output folder
    stays locked (:func:`dlnmc.runner.locked`) until the report is written.
    """
    study = runner.load_study(study)
    plan = runner.prepare(study, out, quick, runs, seed, threads, chunk_runs, write)
    with runner.locked(plan.out):
        out = runner.execute(plan, executor, progress)
        final, history = runner.load_tables(out)
        tables = _analyse(study, out, final, history)
        figures = _draw(study, out, final, history, tables)
        return Outputs(out, tables, figures, write_report(study, out, tables, figures))


def analyse(study, out) -> dict:
    """Analyse the merged tables saved in ``out`` (``study.analyse``) and save the result.

    Parameters
    ----------
    study : study, str or path
        A study, its name or its path.
    out : path
        The study's output folder.

    Returns
    -------
    dict of str -> DataFrame
        The analysis tables, written to ``out/tables/<name>.parquet``.

    Raises
    ------
    ValueError
        ``out`` holds no merged tables (the study was not simulated into it).
    """
    out = Path(out).resolve()
    _final(out)
    return _analyse(runner.load_study(study), out, *runner.load_tables(out))


def draw(study, out, tables=None) -> list[Path]:
    """Draw the figures of a study (``study.figures``) into ``out/figures/``.

    Parameters
    ----------
    study : study, str or path
        A study, its name or its path.
    out : path
        The study's output folder.
    tables : dict of str -> DataFrame, optional
        The analysis tables (default: those saved in ``out``, see :func:`load`).

    Returns
    -------
    list of Path
        The figures.

    Raises
    ------
    ValueError
        ``out`` holds no merged tables, or (``tables`` not given) no analysis tables.
    """
    out = Path(out).resolve()
    _final(out)
    final, history = runner.load_tables(out)
    tables = load(out).tables if tables is None else tables
    return _draw(runner.load_study(study), out, final, history, tables)


def write_report(study, out, tables=None, figures=None) -> Path:
    """Write ``out/report.md`` (:func:`dlnmc.report.write_report`) for the grid that was run.

    Parameters
    ----------
    study : study, str or path
        A study, its name or its path.
    out : path
        The study's output folder.
    tables : dict of str -> DataFrame, optional
        The analysis tables (default: those saved in ``out``).
    figures : list of path, optional
        The figures (default: those recorded in ``out``).

    Returns
    -------
    Path
        ``out/report.md``.

    Raises
    ------
    ValueError
        ``out`` holds no merged tables, or (``tables`` or ``figures`` not given) no analysis
        tables.
    """
    out = Path(out).resolve()
    grid = pd.read_parquet(_final(out), columns=[]).attrs["dlnmc"]["grid"]
    if tables is None or figures is None:
        saved = load(out)
        tables = saved.tables if tables is None else tables
        figures = saved.figures if figures is None else figures
    return report.write_report(runner.load_study(study), out, tables, figures,
                               cells=[Cell(**cell) for cell in grid])


def load(out) -> Outputs:
    """The analysis tables, figures and report saved in ``out`` by an earlier run.

    Parameters
    ----------
    out : path
        The study's output folder.

    Returns
    -------
    Outputs
        ``report`` is None when ``out`` holds no report.

    Raises
    ------
    ValueError
        ``out`` holds no merged tables, or they were not analysed (see :func:`analyse`).
    """
    out = Path(out).resolve()
    _final(out)
    manifest = _manifest(out)
    if "tables" not in manifest:
        raise ValueError(f"no analysis tables in {out}: analyse it first (`dlnmc run` again, "
                         "or dlnmc.pipeline.analyse)")
    tables = {n: pd.read_parquet(out / "tables" / f"{n}.parquet") for n in manifest["tables"]}
    report_path = out / "report.md"
    return Outputs(out, tables, [out / p for p in manifest.get("figures", [])],
                   report_path if report_path.is_file() else None)
