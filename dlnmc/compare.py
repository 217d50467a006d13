"""Compare the tables of two output folders of a study: a fresh run against a reference (the
committed ``data/<study>/``), value by value within a stated tolerance.

The tables are ``final.parquet``, ``history.parquet`` and every analysis table
``tables/<name>.parquet``; their rows are compared in order (the runner's order: grid, run,
step).  A number agrees when ``|a - b| <= atol + rtol max(|a|, |b|)`` (NaN with NaN, an
infinity with the same infinity); any other value must be equal.  Floating-point results
depend on the CPU at the rounding level (on another machine most loss values of the main job
differ, by at most about 1e-11 relative), and endpoints near saddles may move further: the
comparison counts, per column, the values that differ at all and those beyond the tolerance,
instead of failing on rounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["TableDiff", "compare", "summary"]


@dataclass(frozen=True)
class TableDiff:
    """How one table of a run differs from the reference's.

    Attributes
    ----------
    name : str
        ``final``, ``history`` or ``tables/<name>``.
    rows : int
        Rows of the run's table (0 when it is missing).
    missing : str or None
        The folder that lacks the table, or a reason the tables cannot be compared row by row
        (their row counts differ); None when they were compared.
    columns : DataFrame
        One row per column in both tables: ``column``, ``differ`` (values not equal),
        ``beyond`` (values beyond the tolerance), ``max_rel`` (largest relative difference
        ``|a - b| / max(|a|, |b|)`` of a numeric column; NaN when none differs).
    only : dict
        Columns found in one table only, by folder.
    """

    name: str
    rows: int
    missing: str | None = None
    columns: pd.DataFrame = field(default_factory=pd.DataFrame)
    only: dict = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        """Same rows and columns, every value within the tolerance."""
        return (self.missing is None and not self.only
                and not (len(self.columns) and self.columns["beyond"].any()))


def _column(a, b, rtol, atol) -> tuple[int, int, float]:
    """``(differ, beyond, max_rel)`` of two aligned columns."""
    if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b) \
            and not pd.api.types.is_bool_dtype(a) and not pd.api.types.is_bool_dtype(b):
        x = a.to_numpy(dtype=np.float64, na_value=np.nan)
        y = b.to_numpy(dtype=np.float64, na_value=np.nan)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        with np.errstate(invalid="ignore"):
            gap = np.abs(x - y)
            scale = np.maximum(np.abs(x), np.abs(y))
            beyond = ~same & ~(gap <= atol + rtol * scale)
            rel = gap[~same] / scale[~same]
        finite = rel[np.isfinite(rel)]
        return int((~same).sum()), int(beyond.sum()), float(finite.max()) if len(finite) else np.nan
    differ = int((a.astype("string").fillna("<NA>").to_numpy()
                  != b.astype("string").fillna("<NA>").to_numpy()).sum())
    return differ, differ, np.nan


def _table(name, file, run, reference, rtol, atol) -> TableDiff:
    """The :class:`TableDiff` of the table ``file`` of the folders ``run`` and ``reference``."""
    for folder in (run, reference):
        if not (folder / file).is_file():
            return TableDiff(name, 0, missing=f"not in {folder}")
    a, b = pd.read_parquet(run / file), pd.read_parquet(reference / file)
    if len(a) != len(b):
        return TableDiff(name, len(a), missing=f"{len(a)} rows against {len(b)}")
    common = [c for c in a.columns if c in b.columns]
    only = {str(folder): cols for folder, cols in (
        (run, [c for c in a.columns if c not in b.columns]),
        (reference, [c for c in b.columns if c not in a.columns])) if cols}
    rows = [(c, *_column(a[c].reset_index(drop=True), b[c].reset_index(drop=True), rtol, atol))
            for c in common]
    return TableDiff(name, len(a), columns=pd.DataFrame(
        rows, columns=["column", "differ", "beyond", "max_rel"]), only=only)


def compare(run, reference, rtol=1e-8, atol=0.0) -> list[TableDiff]:
    """Compare the tables of the output folders ``run`` and ``reference``.

    Parameters
    ----------
    run, reference : path
        Output folders of a study (each holding ``final.parquet``).
    rtol, atol : float
        The tolerance: a number agrees when ``|a - b| <= atol + rtol max(|a|, |b|)``.

    Returns
    -------
    list of TableDiff
        ``final``, ``history``, then the analysis tables of either folder, by name.

    Raises
    ------
    ValueError
        A folder without ``final.parquet``, or a negative tolerance.
    """
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"tolerances must be >= 0, got rtol {rtol!r}, atol {atol!r}")
    run, reference = Path(run), Path(reference)
    for folder in (run, reference):
        if not (folder / "final.parquet").is_file():
            raise ValueError(f"no tables in {folder} (no final.parquet)")
    names = sorted({p.stem for folder in (run, reference)
                    for p in (folder / "tables").glob("*.parquet")})
    files = [("final", "final.parquet"), ("history", "history.parquet"),
             *((f"tables/{n}", f"tables/{n}.parquet") for n in names)]
    return [_table(name, file, run, reference, rtol, atol) for name, file in files]


def _line(diff) -> str:
    """One table's verdict, in words."""
    if diff.missing is not None:
        return f"{diff.name}: not compared ({diff.missing})"
    cols = diff.columns
    identical = cols[cols["differ"] == 0]
    rounding = cols[(cols["differ"] > 0) & (cols["beyond"] == 0)]
    beyond = cols[cols["beyond"] > 0]
    parts = [f"{diff.name}: {diff.rows} rows, {len(cols)} columns: {len(identical)} identical"]
    if len(rounding):
        parts.append(f"{len(rounding)} within tolerance ({int(rounding['differ'].sum())} values "
                     f"differ, max relative {rounding['max_rel'].max():.2g})")
    if len(beyond):
        parts.append("beyond tolerance: " + ", ".join(
            f"{r.column} {r.beyond} rows" + ("" if np.isnan(r.max_rel) else
                                              f" (max relative {r.max_rel:.2g})")
            for r in beyond.itertuples()))
    parts += [f"columns only in {folder}: {', '.join(c)}" for folder, c in diff.only.items()]
    return "; ".join(parts)


def summary(diffs, run, reference, rtol=1e-8, atol=0.0) -> str:
    """The comparison in lines: the tolerance, one line per table, then the verdict."""
    bad = [d.name for d in diffs if not d.agrees]
    verdict = (f"agree within tolerance: all {len(diffs)} tables" if not bad else
               f"agree within tolerance: {len(diffs) - len(bad)} of {len(diffs)} tables; "
               f"beyond tolerance or not comparable: {', '.join(bad)}")
    return "\n".join([f"comparing {run} with {reference}",
                      f"tolerance: |a - b| <= {atol:g} + {rtol:g} max(|a|, |b|) "
                      "(NaN agrees with NaN)",
                      *map(_line, diffs), verdict])
