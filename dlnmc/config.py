"""Studies written as TOML files: ``dlnmc run <study>.toml`` runs a grid of cells on one problem
and gives it the standard analysis (:mod:`dlnmc.standard`), with no Python written.

A file names the problem, the grid, the runs and the seed::

    name = "hand_3x3"                  # optional: the output folder's name (default: file stem)
    description = "..."                # optional: the report's first paragraph
    runs = 200                         # trajectories per cell
    quick_runs = 20                    # optional: per cell with --quick (default min(runs, 20))
    seed = 0                           # optional: the study seed (default 0)

    [problem]                          # shape and observed entries [row, column, value] ...
    shape = [3, 3]
    entries = [[0, 0, 1.0], [0, 1, 2.0], [1, 1, 1.0], [2, 0, -1.0], [2, 2, 0.5]]
    # ... or a catalogue problem: catalogue = "diagonal_3x3", args = { values = [1, 1, 0] }

    [grid]                             # engine parameters; every list is an axis
    engine = "gd"
    depth = [2, 3]
    lr = 0.05
    init_scale = [1e-3, 1e-2]

Entries are 0-based.  The grid is the product of its lists, in the order written; a parameter
whose value is itself a list is written as a list of lists (``widths = [[4, 4]]``).  Several
grids (``[[grid]]`` tables) give the union of their products, e.g. one per engine.  A cell's
key names its engine and the parameters that tell cells apart (``gd_depth=2_lr=0.1``).  A
grid's keys are ``engine`` and that engine's own parameters (the registry,
:data:`dlnmc.engines.ENGINES`); the runner sets the others.  :func:`load` checks every key
and value it can before any work and names the key of the first problem found.
"""
from __future__ import annotations

import itertools
import math
import re
import tomllib
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import pandas as pd

from dlnmc import standard
from dlnmc.engines import ENGINES
from dlnmc.problems import CATALOGUE, CompletionProblem
from dlnmc.study import Cell, make_problem

__all__ = ["ConfigStudy", "load"]

KEYS = ("name", "description", "runs", "quick_runs", "seed", "problem", "grid")
"""The top-level keys of a TOML study."""
QUICK_RUNS = 20
"""Default trajectories per cell of the quick grid (at most ``runs``)."""


class ConfigError(ValueError):
    """A TOML study that cannot be run; the message names the file and the key."""


@dataclass(frozen=True, eq=False)
class ConfigStudy:
    """A study read from a TOML file: the attributes of a study module (:mod:`dlnmc.study`).

    Attributes
    ----------
    NAME, DESCRIPTION : str
    SEED : int
        The study seed when a run gives none.
    problem : str or CompletionProblem
        A catalogue name (with ``problem_args``) or the inline problem, as in a
        :class:`~dlnmc.study.Cell`.
    problem_args : dict
    grid : tuple of (str, str, dict)
        The cells: key, engine and parameters, in grid order.
    axes : DataFrame
        One row per cell: ``cell`` and the parameters that vary between cells (the key of
        every analysis table).
    runs, quick_runs : int
        Trajectories per cell of the full and of the quick grid.
    """

    NAME: str
    DESCRIPTION: str
    SEED: int
    problem: str | CompletionProblem
    problem_args: dict
    grid: tuple
    axes: pd.DataFrame
    runs: int
    quick_runs: int

    def cells(self, quick) -> list[Cell]:
        """The grid; ``quick``: :attr:`quick_runs` trajectories per cell."""
        return [Cell(key, self.problem, self.problem_args, engine, params,
                     self.quick_runs if quick else self.runs)
                for key, engine, params in self.grid]

    def make_problem(self) -> CompletionProblem:
        """The study's problem (:func:`dlnmc.study.make_problem`)."""
        return make_problem(self.problem, self.problem_args)

    def analyse(self, final, history) -> dict[str, pd.DataFrame]:
        """:func:`dlnmc.standard.analyse`."""
        return standard.analyse(final, self.make_problem(), self.axes)

    def figures(self, final, history, tables, directory) -> list:
        """:func:`dlnmc.standard.figures`."""
        return standard.figures(final, history, tables, directory, self.make_problem())

    def findings(self, tables) -> list[str]:
        """:func:`dlnmc.standard.findings`."""
        return standard.findings(tables)


