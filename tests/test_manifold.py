"""dlnmc.manifold: the completion space, nearest rank-r completions against brute-force search,
and the hyperbola coordinates of the 2x2 diagonal task."""
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from dlnmc.manifold import (
    completion_space,
    endpoint_matrices,
    hyperbola_coordinates,
    nearest_rank_r_completion,
)
from dlnmc.predictions import plane_point
from dlnmc.problems import diagonal_2x2, diagonal_3x3, random_low_rank, razin_cohen_2x2
from dlnmc.results import entry_columns
from . import reference as ref


def test_completion_space_round_trip():
    problem = random_low_rank(4, 5, 2, 9, seed=3)
    space = completion_space(problem)
    assert space.dim == 20 - 9
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, space.dim))
    X = space.embed(x)
    assert np.allclose(problem.loss(X), 0.0)
    np.testing.assert_array_equal(space.coordinates(X), x)
    W = rng.standard_normal((4, 5))
    P = space.project(W)
    # the projection is the nearest completion: W - P is supported on Omega
    np.testing.assert_array_equal((W - P)[~problem.mask], 0.0)
    np.testing.assert_allclose(np.tensordot(x[0], space.basis, 1) + space.base, X[0])
    with pytest.raises(ValueError):
        space.embed(np.zeros(space.dim + 1))


def _brute_rank1_2x2(W):
    """min over rank-1 completions [[1, a], [1/a, 1]]: grid over both branches, then refine."""
    def d2(a):
        return (W[0, 0] - 1) ** 2 + (W[1, 1] - 1) ** 2 + (W[0, 1] - a) ** 2 + (W[1, 0] - 1 / a) ** 2
    grid = np.concatenate([-np.logspace(-3, 3, 6001), np.logspace(-3, 3, 6001)])
    a0 = grid[np.argmin(d2(grid))]
    res = minimize_scalar(lambda x: d2(np.sign(a0) * np.exp(x)), method="bounded",
                          bounds=(np.log(abs(a0)) - 0.01, np.log(abs(a0)) + 0.01),
                          options={"xatol": 1e-13})
    return np.sqrt(res.fun)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_rank1_2x2_against_brute_force(seed):
    W = 1.5 * np.random.default_rng(seed).standard_normal((2, 2))
    res = nearest_rank_r_completion(diagonal_2x2(), W, 1)
    assert res.residual < 1e-8
    assert np.linalg.matrix_rank(res.matrix, tol=1e-7) == 1
    assert res.distance == pytest.approx(np.linalg.norm(res.matrix - W), rel=1e-12)
    assert res.distance == pytest.approx(_brute_rank1_2x2(W), rel=1e-7)


@pytest.mark.parametrize("seed", [10, 11])
def test_nearest_rank1_3x3_against_brute_force(seed):
    W = np.random.default_rng(seed).standard_normal((3, 3))
    res = nearest_rank_r_completion(diagonal_3x3(), W, 1)
    assert res.residual < 1e-8
    assert res.distance == pytest.approx(ref.nearest_rank1_diagonal(W), rel=1e-6)


def test_nearest_rank2_3x3_against_constrained_search():
    problem = diagonal_3x3((1.0, 2.0, 0.5))
    W = np.random.default_rng(5).standard_normal((3, 3))
    res = nearest_rank_r_completion(problem, W, 2)
    assert res.residual < 1e-8
    assert abs(np.linalg.det(res.matrix)) < 1e-8
    assert res.distance == pytest.approx(ref.nearest_singular_completion(problem, W), rel=1e-6)


def test_symmetric_saddle_start_is_escaped():
    """From W = I the truncated-SVD start e1 e1^T is a saddle; the perturbed restarts reach the
    corners [[1, +-1], [+-1, 1]] at distance sqrt(2) (min over a of a^2 + 1/a^2 = 2)."""
    res = nearest_rank_r_completion(diagonal_2x2(), np.eye(2), 1)
    assert res.residual < 1e-8 and res.distance == pytest.approx(np.sqrt(2.0), rel=1e-8)


def test_full_rank_is_the_projection_and_infeasible_rank_is_reported():
    W = np.array([[3.0, 0.2], [0.7, -1.0]])
    res = nearest_rank_r_completion(razin_cohen_2x2(), W, 2)
    np.testing.assert_array_equal(res.matrix, [[3.0, 1.0], [1.0, 0.0]])
    assert res.distance == pytest.approx(np.hypot(0.8, np.hypot(0.3, 1.0)))
    # rank-1 completions of the Razin-Cohen task exist only at infinity
    assert nearest_rank_r_completion(razin_cohen_2x2(), W, 1, restarts=0).residual > 1e-6
    with pytest.raises(ValueError):
        nearest_rank_r_completion(razin_cohen_2x2(), W, 0)
    with pytest.raises(ValueError):
        nearest_rank_r_completion(razin_cohen_2x2(), np.full((2, 2), np.nan), 1)


def test_hyperbola_coordinates():
    t = np.array([-1.2, 0.0, 0.5, 2.0])
    u = np.array([1e-3, -1e-6, 0.2, 1e-9])
    W = np.concatenate([plane_point(t, u, 1), plane_point(t, u, -1),
                        [[[1.0, 2.0], [-0.5, 1.0]], [[1.0, 0.0], [3.0, 1.0]]]])
    final = pd.DataFrame(W.reshape(len(W), -1), columns=entry_columns((2, 2)))
    out = hyperbola_coordinates(final, diagonal_2x2())
    assert out["branch"].tolist() == [1] * 4 + [-1] * 4 + [0, 0]
    np.testing.assert_allclose(out["t"].to_numpy()[:8], np.tile(t, 2), atol=1e-14)
    assert out["t"].isna().tolist()[8:] == [True, True]
    np.testing.assert_allclose(out["hyperbola_dist"].to_numpy()[:8], np.tile(np.abs(u), 2),
                               rtol=1e-6)
    assert out["hyperbola_dist"].iloc[8] == 2.0
    # on the hyperbola t = log|a|
    on = plane_point(t, 0.0, -1)
    np.testing.assert_allclose(np.log(np.abs(on[:, 0, 1])), t, atol=1e-15)
    np.testing.assert_array_equal(endpoint_matrices(final, (2, 2)), W)
    with pytest.raises(ValueError):
        hyperbola_coordinates(final, diagonal_3x3())


def test_endpoint_matrices_of_a_table_mixing_shapes():
    """Rows of a 2x2 problem in a table that also holds 3x3 rows (a study's union of entry
    columns) read back exactly; a row that fills a foreign entry, or a missing column, is an
    error."""
    rng = np.random.default_rng(1)
    small, big = rng.standard_normal((3, 2, 2)), rng.standard_normal((2, 3, 3))
    final = pd.concat([pd.DataFrame(small.reshape(3, -1), columns=entry_columns((2, 2))),
                       pd.DataFrame(big.reshape(2, -1), columns=entry_columns((3, 3)))],
                      ignore_index=True)
    np.testing.assert_array_equal(endpoint_matrices(final.iloc[:3], (2, 2)), small)
    np.testing.assert_array_equal(endpoint_matrices(final.iloc[3:], (3, 3)), big)
    with pytest.raises(ValueError, match="do not match"):
        endpoint_matrices(final, (2, 2))
    with pytest.raises(ValueError, match="do not match"):
        endpoint_matrices(final.iloc[:3][entry_columns((2, 2))[:3]], (2, 2))
