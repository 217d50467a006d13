"""dlnmc: Monte Carlo studies of implicit regularization in deep linear networks.

Matrix completion by gradient descent on a deep factorization W = W_N ... W_1, run for large
batches of trajectories, with the endpoints handed to pandas as tidy tables.

The public names are imported on first use, so that ``import dlnmc`` (and the command line's
``--help`` and ``list``) loads neither pandas nor the engines and their Numba kernels.
"""
import importlib
import sys
import types

__version__ = "0.1.0"

_PUBLIC = {
    "CATALOGUE": "dlnmc.problems", "CompletionProblem": "dlnmc.problems",
    "diagonal_2x2": "dlnmc.problems", "diagonal_3x3": "dlnmc.problems",
    "random_low_rank": "dlnmc.problems", "razin_cohen_2x2": "dlnmc.problems",
    "SimulationResult": "dlnmc.results", "read_result": "dlnmc.results",
    "simulate": "dlnmc.simulate",
}
"""Public name -> the module defining it."""

__all__ = sorted(_PUBLIC, key=str.lower)


class _Package(types.ModuleType):
    """The package's module type: a public name is imported when first looked up."""

    def __getattr__(self, name):
        if name not in _PUBLIC:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        setattr(self, name, value)
        return value

    def __setattr__(self, name, value):
        # Importing the module dlnmc.simulate binds it on the package under its own name; the
        # public dlnmc.simulate stays the engine function of that module.
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self):
        return sorted({*super().__dir__(), *_PUBLIC})


sys.modules[__name__].__class__ = _Package
