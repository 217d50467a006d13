"""Tidy result tables: one row per trajectory (``final``), one per checkpoint (``history``),
the final factors in long form, and their parquet round trip with provenance in ``attrs``."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dlnmc.kernels.task import STATUSES

__all__ = ["SimulationResult", "read_result", "STATUSES", "entry_columns", "sv_columns",
           "spectral_columns", "effective_rank", "det_sign", "write_parquet", "versions"]



def entry_columns(shape) -> list[str]:
    """``w_<i>_<j>`` (0-based, row-major) for every entry of a ``rows x cols`` matrix."""
    return [f"w_{i}_{j}" for i in range(shape[0]) for j in range(shape[1])]


def sv_columns(shape) -> list[str]:
    """``sv_<k>`` for the min(rows, cols) singular values, descending."""
    return [f"sv_{k}" for k in range(min(shape))]


def effective_rank(sv) -> np.ndarray:
    """Effective rank exp(-sum p_i log p_i), p_i = s_i / sum s (Roy & Vetterli 2007), over
    the last axis of ``sv``; NaN where all singular values vanish or are not finite."""
    sv = np.asarray(sv, dtype=np.float64)
    total = sv.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = sv / total
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        out = np.exp(terms.sum(axis=-1))
    return np.where((total[..., 0] > 0) & np.isfinite(total[..., 0]), out, np.nan)


def spectral_columns(W) -> dict[str, np.ndarray]:
    """Singular values, effective rank and (square W) determinant of a batch ``(runs, d, d')``;
    rows with non-finite entries get NaN."""
    W = np.asarray(W, dtype=np.float64)
    ok = np.all(np.isfinite(W), axis=(-2, -1))
    k = min(W.shape[-2:])
    sv = np.full((W.shape[0], k), np.nan)
    if ok.any():
        sv[ok] = np.linalg.svd(W[ok], compute_uv=False)
    cols = {f"sv_{i}": sv[:, i] for i in range(k)}
    cols["erank"] = effective_rank(sv)
    if W.shape[-1] == W.shape[-2]:
        det = np.full(W.shape[0], np.nan)
        if ok.any():
            det[ok] = np.linalg.det(W[ok])
        cols["det"] = det
    return cols


def det_sign(table) -> np.ndarray:
    """Sign of det W per row of a result table: +1, -1, or 0 for det = 0. Where the engine
    carries log|det W| (the end-to-end flow's ``log_abs_det``, finite), a det that underflowed
    to +-0 keeps the sign of its zero (the flow writes det = sign exp(log|det|), e.g.
    exp(-2500) on the Razin-Cohen task at depth 2)."""
    det = table["det"].to_numpy(dtype=np.float64)
    sign = np.sign(det)
    if "log_abs_det" in table:
        carried = (det == 0) & np.isfinite(table["log_abs_det"].to_numpy(dtype=np.float64))
        sign[carried] = np.copysign(1.0, det[carried])
    return sign


def versions() -> dict[str, str]:
    """Versions of dlnmc and of the libraries that shape its numbers."""
    import numba

    from dlnmc import __version__

    return {"dlnmc": __version__, "numba": numba.__version__, "numpy": np.__version__,
            "pandas": pd.__version__}


def write_parquet(df: pd.DataFrame, path) -> Path:
    """Write ``df`` (with its ``attrs``) to ``path`` atomically: a temporary file in the same
    folder, then ``os.replace``, so a reader never sees a half-written table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # pandas would deep-copy ``attrs`` once per column on the way to Arrow (minutes for
        # the 10^4 columns of a 100 x 100 problem): convert without them and store them once,
        # where ``pandas.read_parquet`` restores them from
        plain = df.copy(deep=False)
        plain.attrs = {}
        table = pa.Table.from_pandas(plain, preserve_index=False)
        if df.attrs:
            table = table.replace_schema_metadata(
                {**table.schema.metadata, b"PANDAS_ATTRS": json.dumps(df.attrs).encode()})
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class SimulationResult:
    """What a simulation returns.

    Attributes
    ----------
    final : DataFrame
        One row per trajectory (columns documented in :func:`dlnmc.simulate`).
    history : DataFrame
        One row per (trajectory, checkpoint): ``run``, ``step``, ``loss``, ``w_<i>_<j>``
        (plus ``time_tau`` for the end-to-end flow).  Built on first access when the engine
        passes a function that builds it (a history of 10^5 rows costs tens of milliseconds,
        which a caller that reads only ``final`` should not pay).
    factors : list of ndarray or None
        Final factors W_1 first, the p-th of shape ``(runs, n_p, n_{p-1})``; ``None`` for the
        end-to-end flow, which has no factors.
    """

    def __init__(self, final: pd.DataFrame, history, factors: list | None = None):
        self.final = final
        self._history = history
        self.factors = factors

    @property
    def history(self) -> pd.DataFrame:
        if callable(self._history):
            self._history = self._history()
        return self._history

    def __repr__(self):
        params = self.provenance.get("params", {})
        problem = params.get("problem", {}).get("name", "?")
        factors = ("none" if not self.factors
                   else " ".join("x".join(map(str, F.shape[1:])) for F in self.factors))
        status = self.final["status"].value_counts().to_dict() if "status" in self.final else {}
        return (f"SimulationResult({self.provenance.get('kind', 'gd')}, problem={problem}, "
                f"depth={params.get('depth', '?')}, runs={len(self.final)}, "
                f"history rows={len(self.history)}, factors={factors}, status={status})")

    @property
    def provenance(self) -> dict:
        """Parameters, problem, seed and versions that produced these tables."""
        return self.final.attrs.get("dlnmc", {})

    def factors_table(self) -> pd.DataFrame:
        """Final factors in long form: ``run``, ``layer`` (1 = W_1), ``row``, ``col``, ``value``."""
        if not self.factors:
            return pd.DataFrame({"run": [], "layer": [], "row": [], "col": [], "value": []})
        runs = self.final["run"].to_numpy()
        parts = []
        for p, F in enumerate(self.factors, start=1):
            r, i, j = np.indices(F.shape).reshape(3, -1)
            parts.append(pd.DataFrame({"run": runs[r], "layer": np.int64(p), "row": i, "col": j,
                                       "value": F.reshape(-1)}))
        return pd.concat(parts, ignore_index=True)

    def to_parquet(self, directory) -> Path:
        """Write ``final.parquet``, ``history.parquet`` and ``factors.parquet`` to
        ``directory`` (created if needed), each atomically; return the directory."""
        directory = Path(directory)
        for name, df in (("final", self.final), ("history", self.history),
                         ("factors", self.factors_table())):
            df.attrs = {"dlnmc": json.loads(json.dumps(self.provenance))}
            write_parquet(df, directory / f"{name}.parquet")
        return directory


def read_result(directory) -> SimulationResult:
    """Read a :class:`SimulationResult` written by :meth:`SimulationResult.to_parquet`."""
    directory = Path(directory)
    final = pd.read_parquet(directory / "final.parquet")
    history = pd.read_parquet(directory / "history.parquet")
    long = pd.read_parquet(directory / "factors.parquet")
    factors = None
    if len(long):
        runs = final["run"].to_numpy()
        pos = pd.Series(np.arange(len(runs)), index=runs)
        factors = []
        for _, part in long.groupby("layer", sort=True):
            F = np.empty((len(runs), part["row"].max() + 1, part["col"].max() + 1))
            F[pos[part["run"]].to_numpy(), part["row"].to_numpy(), part["col"].to_numpy()] = \
                part["value"].to_numpy()
            factors.append(F)
    return SimulationResult(final, history, factors)
