"""Statistics on tables of endpoints, one module a job.

- :mod:`~dlnmc.stats.filters`: which trajectories enter which statistic (one label each);
- :mod:`~dlnmc.stats.nuclear`: the minimum nuclear norm completion and the lowest completion
  rank (the norm and rank hypotheses' reference points);
- :mod:`~dlnmc.stats.descriptors`: per-trajectory spectrum, norms, distances, volumes;
- :mod:`~dlnmc.stats.fit`: goodness of fit on a solution curve;
- :mod:`~dlnmc.stats.clustering`: clusters of minimizers with a size, symmetry classes;
- :mod:`~dlnmc.stats.families`: the registry of problem families and their volume tests;
- :mod:`~dlnmc.stats.verdicts`: the verdict table of the norm, rank and volume hypotheses.

``stats`` adds columns to the engine's ``final`` table and returns tidy tables; it never
simulates.
"""
from dlnmc.stats.clustering import clusters
from dlnmc.stats.descriptors import describe
from dlnmc.stats.filters import (EXCLUSIONS, ON_CURVE_TOL, STATUS_LABELS, endpoint_status,
                                 status_counts, usable_rows)
from dlnmc.stats.fit import compare
from dlnmc.stats.nuclear import NuclearCompletion, min_nuclear_norm_completion
from dlnmc.stats.verdicts import hypotheses

__all__ = [
    "NuclearCompletion", "min_nuclear_norm_completion", "usable_rows", "endpoint_status",
    "status_counts", "ON_CURVE_TOL", "STATUS_LABELS", "EXCLUSIONS", "describe", "compare", "clusters",
    "hypotheses",
]