def _fail(where, message):
    raise ConfigError(f"{where}: {message}" if where else message)


def _check_values(value, where):
    """Refuse NaN and values TOML has but a study has no use for (dates, times)."""
    if isinstance(value, float) and math.isnan(value):
        _fail(where, "NaN is not a value here")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_values(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for k, item in enumerate(value):
            _check_values(item, f"{where}[{k}]")
    elif not isinstance(value, (str, int, float, bool)):
        _fail(where, f"must be a number, a string, a boolean, a list or a table, "
                     f"got {type(value).__name__} {value!r}")


def _integer(doc, key, low, default=None):
    value = doc.get(key, default)
    if value is None:
        _fail(key, f"missing: an integer >= {low}")
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(key, f"must be an integer >= {low}, got {value!r}")
    return value


def _text(doc, key, default):
    value = doc.get(key, default)
    if not isinstance(value, str):
        _fail(key, f"must be a string, got {value!r}")
    return value


def _unknown(table, known, where):
    unknown = sorted(set(table) - set(known))
    if unknown:
        _fail(where, f"unknown key{'s' * (len(unknown) > 1)} "
                                   f"{', '.join(map(repr, unknown))} (known: {', '.join(known)})")


def _entry(entry, k, shape):
    """The observed entry ``problem.entries[k]`` as ``((i, j), value)``."""
    where = f"problem.entries[{k}]"
    if not (isinstance(entry, list) and len(entry) == 3):
        _fail(where, f"must be [row, column, value], got {entry!r}")
    i, j, value = entry
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (i, j)):
        _fail(where, f"row and column must be integers, got {entry!r}")
    if not (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)):
        _fail(where, f"value must be a finite number, got {value!r}")
    if not (0 <= i < shape[0] and 0 <= j < shape[1]):
        _fail(where, f"entry ({i}, {j}) is outside the shape {shape[0]} x {shape[1]} "
                     "(entries are 0-based)")
    return (i, j), float(value)


def _problem(doc, name) -> tuple[str | CompletionProblem, dict]:
    """The problem of the study and the catalogue constructor's arguments."""
    table = doc.get("problem")
    if table is None:
        _fail("problem", "missing: a catalogue name, or a table with shape and entries")
    if isinstance(table, str):
        table = {"catalogue": table}
    if not isinstance(table, dict):
        _fail("problem", f"must be a catalogue name or a table, got {table!r}")
    if "catalogue" in table:
        _unknown(table, ("catalogue", "args"), "problem")
        catalogue, args = table["catalogue"], table.get("args", {})
        if catalogue not in CATALOGUE:
            _fail("problem.catalogue", f"unknown problem {catalogue!r} (known: "
                                       f"{', '.join(CATALOGUE)})")
        if not isinstance(args, dict):
            _fail("problem.args", f"must be a table of the constructor's arguments, got {args!r}")
        try:
            CATALOGUE[catalogue](**args)
        except (TypeError, ValueError) as err:
            _fail("problem.args", str(err))
        return catalogue, args
    _unknown(table, ("shape", "entries", "name"), "problem")
    shape, entries = table.get("shape"), table.get("entries")
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
        _fail("problem.shape", f"must be [rows, columns], two integers >= 1, got {shape!r}")
    if not (isinstance(entries, list) and entries):
        _fail("problem.entries", f"must be a non-empty list of [row, column, value], "
                                 f"got {entries!r}")
    pairs = [_entry(entry, k, shape) for k, entry in enumerate(entries)]
    seen = {}
    for k, (index, _) in enumerate(pairs):
        if index in seen:
            _fail(f"problem.entries[{k}]", f"entry {index} is observed twice (also "
                                           f"problem.entries[{seen[index]}])")
        seen[index] = k
    return CompletionProblem(tuple(shape), pairs, name=_text(table, "name", name)), {}


def _blocks(doc):
    """The grid's tables with their names in messages (``grid`` or ``grid[k]``)."""
    grid = doc.get("grid")
    if isinstance(grid, dict):
        return [("grid", grid)]
    if isinstance(grid, list) and grid and all(isinstance(b, dict) for b in grid):
        return [(f"grid[{k}]", block) for k, block in enumerate(grid)]
    _fail("grid", "missing or not a table ([grid]) or a list of tables ([[grid]])")


