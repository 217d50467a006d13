"""Minimum nuclear norm completion benchmark: :func:`dlnmc.stats.min_nuclear_norm_completion`
against cvxpy + SCS at tight tolerances (eps_abs = eps_rel = 1e-8, O'Donoghue et al. 2016) on
``random_low_rank`` problems (seed 0).

Each (problem, method) runs in a fresh Python process, so that ``peak_mb`` (that process's peak
resident memory, imports included) and ``seconds`` (the solve alone, on an empty cache) belong
to that solve only; the minimizer comes back through a ``.npy`` file and is compared with the
ground truth and with SCS's.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd

import dlnmc
from dlnmc.problems import random_low_rank
from dlnmc.stats.nuclear import automatic_solver, min_nuclear_norm_completion

__all__ = ["run", "solve_case", "SCS_EPS"]

_CASES = [(100, 100, 5, m) for m in (2000, 3000, 5000)]
_QUICK_CASES = [(30, 30, 2, 200)]
SCS_EPS = 1e-8
"""Tolerance of the SCS reference (at its default, 1e-4, it is 1e-4 off the minimizer)."""
_SCS = "cvxpy+SCS"
_TIMEOUT_S = 600


def run(quick: bool = False) -> pd.DataFrame:
    """One row per (problem, method): ``rows``, ``cols``, ``rank``, ``n_observed``,
    ``method`` (a solver of :func:`min_nuclear_norm_completion`: the automatic one, ADMM, and
    cvxpy+SCS at :data:`SCS_EPS`), ``automatic`` (the default choice at this size),
    ``seconds``, ``peak_mb``, ``norm`` (m*), ``rel_error_vs_truth`` and ``rel_diff_vs_scs``
    (relative Frobenius distance of the minimizer to the ground truth and to SCS's).

    Cases: 100 x 100 rank 5 with m = 2000, 3000, 5000 observed entries; quick: 30 x 30 rank 2,
    m = 200 (where the automatic solver is CLARABEL).
    """
    table = []
    for case in _QUICK_CASES if quick else _CASES:
        problem = random_low_rank(*case)
        auto = automatic_solver(problem.shape)
        methods = list(dict.fromkeys([auto, "ADMM", _SCS]))
        with tempfile.TemporaryDirectory() as folder:
            results = {method: _measure(case, method, folder) for method in methods}
        matrices = {method: result.pop("matrix") for method, result in results.items()}
        for method, result in results.items():
            X = matrices[method]
            table.append(dict(zip(("rows", "cols", "rank", "n_observed"), case), method=method,
                              automatic=method == auto, **result,
                              rel_error_vs_truth=_relative(X, problem.ground_truth),
                              rel_diff_vs_scs=_relative(X, matrices[_SCS])))
    return pd.DataFrame(table)


def solve_case(rows, cols, rank, n_observed, method, out) -> None:
    """Solve ``random_low_rank(rows, cols, rank, n_observed)`` with ``method`` (a solver of
    :func:`min_nuclear_norm_completion`, or "cvxpy+SCS"), save the minimizer to ``out`` and
    print a JSON line with ``seconds``, ``peak_mb`` and ``norm`` (run by :func:`run` in a
    fresh process)."""
    problem = random_low_rank(int(rows), int(cols), int(rank), int(n_observed))
    start = time.perf_counter()
    if method == _SCS:
        norm, X = _scs(problem)
    else:
        sol = min_nuclear_norm_completion(problem, solver=method)
        norm, X = sol.norm, sol.matrix
    seconds = time.perf_counter() - start
    np.save(out, X)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB (bytes on macOS)
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    print(json.dumps(dict(seconds=seconds, peak_mb=peak_mb, norm=norm)))


def _scs(problem) -> tuple[float, np.ndarray]:
    """(m*, minimizer) from cvxpy's ``normNuc`` with SCS at :data:`SCS_EPS`."""
    i, j = problem.indices
    X = cp.Variable(problem.shape)
    prob = cp.Problem(cp.Minimize(cp.normNuc(X)), [X[i, j] == problem.values])
    prob.solve(solver="SCS", eps_abs=SCS_EPS, eps_rel=SCS_EPS, max_iters=10**6)
    if prob.status != "optimal":
        raise RuntimeError(f"SCS reference: status {prob.status}")
    return float(prob.value), np.asarray(X.value, dtype=np.float64)


def _measure(case, method, folder) -> dict:
    """:func:`solve_case` in a fresh process (this dlnmc first on its path): its JSON line
    and the minimizer (``matrix``)."""
    out = Path(folder) / f"{len(os.listdir(folder))}.npy"
    code = "import sys; from dlnmc.bench.nuclear import solve_case; solve_case(*sys.argv[1:])"
    root = str(Path(dlnmc.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code, *map(str, case), method, str(out)],
                          capture_output=True, text=True, timeout=_TIMEOUT_S, check=True,
                          env={**os.environ, "PYTHONPATH": path})
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "matrix": np.load(out)}


def _relative(X, reference) -> float:
    """||X - reference||_F / ||reference||_F."""
    return float(np.linalg.norm(X - reference) / np.linalg.norm(reference))
