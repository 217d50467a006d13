"""Markdown report of a study: description, grid, analysis tables, figures and verdicts."""
from __future__ import annotations

import math
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["write_report", "markdown_table", "verdict_summary"]

VERDICTS = "verdicts"
"""Name of the analysis table holding the statistics layer's verdict (one row per hypothesis)."""
VERDICT_COLUMNS = ("hypothesis", "statistic", "value", "ci_low", "ci_high", "p_value", "n",
                   "n_excluded", "excluded", "holds", "result")
"""Columns of :func:`dlnmc.stats.hypotheses`; a study's own columns (depth, setting, ...) key
the cells."""
MAX_ROWS = 60
"""Longer tables are shown by their first MAX_ROWS rows (the full tables are the parquet files
that ``dlnmc run`` writes to ``out/tables/``)."""


def _cell_text(value, digits) -> str:
    if value is pd.NA:
        return "NA"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        return f"{float(value):.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table of ``df`` (index dropped; floats to ``digits``
    significant digits; numeric columns right-aligned)."""
    header = [str(c) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell_text(v, digits) for v in row) + " |")
    return "\n".join(lines)


def _section(title, df) -> list[str]:
    lines = [f"## {title}", "", markdown_table(df.head(MAX_ROWS))]
    if len(df) > MAX_ROWS:
        lines += ["", f"*First {MAX_ROWS} of {len(df)} rows.*"]
    return lines + [""]


def verdict_summary(verdicts) -> pd.DataFrame:
    """One row per cell (the study's own columns), one column ``<hypothesis>_verdict`` per
    hypothesis: ``holds`` / ``fails`` / ``n/a`` with the verdict's value and the number of runs
    it used, e.g. ``fails (0.12, n 994)``."""
    own = [c for c in verdicts.columns if c not in VERDICT_COLUMNS]

    def text(row):
        word = "n/a" if pd.isna(row["holds"]) else "holds" if row["holds"] else "fails"
        value = "" if pd.isna(row["value"]) else f"{row['value']:.3g}, "
        return f"{word} ({value}n {row['n']})"

    cells = verdicts.assign(verdict=verdicts.apply(text, axis=1),
                            hypothesis=verdicts["hypothesis"] + "_verdict")
    wide = cells.pivot_table(index=own, columns="hypothesis", values="verdict", aggfunc="first",
                             sort=False)
    return wide.reset_index().rename_axis(columns=None)


def _grid_table(cells) -> pd.DataFrame:
    def text(mapping):
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in mapping.items())

    def problem(cell):
        if not isinstance(cell.problem, str):
            p = cell.problem
            return f"{p.name} ({p.rows}x{p.cols}, {len(p.entries)} observed entries)"
        return cell.problem + (f"({text(cell.problem_args)})" if cell.problem_args else "")

    return pd.DataFrame({
        "cell": [c.key for c in cells],
        "problem": [problem(c) for c in cells],
        "engine": [c.engine for c in cells],
        "runs": [c.runs for c in cells],
        "params": [text(c.params) for c in cells],
    })


def write_report(study, out, tables, figure_paths, cells=None) -> Path:
    """Write ``out/report.md`` for ``study`` and return its path.

    Parameters
    ----------
    study : module
        A study module (``NAME``, ``DESCRIPTION``, ``cells``; see :mod:`dlnmc.study`).
    out : path
        The study's output folder; figure links are written relative to it.
    tables : dict of str -> DataFrame
        The analysis tables of ``study.analyse``.  A study with a ``findings(tables)`` function
        (sentences, each naming the table it comes from) gets them first; a table named
        ``"verdicts"`` (the statistics layer's verdicts) is summarized next
        (:func:`verdict_summary`).  Tables longer than :data:`MAX_ROWS` are
        cut to their first rows, with a note.
    figure_paths : list of path
        The figures of ``study.figures``.
    cells : list of Cell, optional
        The grid that was run (default: the full grid ``study.cells(False)``); its run counts
        are the cells' full-size counts.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = study.cells(False) if cells is None else cells
    parts = [f"# {study.NAME}", "", study.DESCRIPTION.strip(), ""]
    if hasattr(study, "findings"):
        parts += ["## Findings", ""] + [f"- {line}" for line in study.findings(tables)] + [""]
    if VERDICTS in tables:
        parts += _section("Verdicts", verdict_summary(tables[VERDICTS]))
        parts += ["Value: the norm and rank rows give the fraction of finished runs at the "
                  "minimum nuclear norm / at the lowest completion rank, the volume row its "
                  "test statistic; the reasons, intervals and exclusions of every row are in "
                  "`tables/verdicts.parquet` (columns `result`, `ci_low`, `ci_high`, "
                  "`excluded`).", ""]
    parts += _section("Grid", _grid_table(cells))
    for name, df in tables.items():
        if name != VERDICTS:
            parts += _section(f"Table: {name}", df)
    if figure_paths:
        parts += ["## Figures", ""]
        for path in figure_paths:
            link = Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()
            parts += [f"![{Path(path).stem}]({link})", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path
