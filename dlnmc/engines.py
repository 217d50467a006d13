"""The registry of engines: the functions a study's cells run, by name.

An engine simulates a batch of trajectories of one problem and returns a
:class:`~dlnmc.results.SimulationResult`.  The runner calls every engine the same way: with the
keyword arguments :data:`RUNNER_SETS` (the problem, which runs, the seed, threads, progress)
and a cell's own parameters (``depth``, ``lr``, ...).  Each entry names its function by dotted
path, imported on first use (the kernels load only when a cell runs), so that the studies, the
runner, TOML studies (:mod:`dlnmc.config`) and the command line share this one table.

Adding an engine is one entry of :data:`ENGINES`.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["Engine", "ENGINES", "RUNNER_SETS"]

RUNNER_SETS = ("problem", "runs", "seed", "first_run", "n_threads", "progress")
"""The keyword arguments the runner gives every engine call; a cell's parameters may not set
them."""


@dataclass(frozen=True)
class Engine:
    """One engine of the registry.

    Attributes
    ----------
    name : str
        Its name in a cell (``Cell(engine=name)``) and in a TOML grid (``engine = name``).
    function : str
        Dotted path of the function, ``"package.module.function"``, imported by :meth:`load`.
    summary : str
        One line for ``dlnmc list``.
    runner_sets : tuple of str
        The function's parameters that the runner sets for each chunk (:data:`RUNNER_SETS`).
    """

    name: str
    function: str
    summary: str
    runner_sets: tuple = RUNNER_SETS

    def load(self):
        """The engine function (imported now if it was not yet)."""
        module, _, name = self.function.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def parameters(self) -> tuple[str, ...]:
        """The parameters a cell may set: the function's, less :attr:`runner_sets`."""
        return tuple(name for name in inspect.signature(self.load()).parameters
                     if name not in self.runner_sets)

    def check(self, params):
        """Check a cell's parameter names (not their values, which the engine checks).

        Raises
        ------
        ValueError
            A name the engine does not take (all of them named).
        TypeError
            A required parameter is missing.
        """
        signature = inspect.signature(self.load())
        unknown = sorted(set(params) - set(signature.parameters))
        if unknown:
            raise ValueError(f"unknown {self.name} engine parameter(s) {unknown}")
        signature.bind(**dict.fromkeys(self.runner_sets), **params)

    def run(self, params, **runner):
        """Call the engine with a cell's ``params`` and the runner's arguments ``runner``
        (exactly :attr:`runner_sets`)."""
        return self.load()(**runner, **params)


ENGINES = MappingProxyType({engine.name: engine for engine in (
    Engine("gd", "dlnmc.simulate.simulate",
           "gradient descent on the factors W_1 .. W_N (finite depth; noisy with temperature > 0)"),
    Engine("flow", "dlnmc.flow.simulate_flow",
           "the end-to-end flow of W = W_N ... W_1 (finite depth or depth = inf; Langevin "
           "with temperature > 0)"),
)})
"""Engines by name: ``"gd"`` (:func:`dlnmc.simulate`), ``"flow"``
(:func:`dlnmc.flow.simulate_flow`)."""
