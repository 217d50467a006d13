import numpy as np
import pytest

from dlnmc import CompletionProblem, diagonal_2x2, diagonal_3x3, random_low_rank, razin_cohen_2x2


def test_loss_and_gradient_match_definition():
    p = CompletionProblem((2, 3), {(0, 1): 2.0, (1, 2): -1.0})
    W = np.arange(6.0).reshape(2, 3)
    assert p.loss(W) == pytest.approx(0.5 * ((1 - 2) ** 2 + (5 + 1) ** 2))
    G = np.zeros((2, 3))
    G[0, 1], G[1, 2] = 1 - 2, 5 + 1
    np.testing.assert_array_equal(p.gradient(W), G)
    # gradient is the derivative of the loss (central differences)
    E = np.zeros((2, 3))
    E[1, 2] = 1e-6
    assert (p.loss(W + E) - p.loss(W - E)) / 2e-6 == pytest.approx(G[1, 2], rel=1e-8)


def test_from_mask_round_trip():
    mask = np.array([[True, False], [False, True]])
    values = np.array([[3.0, np.nan], [np.nan, -2.0]])
    p = CompletionProblem.from_mask(mask, values)
    assert dict(p.entries) == {(0, 0): 3.0, (1, 1): -2.0}
    np.testing.assert_array_equal(p.mask, mask)


@pytest.mark.parametrize(
    "shape, entries, match",
    [
        ((2, 0), {(0, 0): 1.0}, "positive"),
        ((2, 2), {(2, 0): 1.0}, "out of range"),
        ((2, 2), {(0, -1): 1.0}, "out of range"),
        ((2, 2), {(0, 0): np.nan}, "non-finite"),
        ((2, 2), {(0, 0): np.inf}, "non-finite"),
        ((2, 2), {}, "at least one"),
        ((2, 2), {(0,): 1.0}, "pair"),
        ((2, 2), {(0.5, 0): 1.0}, "pair"),
        ((2, 2), 3.0, "mapping"),
        ((2, 2, 2), {(0, 0): 1.0}, "two integers"),
    ],
)
def test_bad_problems_raise(shape, entries, match):
    with pytest.raises(ValueError, match=match):
        CompletionProblem(shape, entries)


def test_duplicate_entries_raise():
    with pytest.raises(ValueError, match="duplicate"):
        CompletionProblem((2, 2), [((0, 0), 1.0), ((np.int64(0), 0), 2.0)])


def test_catalogue():
    rc = razin_cohen_2x2()
    assert dict(rc.entries) == {(0, 1): 1.0, (1, 0): 1.0, (1, 1): 0.0}
    # every solution [[x, 1], [1, 0]] has det -1
    assert np.linalg.det([[7.0, 1.0], [1.0, 0.0]]) == pytest.approx(-1)
    assert dict(diagonal_2x2().entries) == {(0, 0): 1.0, (1, 1): 1.0}
    assert dict(diagonal_3x3((1, 2, 3)).entries) == {(0, 0): 1.0, (1, 1): 2.0, (2, 2): 3.0}
    p = random_low_rank(6, 5, 2, 17, seed=3)
    assert len(p.entries) == 17 and np.linalg.matrix_rank(p.ground_truth) == 2
    assert np.sqrt(np.mean(p.ground_truth**2)) == pytest.approx(1.0)
    i, j = p.indices
    np.testing.assert_array_equal(p.values, p.ground_truth[i, j])
    assert random_low_rank(6, 5, 2, 17, seed=3).entries == p.entries
    with pytest.raises(ValueError, match="rank"):
        random_low_rank(3, 3, 4, 5)


def test_problem_pickles_to_an_equal_problem():
    import pickle
    problem = random_low_rank(4, 5, 2, n_observed=9, seed=3)
    copy = pickle.loads(pickle.dumps(problem))
    assert copy.shape == problem.shape and dict(copy.entries) == dict(problem.entries)
    assert copy.name == problem.name
    np.testing.assert_array_equal(copy.ground_truth, problem.ground_truth)
    assert not copy.ground_truth.flags.writeable
