import numpy as np
import pytest

from dlnmc.init import init_factors, layer_dims, product


def test_layer_dims():
    assert layer_dims((3, 2), 3) == (2, 2, 2, 3)
    assert layer_dims((3, 2), 3, widths=[4, 5]) == (2, 4, 5, 3)
    with pytest.raises(ValueError, match="hidden widths"):
        layer_dims((3, 2), 3, widths=[4])


@pytest.mark.parametrize("shape, widths", [((3, 3), None), ((2, 4), [3, 5, 4])])
def test_balanced_init_is_balanced_with_gaussian_product(shape, widths):
    depth = 4 if widths else 3
    runs = 4000
    F = init_factors(shape, depth, runs, "balanced", init_scale=0.3, widths=widths, seed=1)
    for p in range(depth - 1):
        D = np.swapaxes(F[p + 1], 1, 2) @ F[p + 1] - F[p] @ np.swapaxes(F[p], 1, 2)
        assert np.max(np.abs(D)) < 1e-12
    W = product(F)
    # product entries i.i.d. N(0, 0.3^2): sample std within 3% and no mean
    assert np.std(W) == pytest.approx(0.3, rel=0.03)
    assert abs(np.mean(W)) < 0.3 * 4 / np.sqrt(W.size)


def test_gaussian_init_product_scale():
    F = init_factors((3, 3), 3, 20000, "gaussian", init_scale=1e-2, seed=0)
    W = product(F)
    assert np.std(W) == pytest.approx(1e-2, rel=0.03)
    assert np.std(F[0]) == pytest.approx((1e-2 / 3) ** (1 / 3), rel=0.03)


def test_runs_depend_only_on_seed_and_run_id():
    a = init_factors((2, 2), 3, 10, "balanced", seed=5)
    b = init_factors((2, 2), 3, 4, "balanced", seed=5, first_run=6)
    for Fa, Fb in zip(a, b):
        np.testing.assert_array_equal(Fa[6:], Fb)
    c = init_factors((2, 2), 3, 10, "balanced", seed=6)
    assert not np.array_equal(a[0], c[0])


def test_det_sign_conditioning():
    for law in ("balanced", "gaussian"):
        F = init_factors((2, 2), 2, 200, law, det_sign=1, seed=2)
        assert np.all(np.linalg.det(product(F)) > 0)
    with pytest.raises(ValueError, match="square"):
        init_factors((2, 3), 2, 2, det_sign=1)


def test_explicit_init_validated():
    good = [np.ones((2, 2, 3)), np.ones((2, 2, 2))]
    out = init_factors((2, 3), 2, 2, init=good)
    assert [F.shape for F in out] == [(2, 2, 3), (2, 2, 2)]
    with pytest.raises(ValueError, match="shape"):
        init_factors((2, 3), 2, 2, init=[np.ones((2, 3, 2)), np.ones((2, 2, 2))])
    with pytest.raises(ValueError, match="non-finite"):
        init_factors((2, 3), 2, 2, init=[np.full((2, 2, 3), np.nan), np.ones((2, 2, 2))])
    with pytest.raises(ValueError, match="2 factor arrays"):
        init_factors((2, 3), 2, 2, init=[np.ones((2, 2, 3))])
    with pytest.raises(ValueError, match="init must be"):
        init_factors((2, 3), 2, 2, init="uniform")
    with pytest.raises(ValueError, match="init_scale"):
        init_factors((2, 3), 2, 2, init_scale=-1.0)
