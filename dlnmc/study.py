"""What a study is: a grid of cells, each a batch of trajectories of one engine on one problem.

A study is a Python module in ``studies/`` (or any path) with these module attributes:

``NAME`` : str
    Its name; outputs go to ``data/<NAME>/`` by default.
``DESCRIPTION`` : str
    One paragraph for ``dlnmc list`` and the report.
``cells(quick: bool) -> list[Cell]``
    The grid.  ``quick=True`` gives a reduced grid that finishes in about a minute on 2 cores.
``analyse(final, history) -> dict[str, DataFrame]``
    Named tidy summary tables computed from the merged tables (the statistics layer).
``figures(final, history, tables, directory) -> list[Path]``
    Draws the study's figures (PNG) into ``directory`` from the tables; computes nothing new.

The runner (``dlnmc.runner``) turns the cells into chunks, runs them, and merges the parts
into ``final.parquet`` / ``history.parquet``, whose rows carry the columns ``study``,
``cell`` and the cell's ``labels`` besides the engine's own columns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = ["Cell", "ENGINES"]

ENGINES = ("gd", "flow")
"""``"gd"``: :func:`dlnmc.simulate`; ``"flow"``: :func:`dlnmc.flow.simulate_flow`."""

_RESERVED = {"problem", "runs", "seed", "first_run", "n_threads", "progress"}


@dataclass(frozen=True)
class Cell:
    """One point of a study's grid.

    Parameters
    ----------
    key : str
        Unique within the study, filesystem-safe (letters, digits, ``._-=``); names the
        cell's folder of parts and its ``cell`` column.
    problem : str
        A name in :data:`dlnmc.CATALOGUE`.
    problem_args : mapping
        Keyword arguments of that catalogue constructor.
    engine : {"gd", "flow"}
    params : mapping
        Keyword arguments of the engine (``depth``, ``lr``, ``init``, ``init_scale``,
        ``max_steps``, ``tol``, ``temperature``, ``checkpoints``, ...), without ``problem``,
        ``runs``, ``seed``, ``first_run``, ``n_threads`` and ``progress``, which the runner sets.
    runs : int
        Trajectories in the cell at full size (run ids 0 .. runs - 1).
    labels : mapping
        Constant columns added to the cell's rows (e.g. ``{"setting": "lr 6e-3 init 1e-5 (b)"}``).
    """

    key: str
    problem: str
    problem_args: Mapping = field(default_factory=dict)
    engine: str = "gd"
    params: Mapping = field(default_factory=dict)
    runs: int = 1000
    labels: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9._=-]+", self.key):
            raise ValueError(f"cell key {self.key!r} must use letters, digits and ._-= only")
        if self.engine not in ENGINES:
            raise ValueError(f"cell {self.key}: engine must be one of {ENGINES}, got {self.engine!r}")
        reserved = _RESERVED.intersection(self.params)
        if reserved:
            raise ValueError(f"cell {self.key}: params may not set {sorted(reserved)} (the runner does)")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise ValueError(f"cell {self.key}: runs must be a positive integer, got {self.runs!r}")
        for name in ("problem_args", "params", "labels"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
