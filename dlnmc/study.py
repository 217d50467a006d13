"""What a study is: a grid of cells, each a batch of trajectories of one engine on one problem;
where studies are found and how one is loaded.

A study is a Python module (a file of the repository's ``studies/``, shipped with the package
as ``dlnmc.studies``, or any ``.py`` path), a TOML file (:mod:`dlnmc.config`), or any object
with these attributes:

``NAME`` : str
    Its name; outputs go to ``runs/<NAME>/`` by default (:func:`default_out`).
``DESCRIPTION`` : str
    One paragraph for ``dlnmc list`` and the report.
``cells(quick: bool) -> list[Cell]``
    The grid.  ``quick=True`` gives a reduced grid that finishes in about a minute on 2 cores.
``analyse(final, history) -> dict[str, DataFrame]``
    Named tidy summary tables computed from the merged tables (the statistics layer).
``figures(final, history, tables, directory) -> list[Path]``
    Draws the study's figures (PNG) into ``directory`` from the tables; computes nothing new.

and optionally ``SEED`` (int: the study seed when a run gives none; default 0) and
``findings(tables) -> list[str]`` (sentences that lead its report).

The runner (``dlnmc.runner``) turns the cells into chunks, runs them, and merges the parts
into ``final.parquet`` / ``history.parquet``, whose rows carry the columns ``study``,
``cell`` and the cell's ``labels`` besides the engine's own columns.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from dlnmc.engines import ENGINES
from dlnmc.problems import CATALOGUE, CompletionProblem

__all__ = ["Cell", "ENGINES", "STUDY_FOLDERS", "DEFAULT_OUT", "make_problem", "jsonable",
           "default_out", "studies_dir", "list_studies", "read_header", "load_study"]

STUDY_FOLDERS = (Path(__file__).resolve().parent / "studies",
                 Path(__file__).resolve().parent.parent / "studies")
"""Where studies are looked up by name, the first folder that exists: the studies shipped
inside an installed package (``dlnmc/studies``), else the repository's ``studies/`` next to
the source tree (a checkout or an editable install)."""

DEFAULT_OUT = Path("runs")
"""Where a study's outputs go by default, relative to the current folder (the repository
ignores it; its committed reference outputs under ``data/`` are written only with an explicit
``--out``)."""

_STUDY_ATTRS = {"NAME": str, "DESCRIPTION": str, "cells": callable, "analyse": callable,
                "figures": callable}


def jsonable(value):
    """``value`` as plain JSON types (tuples -> lists, NumPy scalars/arrays -> Python).

    Raises
    ------
    TypeError
        Something JSON cannot hold, named by its type.
    """
    def default(obj):
        if isinstance(obj, (np.ndarray, np.generic)):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
    return json.loads(json.dumps(value, default=default, allow_nan=True))


def make_problem(problem, args=None) -> CompletionProblem:
    """The problem a cell names.

    Parameters
    ----------
    problem : str, CompletionProblem or mapping
        A name in :data:`dlnmc.CATALOGUE` (called with ``args``), a problem (returned as is), or
        a problem's description ``{"name", "shape", "entries": [[i, j, value], ...]}``
        (:meth:`CompletionProblem.describe`, as cells and chunks store it), rebuilt.
    args : mapping, optional
        Keyword arguments of the catalogue constructor.

    Raises
    ------
    ValueError
        Unknown catalogue name (the known ones listed), or a description that is no problem.
    TypeError
        ``args`` the catalogue constructor does not take.
    """
    if isinstance(problem, CompletionProblem):
        return problem
    if isinstance(problem, Mapping):
        try:
            entries = {(i, j): value for i, j, value in problem["entries"]}
            return CompletionProblem(tuple(problem["shape"]), entries, name=problem["name"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a problem description ({err}): {dict(problem)!r}") from None
    if problem not in CATALOGUE:
        raise ValueError(f"unknown problem {problem!r} (known: {', '.join(CATALOGUE)})")
    return CATALOGUE[problem](**dict(args or {}))


@dataclass(frozen=True)
class Cell:
    """One point of a study's grid.

    Parameters
    ----------
    key : str
        Unique within the study, filesystem-safe (letters, digits, ``._-=``); names the
        cell's folder of parts and its ``cell`` column.
    problem : str or CompletionProblem
        A name in :data:`dlnmc.CATALOGUE`, or the problem itself (an inline problem: its
        shape and observed entries are part of every chunk's spec, so that a changed problem
        never reuses old parts).  Its description (:meth:`CompletionProblem.describe`, as the
        provenance stores it) is turned back into the problem.
    problem_args : mapping
        Keyword arguments of the catalogue constructor (catalogue names only).
    engine : str
        A name in :data:`ENGINES` (``"gd"``, ``"flow"``).
    params : mapping
        Keyword arguments of the engine (``depth``, ``lr``, ``init``, ``init_scale``,
        ``max_steps``, ``tol``, ``temperature``, ``checkpoints``, ...), without those the runner
        sets (:data:`dlnmc.engines.RUNNER_SETS`: ``problem``, ``runs``, ``seed``,
        ``first_run``, ``n_threads``, ``progress``).
    runs : int
        Trajectories in the cell at full size (run ids 0 .. runs - 1).
    labels : mapping
        Constant columns added to the cell's rows (e.g. ``{"setting": "lr 6e-3 init 1e-5 (b)"}``).
    """

    key: str
    problem: str | CompletionProblem
    problem_args: Mapping = field(default_factory=dict)
    engine: str = "gd"
    params: Mapping = field(default_factory=dict)
    runs: int = 1000
    labels: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9._=-]+", self.key):
            raise ValueError(f"cell key {self.key!r} must use letters, digits and ._-= only")
        if isinstance(self.problem, Mapping):
            object.__setattr__(self, "problem", make_problem(self.problem))
        if not isinstance(self.problem, (str, CompletionProblem)):
            raise ValueError(f"cell {self.key}: problem must be a catalogue name or a "
                             f"CompletionProblem, got {type(self.problem).__name__}")
        if isinstance(self.problem, CompletionProblem) and self.problem_args:
            raise ValueError(f"cell {self.key}: problem_args apply to catalogue names, not to a "
                             "CompletionProblem")
        if self.engine not in ENGINES:
            raise ValueError(f"cell {self.key}: engine must be one of {tuple(ENGINES)}, "
                             f"got {self.engine!r}")
        reserved = set(ENGINES[self.engine].runner_sets).intersection(self.params)
        if reserved:
            raise ValueError(f"cell {self.key}: params may not set {sorted(reserved)} "
                             "(the runner does)")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise ValueError(f"cell {self.key}: runs must be a positive integer, got {self.runs!r}")
        for name in ("problem_args", "params", "labels"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def problem_spec(self) -> str | dict:
        """The problem as chunks and the provenance store it: the catalogue name, or the inline
        problem's description (name, shape, observed entries)."""
        return self.problem if isinstance(self.problem, str) else self.problem.describe()

    def make_problem(self) -> CompletionProblem:
        """The cell's problem (see :func:`make_problem`)."""
        return make_problem(self.problem, self.problem_args)

    def spec(self) -> dict:
        """The cell as plain JSON data (the grid in the tables' provenance); ``Cell(**spec)``
        gives it back.

        Raises
        ------
        TypeError
            A parameter, argument or label JSON cannot hold.
        """
        return jsonable({"key": self.key, "problem": self.problem_spec,
                         "problem_args": dict(self.problem_args), "engine": self.engine,
                         "params": dict(self.params), "runs": self.runs,
                         "labels": dict(self.labels)})


