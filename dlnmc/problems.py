"""Matrix completion problems and the catalogue of published ones.

A problem is a shape ``(rows, cols)`` and a set of observed entries ``{(i, j): b_ij}``;
the loss is l(W) = 1/2 sum_{(i,j) in Omega} (W_ij - b_ij)^2 (mathematics.md section 1.1).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

__all__ = [
    "CompletionProblem",
    "razin_cohen_2x2",
    "diagonal_2x2",
    "diagonal_3x3",
    "random_low_rank",
    "CATALOGUE",
]


@dataclass(frozen=True, eq=False)
class CompletionProblem:
    """A matrix completion problem: recover a ``rows x cols`` matrix from observed entries.

    Parameters
    ----------
    shape : tuple of int
        ``(rows, cols)``, both positive.
    entries : mapping or iterable of pairs
        ``{(i, j): value}`` (or ``((i, j), value)`` pairs) with 0-based integer indices; at
        least one entry, no index twice, all values finite.
    name : str, optional
        A label carried into result tables and provenance.
    ground_truth : ndarray, optional
        The matrix the observations came from, when there is one (``random_low_rank``).

    Raises
    ------
    ValueError
        Non-positive shape, index out of range, duplicate index, non-finite value, or no entry.

    Notes
    -----
    The loss and gradient are those of mathematics.md section 1.1:
    l(W) = 1/2 sum_Omega (W_ij - b_ij)^2, grad l(W) = P_Omega(W - b).
    """

    shape: tuple[int, int]
    entries: Mapping[tuple[int, int], float]
    name: str = "custom"
    ground_truth: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        shape = tuple(self.shape)
        if len(shape) != 2 or not all(isinstance(n, (int, np.integer)) for n in shape):
            raise ValueError(f"shape must be two integers (rows, cols), got {self.shape!r}")
        rows, cols = (int(n) for n in shape)
        if rows <= 0 or cols <= 0:
            raise ValueError(f"shape must be positive, got {shape}")
        try:
            pairs = list(self.entries.items() if isinstance(self.entries, Mapping) else self.entries)
            pairs = [(key, value) for key, value in pairs]
        except (TypeError, ValueError):
            raise ValueError("entries must be a mapping {(i, j): value} or ((i, j), value) pairs") from None
        if not pairs:
            raise ValueError("a completion problem needs at least one observed entry")
        clean = {}
        for key, value in pairs:
            try:
                i, j = (operator.index(k) for k in key)
            except (TypeError, ValueError):
                raise ValueError(f"entry index must be a pair (i, j), got {key!r}") from None
            if not (0 <= i < rows and 0 <= j < cols):
                raise ValueError(f"entry index {(i, j)} out of range for shape {(rows, cols)}")
            if (i, j) in clean:
                raise ValueError(f"duplicate entry index {(i, j)}")
            value = float(value)
            if not np.isfinite(value):
                raise ValueError(f"entry {(i, j)} has non-finite value {value}")
            clean[(i, j)] = value
        object.__setattr__(self, "shape", (rows, cols))
        object.__setattr__(self, "entries", MappingProxyType(dict(sorted(clean.items()))))
        if self.ground_truth is not None:
            truth = np.array(self.ground_truth, dtype=np.float64)
            if truth.shape != (rows, cols):
                raise ValueError(f"ground_truth has shape {truth.shape}, expected {(rows, cols)}")
            truth.setflags(write=False)
            object.__setattr__(self, "ground_truth", truth)

    def __reduce__(self):
        """Pickle by the constructor's arguments (the entries are a read-only mapping proxy,
        which does not pickle), so problems travel to worker processes."""
        return type(self), (self.shape, dict(self.entries), self.name, self.ground_truth)

    @classmethod
    def from_mask(cls, mask, values, name="custom", ground_truth=None) -> "CompletionProblem":
        """Build a problem from a boolean ``mask`` and a matrix of ``values`` of the same shape.

        Only the values where ``mask`` is true are read (the others may be NaN).
        """
        mask = np.asarray(mask)
        values = np.asarray(values, dtype=np.float64)
        if mask.ndim != 2 or mask.dtype != bool:
            raise ValueError("mask must be a 2-D boolean array")
        if values.shape != mask.shape:
            raise ValueError(f"values has shape {values.shape}, mask has {mask.shape}")
        entries = {(int(i), int(j)): values[i, j] for i, j in zip(*np.nonzero(mask))}
        return cls(mask.shape, entries, name=name, ground_truth=ground_truth)

    # -- views used by the engine and the analysis --------------------------------------
    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]

    @property
    def is_square(self) -> bool:
        return self.shape[0] == self.shape[1]

    @property
    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the observed entries (sorted), as int64 arrays."""
        keys = np.array(list(self.entries), dtype=np.int64).reshape(-1, 2)
        return keys[:, 0].copy(), keys[:, 1].copy()

    @property
    def values(self) -> np.ndarray:
        """Observed values b, in the order of :attr:`indices`."""
        return np.fromiter(self.entries.values(), dtype=np.float64, count=len(self.entries))

    @property
    def mask(self) -> np.ndarray:
        """Boolean ``rows x cols`` mask of Omega."""
        m = np.zeros(self.shape, dtype=bool)
        m[self.indices] = True
        return m

    @property
    def targets(self) -> np.ndarray:
        """``rows x cols`` matrix holding b on Omega and 0 elsewhere."""
        b = np.zeros(self.shape)
        b[self.indices] = self.values
        return b

    def loss(self, W) -> np.ndarray:
        """l(W) = 1/2 sum_Omega (W_ij - b_ij)^2 for W of shape ``(..., rows, cols)``."""
        W = np.asarray(W, dtype=np.float64)
        i, j = self.indices
        return 0.5 * np.sum((W[..., i, j] - self.values) ** 2, axis=-1)

    def gradient(self, W) -> np.ndarray:
        """grad l(W) = P_Omega(W - b), same shape as W."""
        W = np.asarray(W, dtype=np.float64)
        return self.mask * (W - self.targets)

    def describe(self) -> dict:
        """JSON-able description, stored with every result's provenance."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "entries": [[i, j, v] for (i, j), v in self.entries.items()],
        }

    def __repr__(self):
        return f"CompletionProblem(name={self.name!r}, shape={self.shape}, observed={len(self.entries)})"


def razin_cohen_2x2() -> CompletionProblem:
    """Razin & Cohen (2020), section 3: observe w12 = 1, w21 = 1, w22 = 0; w11 unobserved.

    Every solution has det W = -1; with det W(0) > 0 gradient descent drives |w11| -> inf.
    """
    return CompletionProblem((2, 2), {(0, 1): 1.0, (1, 0): 1.0, (1, 1): 0.0}, name="razin_cohen_2x2")


def diagonal_2x2() -> CompletionProblem:
    """Cohen, Menon & Veraszto (2023) / Menon (2024) problem 14.1: observe w11 = w22 = 1.

    Solutions are [[1, a], [b, 1]]; the rank-1 ones form the hyperbola ab = 1.
    """
    return CompletionProblem((2, 2), {(0, 0): 1.0, (1, 1): 1.0}, name="diagonal_2x2")


def diagonal_3x3(values=(1.0, 1.0, 1.0)) -> CompletionProblem:
    """The 3x3 task of the lecture notes: observe the diagonal, w_ii = values[i]."""
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"diagonal_3x3 needs three values, got {len(values)}")
    return CompletionProblem((3, 3), {(i, i): v for i, v in enumerate(values)}, name="diagonal_3x3")


def random_low_rank(rows, cols, rank, n_observed, seed=0) -> CompletionProblem:
    """Random rank-``rank`` ground truth U V^T, scaled to RMS entry 1, with ``n_observed``
    entries observed uniformly without replacement (Arora, Cohen, Hu & Luo 2019, section 5).

    The ground truth is kept on ``problem.ground_truth``.
    """
    rows, cols, rank, n_observed = int(rows), int(cols), int(rank), int(n_observed)
    if rows <= 0 or cols <= 0:
        raise ValueError(f"shape must be positive, got {(rows, cols)}")
    if not 1 <= rank <= min(rows, cols):
        raise ValueError(f"rank must be in [1, {min(rows, cols)}], got {rank}")
    if not 1 <= n_observed <= rows * cols:
        raise ValueError(f"n_observed must be in [1, {rows * cols}], got {n_observed}")
    rng = np.random.default_rng([int(seed), rows, cols, rank, n_observed])
    truth = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))
    truth /= np.sqrt(np.mean(truth**2))
    flat = rng.choice(rows * cols, size=n_observed, replace=False)
    mask = np.zeros(rows * cols, dtype=bool)
    mask[flat] = True
    return CompletionProblem.from_mask(
        mask.reshape(rows, cols), truth, name=f"random_low_rank_{rows}x{cols}_r{rank}_m{n_observed}",
        ground_truth=truth,
    )


CATALOGUE = {
    "razin_cohen_2x2": razin_cohen_2x2,
    "diagonal_2x2": diagonal_2x2,
    "diagonal_3x3": diagonal_3x3,
    "random_low_rank": random_low_rank,
}
"""Problem constructors by name (used by study configs and the CLI)."""