def _expand(where, block) -> list[tuple[str, dict]]:
    """The cells of one grid table: ``(engine, params)`` for each point of the product."""
    axes = {key: value if isinstance(value, list) else [value] for key, value in block.items()}
    for key, values in axes.items():
        if not values:
            _fail(f"{where}.{key}", "an empty list gives no cells")
        if any(isinstance(value, dict) for value in values):
            _fail(f"{where}.{key}", "must be a value or a list of values, not a table")
    engines = axes.pop("engine", ["gd"])
    for engine in engines:
        if not isinstance(engine, str) or engine not in ENGINES:
            _fail(f"{where}.engine", f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
        taken = ENGINES[engine].parameters()
        for key in axes:
            if key in ENGINES[engine].runner_sets:
                _fail(f"{where}.{key}", "set by the runner (the study's runs and seed are "
                                        "top-level keys)")
            if key not in taken:
                _fail(f"{where}.{key}", f"not a parameter of the {engine} engine (its "
                                        f"parameters: {', '.join(taken)})")
    return [(engine, dict(zip(axes, point)))
            for engine in engines for point in itertools.product(*axes.values())]


def _text_of(value) -> str:
    """A grid value in a cell key."""
    if isinstance(value, list):
        return "-".join(map(_text_of, value))
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def _grid(doc) -> tuple[tuple, pd.DataFrame]:
    """The cells ``(key, engine, params)`` and the table of their varying parameters."""
    points = [point for where, block in _blocks(doc) for point in _expand(where, block)]
    rows = [{"engine": engine, **params} for engine, params in points]
    names = list(dict.fromkeys(name for row in rows for name in row))
    varying = [name for name in names if name == "engine" or _varies(name, rows)]
    grid, seen = [], {}
    for k, ((engine, params), row) in enumerate(zip(points, rows)):
        key = "_".join([engine, *(f"{name}={_text_of(row[name])}" for name in varying
                                  if name != "engine" and name in row)])
        key = re.sub(r"[^A-Za-z0-9._=-]", "-", key)
        if key in seen:
            _fail("grid", f"cell {key} appears twice (points {seen[key]} and {k} of the grid)")
        seen[key] = k
        grid.append((key, engine, params))
    axes = pd.DataFrame({"cell": [key for key, _, _ in grid],
                         **{name: _column([row.get(name) for row in rows]) for name in varying}})
    return tuple(grid), axes


def _varies(name, rows) -> bool:
    """Whether the parameter ``name`` tells cells apart: it takes several values, or cells of
    one engine differ in setting it (a parameter of one engine only does not vary)."""
    having = [row for row in rows if name in row]
    engines = {row["engine"] for row in having}
    return (len({repr(row[name]) for row in having}) > 1
            or any(row["engine"] in engines for row in rows if name not in row))


def _column(values) -> list:
    """A column of the axes table: numbers stay numbers; anything else (lists, mixed types, a
    parameter absent from some cells) becomes text, so that every table can key on it."""
    if all(isinstance(v, Real) and not isinstance(v, bool) for v in values):
        return values
    return ["" if v is None else _text_of(v) for v in values]


def load(path) -> ConfigStudy:
    """Read a TOML study (format: this module's docstring).

    Raises
    ------
    ValueError
        The file is missing or no TOML, or a key is unknown, missing or has a wrong value:
        the message names the file and the key (``grid.lr``, ``problem.entries[3]``).
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"study file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a TOML file: {err}") from None
    try:
        _check_values(doc, "")
        _unknown(doc, KEYS, "")
        name = _text(doc, "name", path.stem)
        runs = _integer(doc, "runs", 1)
        problem, args = _problem(doc, name)
        grid, axes = _grid(doc)
        return ConfigStudy(
            NAME=name, DESCRIPTION=_text(doc, "description", f"The study {path.name}: the grid "
                                         "of its cells on one problem, standard analysis."),
            SEED=_integer(doc, "seed", 0, 0), problem=problem, problem_args=args, grid=grid,
            axes=axes, runs=runs, quick_runs=_integer(doc, "quick_runs", 1, min(runs, QUICK_RUNS)))
    except ConfigError as err:
        raise ValueError(f"{path}: {err}") from None
