"""dlnmc: Monte Carlo studies of implicit regularization in deep linear networks.

Matrix completion by gradient descent on a deep factorization W = W_N ... W_1, run for large
batches of trajectories, with the endpoints handed to pandas as tidy tables.
"""
__version__ = "0.1.0"

from dlnmc.problems import (  # noqa: E402
    CATALOGUE,
    CompletionProblem,
    diagonal_2x2,
    diagonal_3x3,
    random_low_rank,
    razin_cohen_2x2,
)
from dlnmc.results import SimulationResult, read_result  # noqa: E402
from dlnmc.simulate import simulate  # noqa: E402

__all__ = [
    "CATALOGUE", "CompletionProblem", "SimulationResult", "diagonal_2x2", "diagonal_3x3",
    "random_low_rank", "razin_cohen_2x2", "read_result", "simulate",
]
