"""What every GD kernel is handed: the batch's :class:`Task` (the problem and the run settings,
the same for every trajectory) and its :class:`Batch` (per-trajectory state and outputs), and
the outcome codes every kernel writes.

A kernel module (``dlnmc/kernels/<name>.py``) supplies

``NAME`` : str
    Its name in the registry (:data:`dlnmc.kernels.KERNELS`) and in benchmark tables.
``fits(task) -> bool``
    Whether it runs this task.  It must depend on the task alone, never on the number of
    runs, so that a trajectory's result does not depend on how runs are split over calls.
``run(task, batch) -> None``
    Runs every trajectory of ``batch`` to its end and fills the batch's outputs; packing the
    factors into the kernel's own layout and back is the module's business.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Task", "Batch", "STATUSES", "CONVERGED", "MAX_STEPS", "DIVERGED",
           "DIVERGENCE_FACTOR", "OPTIMIZERS"]

STATUSES = ("converged", "max_steps", "diverged")
"""Trajectory outcomes by code: ``CONVERGED`` (loss <= tol), ``MAX_STEPS`` (budget spent),
``DIVERGED`` (W not finite, or loss above ``DIVERGENCE_FACTOR`` times max(1, initial loss))."""
CONVERGED, MAX_STEPS, DIVERGED = range(3)
DIVERGENCE_FACTOR = 1e12

OPTIMIZERS = ("gd", "rmsprop")
"""``"gd"``: plain GD, every factor stepped by ``lr`` times its gradient.  ``"rmsprop"``: one
adaptive step per trajectory, ``lr / (sqrt(v_hat) + RMSPROP_EPS)`` with v_hat the
bias-corrected exponential average (decay ``RMSPROP_DECAY``) of the squared gradient norm over
all factors (mathematics.md section 1.6)."""
RMSPROP_DECAY = 0.99
RMSPROP_EPS = 1e-4


@dataclass(frozen=True)
class Task:
    """One batch of GD trajectories on one problem, as the kernels see it.

    Attributes
    ----------
    dims : tuple of int
        Layer dimensions n_0, ..., n_N; factor W_p is ``dims[p] x dims[p - 1]`` and
        W = W_N ... W_1 is ``dims[N] x dims[0]``.
    obs : ndarray of int64
        Observed entries as sorted row-major flat indices into W.
    values : ndarray of float64
        Their targets b_ij, in the order of ``obs``.
    lr : float
        Step size.
    noise_std : float
        Standard deviation of the Gaussian noise added to every factor entry per step
        (0: plain GD); the n-th normal of run r's stream is ``rng.normal(keys[r], n)`` with
        n = step * (number of parameters) + parameter index.
    max_steps : int
    tol : float
        Stop as converged once loss <= tol (``-inf``: never).
    ckpt : ndarray of int64
        Sorted steps at which loss and W are recorded.
    optimizer : str
        One of :data:`OPTIMIZERS`.
    rmsprop_eps : float
        RMSprop's eps, added to the root of the averaged squared gradient norm of l.
    """

    dims: tuple
    obs: np.ndarray
    values: np.ndarray
    lr: float
    noise_std: float
    max_steps: int
    tol: float
    ckpt: np.ndarray
    optimizer: str = "gd"
    rmsprop_eps: float = RMSPROP_EPS

    @property
    def shape(self) -> tuple:
        """(rows, cols) of W."""
        return self.dims[-1], self.dims[0]

    @property
    def depth(self) -> int:
        return len(self.dims) - 1

    @property
    def sizes(self) -> list:
        """Entries of each factor, W_1 first."""
        return [a * b for a, b in zip(self.dims[1:], self.dims[:-1])]

    @property
    def offsets(self) -> np.ndarray:
        """Where each factor starts in a row of ``Batch.theta`` (int64)."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)


@dataclass
class Batch:
    """Per-trajectory state and outputs of one kernel call (row r: trajectory r).

    ``theta`` (runs x parameters) holds each run's factors W_1, ..., W_N, row-major one after
    another: the initial factors on entry, the final ones on return.  ``keys``: the noise
    streams.  Outputs: ``hist_loss`` (runs x checkpoints) and ``hist_w`` (runs x checkpoints x
    rows*cols; NaN where not reached), ``w_end`` (runs x rows*cols, row-major), ``steps``,
    ``loss``, ``status`` (codes of :data:`STATUSES`).
    """

    theta: np.ndarray
    keys: np.ndarray
    hist_loss: np.ndarray
    hist_w: np.ndarray
    w_end: np.ndarray
    steps: np.ndarray
    loss: np.ndarray
    status: np.ndarray

    @classmethod
    def allocate(cls, task: Task, theta: np.ndarray, keys: np.ndarray) -> "Batch":
        runs, size, C = theta.shape[0], task.shape[0] * task.shape[1], len(task.ckpt)
        return cls(theta, keys, np.full((runs, C), np.nan), np.full((runs, C, size), np.nan),
                   np.empty((runs, size)), np.empty(runs, dtype=np.int64), np.empty(runs),
                   np.empty(runs, dtype=np.int8))

    def rows(self, s: slice) -> "Batch":
        """The trajectories in ``s`` (views: a kernel filling them fills this batch)."""
        return Batch(*(getattr(self, f)[s] for f in self.__dataclass_fields__))
