"""The minimum nuclear norm completion's large-size path (ADMM) against CLARABEL, the exact
interior-point path of small problems, and an independent certificate of optimality."""
import warnings

import cvxpy as cp
import numpy as np
import pytest

from dlnmc import diagonal_2x2, diagonal_3x3, random_low_rank, razin_cohen_2x2
from dlnmc.stats import nuclear
from dlnmc.stats.nuclear import min_nuclear_norm_completion

SMALL = [razin_cohen_2x2(), diagonal_2x2(), diagonal_3x3(), diagonal_3x3((1.0, -2.0, 0.0))]
RANDOM_8x8 = [random_low_rank(8, 8, 2, n_observed=40, seed=s) for s in range(3)]


def nuclear_norm(X) -> float:
    return float(np.linalg.svd(X, compute_uv=False).sum())


def tight_clarabel(problem) -> np.ndarray:
    """CLARABEL at gap and feasibility tolerances 1e-12: its minimizer moves 1e-5 (relative)
    from the one at default settings on these 8 x 8 problems, whose minimizers have singular
    values down to 1e-4 of the largest (status optimal_inaccurate: its numerical floor)."""
    i, j = problem.indices
    X = cp.Variable(problem.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cp.Problem(cp.Minimize(cp.normNuc(X)), [X[i, j] == problem.values]).solve(
            solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12,
            tol_ktratio=1e-10, max_iter=500)
    return X.value


def dual_lower_bound(problem) -> float:
    """max <Y, b> over Y supported on Omega with ||Y||_2 <= 1 (the dual program, solved by
    CLARABEL), made exactly feasible (zero off Omega, divided by ||Y||_2): by weak duality a
    lower bound on ||X||_* for every completion X, independent of the primal solvers."""
    i, j = problem.indices
    Y = cp.Variable(problem.shape)
    off = ~problem.mask
    cp.Problem(cp.Maximize(cp.sum(cp.multiply(problem.targets, Y))),
               [Y[off] == 0, cp.sigma_max(Y) <= 1]).solve(solver="CLARABEL")
    Yv = np.where(off, 0.0, Y.value)
    return float(Yv[i, j] @ problem.values / np.linalg.norm(Yv, 2))


def relative(A, B) -> float:
    return float(np.linalg.norm(A - B) / np.linalg.norm(B))


@pytest.mark.parametrize("problem", SMALL, ids=lambda p: p.name)
def test_admm_matches_clarabel_on_small_problems(problem):
    """Norm, minimizer, uniqueness, face and the distance to the set of minimizers (a segment
    on the 2x2 diagonal task, the elliptope on the 3x3 one) all agree to 1e-6."""
    exact = min_nuclear_norm_completion(problem, solver="CLARABEL")
    admm = min_nuclear_norm_completion(problem, solver="ADMM")
    assert admm.norm == pytest.approx(exact.norm, rel=1e-9)
    assert admm.unique == exact.unique
    if exact.unique:
        np.testing.assert_allclose(admm.matrix, exact.matrix, atol=1e-6)
    else:  # ADMM's minimizer lies in CLARABEL's set of minimizers
        assert exact.distance(admm.matrix) < 1e-6
    for a, e in [(admm.left, exact.left), (admm.right, exact.right)]:
        np.testing.assert_allclose(a @ a.T, e @ e.T, atol=1e-6)  # the same face
    W = np.random.default_rng(0).standard_normal((4,) + problem.shape)
    np.testing.assert_allclose(admm.distance(W), exact.distance(W), atol=1e-6)


@pytest.mark.parametrize("problem", RANDOM_8x8, ids=["seed0", "seed1", "seed2"])
def test_admm_matches_clarabel_on_random_8x8(problem):
    """m* to 1e-8; the minimizer to 1e-6 against CLARABEL at tight tolerances, and to its
    default settings' own accuracy (1e-4: their minimizer is 1e-5 off the tight one)."""
    exact = min_nuclear_norm_completion(problem, solver="CLARABEL")
    admm = min_nuclear_norm_completion(problem, solver="ADMM")
    assert admm.norm == pytest.approx(exact.norm, rel=1e-8)
    assert relative(admm.matrix, tight_clarabel(problem)) < 1e-6
    assert relative(admm.matrix, exact.matrix) < 1e-4
    assert admm.unique == exact.unique and admm.left.shape == exact.left.shape


def test_admm_matches_clarabel_at_30x30():
    """30 x 30 rank 2, m = 200 (a study problem): m* to 1e-8, the minimizer to 1e-4 (default
    CLARABEL's accuracy; measured 1.4e-5), the same face dimension and uniqueness."""
    problem = random_low_rank(30, 30, 2, n_observed=200)
    exact = min_nuclear_norm_completion(problem)  # automatic: CLARABEL at this size
    assert min_nuclear_norm_completion(problem, solver="CLARABEL").matrix is exact.matrix
    admm = min_nuclear_norm_completion(problem, solver="ADMM")
    assert admm.norm == pytest.approx(exact.norm, rel=1e-8)
    assert relative(admm.matrix, exact.matrix) < 1e-4
    assert admm.unique == exact.unique and admm.left.shape == exact.left.shape


@pytest.mark.parametrize("problem", [diagonal_3x3((1.0, 2.0, 3.0))] + RANDOM_8x8[:2]
                         + [random_low_rank(12, 9, 2, n_observed=60, seed=3)],
                         ids=lambda p: f"{p.name}-{len(p.entries)}")
def test_admm_is_optimal(problem):
    """Exactly feasible; within 1e-8 (relative) of an independent lower bound from the dual
    program; no random feasible perturbation lowers the norm. A feasible point 1% off the
    minimizer fails the same certificate (the check can fail)."""
    sol = min_nuclear_norm_completion(problem, solver="ADMM")
    i, j = problem.indices
    np.testing.assert_array_equal(sol.matrix[i, j], problem.values)
    assert sol.norm == pytest.approx(nuclear_norm(sol.matrix), rel=1e-13)
    lower = dual_lower_bound(problem)
    assert lower <= sol.norm * (1 + 1e-12)
    assert sol.norm - lower <= 1e-8 * sol.norm
    rng = np.random.default_rng(1)
    off = ~problem.mask
    for t in (1e-4, 1e-2, 1.0):
        D = rng.standard_normal((20,) + problem.shape) * off
        D *= t * np.linalg.norm(sol.matrix) / np.linalg.norm(D, axis=(1, 2), keepdims=True)
        norms = np.linalg.svd(sol.matrix + D, compute_uv=False).sum(axis=1)
        assert np.all(norms >= sol.norm * (1 - 1e-12))
    worse = sol.matrix + 0.01 * np.linalg.norm(sol.matrix) * D[0] / np.linalg.norm(D[0])
    assert nuclear_norm(worse) - lower > 1e-5 * sol.norm


def test_automatic_solver_at_100x100_is_admm_and_recovers_the_truth():
    """Above rows + cols = 60 the automatic choice is ADMM (the cached solution is shared);
    at m = 5000 the minimizer is the rank-5 truth (exact recovery), found to 1e-8."""
    problem = random_low_rank(100, 100, 5, n_observed=5000)
    sol = min_nuclear_norm_completion(problem)
    assert min_nuclear_norm_completion(problem, solver="ADMM").matrix is sol.matrix
    assert relative(sol.matrix, problem.ground_truth) < 1e-8
    assert sol.norm == pytest.approx(nuclear_norm(problem.ground_truth), rel=1e-9)
    assert sol.unique and sol.left.shape == (100, 5) and sol.right.shape == (100, 5)


def test_zero_observations_and_the_iteration_cap(monkeypatch):
    """b = 0: X = 0, m* = 0 without a warning; an ADMM stopped by its cap warns with the gap."""
    problem = diagonal_3x3((0.0, 0.0, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = min_nuclear_norm_completion(problem, solver="ADMM")
    assert sol.norm == 0.0 and not sol.matrix.any() and sol.unique
    monkeypatch.setattr(nuclear, "_ADMM_MAX_ITER", 20)
    with pytest.warns(RuntimeWarning, match="ADMM stopped after 20 iterations"):
        nuclear._solve_nuclear.__wrapped__(nuclear.problem_key(RANDOM_8x8[0]), "ADMM")