# -- finding and loading studies ----------------------------------------------------------

def default_out(study, quick=False) -> Path:
    """``runs/<NAME>/`` (``runs/<NAME>-quick/`` for the quick grid) under the current folder,
    so a quick run never meets the full grid's parts."""
    return DEFAULT_OUT / (f"{study.NAME}-quick" if quick else study.NAME)


def studies_dir() -> Path | None:
    """The first folder of :data:`STUDY_FOLDERS` that exists (None: none does)."""
    return next((folder for folder in STUDY_FOLDERS if folder.is_dir()), None)


def list_studies() -> dict[str, Path]:
    """The study modules of :func:`studies_dir`, by name (none when there is no folder)."""
    folder = studies_dir()
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def read_header(path) -> tuple[str, str]:
    """``(NAME, DESCRIPTION)`` of a study module, read from its source when both are literal
    assignments (``dlnmc list`` then runs no study code and imports no engine), else by
    loading it."""
    found = {}
    for node in ast.parse(Path(path).read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in ("NAME", "DESCRIPTION")):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                break
    if all(isinstance(found.get(name), str) for name in ("NAME", "DESCRIPTION")):
        return found["NAME"], found["DESCRIPTION"]
    study = load_study(path)
    return study.NAME, study.DESCRIPTION


def _import(path):
    """The study module of the file ``path``."""
    module_name = f"_dlnmc_study_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _find(name_or_path):
    """The study a name or path names: a module, or a TOML study."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        from dlnmc import config

        return config.load(path)
    if path.suffix != ".py":
        folder = studies_dir()
        path = (folder or STUDY_FOLDERS[-1]) / f"{name_or_path}.py"
        if not path.is_file():
            known = ", ".join(list_studies()) or "none"
            raise ValueError(f"no study named {str(name_or_path)!r} in {path.parent} "
                             f"(known: {known})")
    elif not path.is_file():
        raise ValueError(f"study file {path} does not exist")
    return _import(path)


def load_study(study):
    """A study, checked: a study object as is, or the study a name or path names.

    Parameters
    ----------
    study : str, path or study object
        A name of :func:`list_studies`, a path to a ``.py`` study module or to a ``.toml``
        study (:func:`dlnmc.config.load`), or an object with the study attributes (a loaded
        module, a :class:`dlnmc.config.ConfigStudy`, ...).

    Raises
    ------
    ValueError
        No such study, or it lacks ``NAME``, ``DESCRIPTION``, ``cells``, ``analyse`` or
        ``figures``, or its ``NAME`` is no folder name.
    """
    where = f"study {study}"
    if isinstance(study, (str, os.PathLike)):
        study = _find(study)
    else:
        where = f"study {getattr(study, 'NAME', study)!r}"
    for attr, kind in _STUDY_ATTRS.items():
        value = getattr(study, attr, None)
        if not (callable(value) if kind is callable else isinstance(value, kind)):
            what = getattr(kind, "__name__", kind)
            raise ValueError(f"{where}: {attr} missing or not a {what}")
    if not Path(study.NAME).name == study.NAME or study.NAME in ("", ".", ".."):
        raise ValueError(f"{where}: NAME {study.NAME!r} must be usable as a folder name")
    return study
