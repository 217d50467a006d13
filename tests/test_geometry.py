"""dlnmc.geometry against independent computations: brute-force Kronecker operators, quadrature
for N = inf, mpmath, finite-difference Jacobians of the SVD map, Gram determinants of the orbit
map, and the reference values of mathematics.md section 2.6."""
import mpmath
import numpy as np
import pytest
from scipy.special import multigammaln

from dlnmc.geometry import (
    log_orbit_volume,
    log_orthogonal_group_volume,
    log_volume_density,
    metric,
    metric_eigenvalues,
    operator_matrix,
    riemannian_gradient,
)
from . import reference as ref

DEPTHS = [1, 2, 3, 7, 50, np.inf]
W2 = np.array([[2.0, 1.0], [0.5, 1.0]])
W3 = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0]])


def brute(W, depth):
    return ref.brute_operator_inf(W) if depth == np.inf else ref.brute_operator(W, depth)


def random_matrices(shape, seed, count=3):
    return np.random.default_rng(seed).standard_normal((count, *shape))


def rank_deficient(d, seed):
    """A d x d matrix of rank d - 1 whose SVD has an exactly zero singular value: a zero last
    row and column, moved by exact permutations."""
    rng = np.random.default_rng(seed)
    W = np.zeros((d, d))
    W[: d - 1, : d - 1] = rng.standard_normal((d - 1, d - 1))
    W = W[rng.permutation(d)][:, rng.permutation(d)]
    assert np.linalg.svd(W, compute_uv=False)[-1] == 0.0
    return W


def assert_close_operator(M, M_ref, rtol):
    assert np.abs(M - M_ref).max() <= rtol * np.abs(M_ref).max()


# --------------------------------------------------------------------- operator, gradient, metric

@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (4, 4), (2, 3), (3, 2), (4, 2)])
def test_operator_gradient_metric_match_brute_force(shape, depth):
    Ws = random_matrices(shape, seed=10 * shape[0] + shape[1])
    Zs = random_matrices(shape, seed=1)
    M = operator_matrix(Ws, depth)
    grads = riemannian_gradient(Ws, Zs, depth)
    g = metric(Ws, Zs, depth)
    for k, (W, Z) in enumerate(zip(Ws, Zs)):
        M_ref = brute(W, depth)
        assert_close_operator(M[k], M_ref, 1e-11)
        np.testing.assert_allclose(grads[k].ravel(), M_ref @ Z.ravel(), rtol=1e-10, atol=1e-12)
        if shape[0] == shape[1] or depth != np.inf:  # A_inf is singular on null directions
            np.testing.assert_allclose(g[k], Z.ravel() @ np.linalg.solve(M_ref, Z.ravel()),
                                       rtol=1e-9)
        else:
            assert g[k] == np.inf


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("d", [2, 3, 4])
def test_rank_deficient_operator_matches_brute_force(d, depth):
    W = rank_deficient(d, seed=d)
    Z = np.random.default_rng(5).standard_normal((d, d))
    M_ref = brute(W, depth)
    assert_close_operator(operator_matrix(W, depth), M_ref, 1e-11)
    np.testing.assert_allclose(riemannian_gradient(W, Z, depth).ravel(), M_ref @ Z.ravel(),
                               rtol=1e-10, atol=1e-12)
    # metric: +inf off the range of the operator (N > 1), finite on it, never NaN
    g = metric(W, Z, depth)
    assert g == (np.inf if depth > 1 else pytest.approx(np.sum(Z**2)))
    # on the range of W (exact zeros off it) the metric is that of the nonsingular block
    Z3 = np.zeros((3, 3))
    Z3[:2, :2] = Z[:2, :2]
    assert metric(np.diag([2.0, 0.5, 0.0]), Z3, depth) == pytest.approx(
        metric(np.diag([2.0, 0.5]), Z[:2, :2], depth), rel=1e-14)


def test_operator_batches_and_broadcasts():
    Ws = random_matrices((4, 3, 3), seed=2, count=2)  # batch (2, 4)
    G = random_matrices((3, 3), seed=3, count=1)[0]  # broadcast over the batch
    out = riemannian_gradient(Ws, G, 3)
    assert out.shape == Ws.shape
    for idx in np.ndindex(2, 4):
        np.testing.assert_allclose(out[idx], riemannian_gradient(Ws[idx], G, 3), rtol=1e-13)
    assert operator_matrix(Ws, 3).shape == (2, 4, 9, 9)
    assert metric(Ws, G, 3).shape == (2, 4)
    assert log_volume_density(Ws, 3).shape == (2, 4)
    assert log_orbit_volume(Ws, 3).shape == (2, 4)
    assert metric_eigenvalues(np.ones((2, 4, 3)), 3).shape == (2, 4, 3, 3)


# --------------------------------------------------------------------- eigenvalues, high precision

@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("d", [2, 3, 4])
def test_metric_eigenvalues_are_the_brute_force_spectrum(d, depth):
    W = random_matrices((d, d), seed=30 + d)[0]
    lam = metric_eigenvalues(np.linalg.svd(W, compute_uv=False), depth)
    np.testing.assert_allclose(np.sort(lam.ravel()), np.linalg.eigvalsh(brute(W, depth)),
                               rtol=1e-10)


def mp_eigenvalue(si, sl, depth):
    si, sl = mpmath.mpf(si), mpmath.mpf(sl)
    if si == sl:
        return si ** (2 - mpmath.mpf(2) / depth) if depth != np.inf else si**2
    if depth == np.inf:
        return (si**2 - sl**2) / mpmath.log(si**2 / sl**2) if si * sl > 0 else mpmath.mpf(0)
    p = mpmath.mpf(2) / depth
    return (si**2 - sl**2) / (depth * (si**p - sl**p))


@pytest.mark.parametrize("depth", DEPTHS)
def test_metric_eigenvalues_near_coincident_and_tiny(depth):
    s = np.array([1.0, 1.0 + 2.0**-52, 1.0 + 1e-12, 1.0 + 1e-7, 3.7, 3.7 * (1 + 1e-10),
                  1e-30, 1e-100, 2.5e-100, 0.0])
    lam = metric_eigenvalues(s, depth)
    mpmath.mp.dps = 60
    for i in range(s.size):
        for l in range(s.size):
            exact = mp_eigenvalue(s[i], s[l], depth)
            assert abs(lam[i, l] - exact) <= 2e-13 * abs(exact), (i, l, lam[i, l], exact)


@pytest.mark.parametrize("depth", [2, 3, 50, np.inf])
def test_log_volume_density_diagonal_extreme_against_mpmath(depth):
    mpmath.mp.dps = 60
    for s in ([1.0, 1.0 + 1e-12, 2.0], [1e-200, 3.0, 1e-300], [1e150, 1e-150, 1.0]):
        expected = -sum(mpmath.log(mp_eigenvalue(a, b, depth)) for a in s for b in s) / 2
        got = log_volume_density(np.diag(s), depth)
        assert abs(got - expected) <= 1e-12 * abs(expected)


# --------------------------------------------------------------------- volume density

REFERENCE_DENSITIES = [
    (W2, 2, 5.3692484417e-01), (W2, 5, 3.9489436969e-01), (W2, 10, 3.6077496553e-01),
    (W2, 20, 3.4563551496e-01), (W2, np.inf, 3.3164444279e-01),
    (W3, 2, 4.0758565470e-02), (W3, 5, 6.5196316443e-03), (W3, 10, 3.5940861320e-03),
    (W3, np.inf, 1.9968924774e-03),
]


@pytest.mark.parametrize("W, depth, value", REFERENCE_DENSITIES)
def test_volume_density_reference_values(W, depth, value):
    np.testing.assert_allclose(np.exp(log_volume_density(W, depth)), value, rtol=1e-9)


def log_van(x):
    iu = np.triu_indices(x.size, 1)
    return np.sum(np.log(np.abs(x[:, None] - x[None, :])[iu]))


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("d", [2, 3, 4])
def test_volume_density_brute_force_and_closed_form(d, depth):
    W = random_matrices((d, d), seed=10 * d)[0]
    _, logdet = np.linalg.slogdet(brute(W, depth))
    np.testing.assert_allclose(log_volume_density(W, depth), -0.5 * logdet, rtol=1e-10, atol=1e-11)
    s = np.linalg.svd(W, compute_uv=False)
    if depth == np.inf:  # CMV Theorem 1.1 and its N = inf limit (mathematics.md section 2.5)
        svd = -0.5 * np.sum(np.log(s**2)) + log_van(np.log(s**2))
    else:
        svd = (0.5 * d * (d - 1) * np.log(depth) + (1 - depth) / (2 * depth) * np.sum(np.log(s**2))
               + log_van(s ** (2.0 / depth)))
    np.testing.assert_allclose(log_volume_density(W, depth, coords="svd"), svd, rtol=1e-10,
                               atol=1e-11)


@pytest.mark.parametrize("depth", [2, 7, np.inf])
@pytest.mark.parametrize("d", [2, 3, 4])
def test_theorem_1_1_by_svd_jacobian(d, depth):
    """(Sigma, U, V) density = Lebesgue density * |det d W / d(s, U, V)|, the Jacobian of the SVD
    map taken by finite differences in local coordinates (independent of van(S^2))."""
    W = random_matrices((d, d), seed=20 + d)[0]
    U, s, Vt = np.linalg.svd(W)
    log_jac = ref.svd_jacobian_log_abs_det(s, U, Vt.T)
    np.testing.assert_allclose(log_volume_density(W, depth, coords="svd"),
                               log_volume_density(W, depth) + log_jac, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("depth", [1, 2, 3, np.inf])
def test_rank_deficient_and_coincident_volumes_never_nan(depth):
    cases = [np.zeros((3, 3)), rank_deficient(3, 0), np.diag([1.0, 0.0, 0.0]), np.eye(3)]
    leb = log_volume_density(np.array(cases), depth)
    svd = log_volume_density(np.array(cases), depth, coords="svd")
    if depth == 1:
        np.testing.assert_array_equal(leb, 0.0)
        assert svd[1] == log_van(np.linalg.svd(cases[1], compute_uv=False) ** 2)
        np.testing.assert_array_equal(svd[[0, 2, 3]], -np.inf)
    else:
        np.testing.assert_array_equal(leb[:3], np.inf)
        np.testing.assert_array_equal(svd[:3], np.inf)
        np.testing.assert_allclose(leb[3], 0.0, atol=1e-15)  # lam = 1 for W = I, every N
        assert svd[3] == -np.inf  # van(S^{2/N}) = 0 at coincident singular values
    if depth != np.inf:
        orbit = log_orbit_volume(np.array(cases), depth)
        # a repeated zero singular value (cases 0 and 2): the orbit map is not an immersion
        np.testing.assert_array_equal(orbit[[0, 2]], -np.inf if depth > 1 else 0.0)
        assert np.all(np.isfinite(orbit[[1, 3]]))


def test_large_depth_converges_at_rate_one_over_n():
    W = random_matrices((3, 3), seed=7)[0]
    Z = random_matrices((3, 3), seed=8)[0]
    quantities = [
        lambda N: log_volume_density(W, N),
        lambda N: log_volume_density(W, N, coords="svd"),
        lambda N: metric_eigenvalues(np.linalg.svd(W, compute_uv=False), N),
        lambda N: riemannian_gradient(W, Z, N),
        lambda N: metric(W, Z, N),
    ]
    for f in quantities:
        limit = f(np.inf)
        err = [np.max(np.abs(f(N) - limit)) for N in (200, 400, 800)]
        assert err[0] > 1e-6
        np.testing.assert_allclose([err[0] / err[1], err[1] / err[2]], 2.0, rtol=0.01)


# --------------------------------------------------------------------- orbit volume

def test_orthogonal_group_volume():
    np.testing.assert_allclose(np.exp(log_orthogonal_group_volume(1)), 2.0, rtol=1e-15)
    np.testing.assert_allclose(np.exp(log_orthogonal_group_volume(2)), 4 * np.sqrt(2) * np.pi,
                               rtol=1e-14)
    np.testing.assert_allclose(np.exp(log_orthogonal_group_volume(3)), 446.647, rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_orthogonal_group_volume(3)), 32 * np.sqrt(2) * np.pi**2,
                               rtol=1e-14)
    np.testing.assert_allclose(log_orthogonal_group_volume(3), ref.log_volume_o3_by_euler_angles(),
                               rtol=1e-9)
    # Muirhead (1982) Thm 2.1.15: vol O(m) = 2^m pi^{m^2/2} / Gamma_m(m/2) in the metric where the
    # coordinates (Q^T dQ)_ij, i < j, are orthonormal; Frobenius scales it by 2^{m(m-1)/4}
    for m in range(1, 9):
        muirhead = (m * np.log(2) + 0.5 * m * m * np.log(np.pi) - multigammaln(0.5 * m, m)
                    + 0.25 * m * (m - 1) * np.log(2))
        np.testing.assert_allclose(log_orthogonal_group_volume(m), muirhead, rtol=1e-13)


@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("d", [2, 3, 4])
def test_orbit_volume_against_gram_determinant(d, depth):
    rng = np.random.default_rng(100 * d + depth)
    W = rng.standard_normal((d, d))
    expected = log_orbit_volume(W, depth) - (depth - 1) * log_orthogonal_group_volume(d)
    for _ in range(2):  # two random balanced points of the same orbit
        factors = ref.balanced_factors(W, depth, rng)
        np.testing.assert_allclose(ref.end_to_end(factors), W, atol=1e-12)
        np.testing.assert_allclose(ref.orbit_gram_log_volume(factors), expected, rtol=1e-11)


def test_orbit_volume_simple_zero_singular_value_against_gram_determinant():
    rng = np.random.default_rng(3)
    W = np.diag([2.0, 0.7, 0.0])
    factors = ref.balanced_factors(W, 3, rng)
    np.testing.assert_allclose(ref.orbit_gram_log_volume(factors),
                               log_orbit_volume(W, 3) - 2 * log_orthogonal_group_volume(3),
                               rtol=1e-11)


@pytest.mark.parametrize("depth, value", [(2, 1.7439556374), (5, 3.0255757294),
                                          (10, 4.3867283007)])
def test_orbit_volume_reference_values(depth, value):
    factor = np.exp(log_orbit_volume(W2, depth) - (depth - 1) * log_orthogonal_group_volume(2))
    np.testing.assert_allclose(factor, value, rtol=1e-9)


def test_orbit_volume_depth_one_and_infinity():
    assert log_orbit_volume(W3, 1) == 0.0
    with pytest.raises(ValueError, match="diverges"):
        log_orbit_volume(W3, np.inf)


# --------------------------------------------------------------------- clocks and validation

@pytest.mark.parametrize("depth", [1, 3, 50])
def test_upstairs_clock_is_depth_times_normalized(depth):
    W = random_matrices((3, 2), seed=9)[0]
    Z = random_matrices((3, 2), seed=10)[0]
    up = dict(clock="upstairs")
    s = np.array([2.0, 0.5, 1e-3])
    np.testing.assert_allclose(metric_eigenvalues(s, depth, **up),
                               depth * metric_eigenvalues(s, depth), rtol=1e-15)
    np.testing.assert_allclose(riemannian_gradient(W, Z, depth, **up),
                               depth * riemannian_gradient(W, Z, depth), rtol=1e-14)
    np.testing.assert_allclose(operator_matrix(W, depth, **up), depth * operator_matrix(W, depth),
                               rtol=1e-14)
    np.testing.assert_allclose(metric(W, Z, depth, **up), metric(W, Z, depth) / depth, rtol=1e-14)
    np.testing.assert_allclose(log_volume_density(W3, depth, **up),
                               log_volume_density(W3, depth) - 4.5 * np.log(depth), rtol=1e-14)
    # the upstairs operator is the plain sum over j (Arora, Cohen & Hazan 2018)
    assert_close_operator(operator_matrix(W, depth, **up), depth * ref.brute_operator(W, depth),
                          1e-12)


def test_validation():
    with pytest.raises(ValueError, match="upstairs"):
        metric_eigenvalues([1.0, 2.0], np.inf, clock="upstairs")
    with pytest.raises(ValueError, match="clock"):
        riemannian_gradient(W2, W2, 2, clock="downstairs")
    with pytest.raises(ValueError, match="coords"):
        log_volume_density(W2, 2, coords="polar")
    for bad in (0, -1, 2.5, np.nan, -np.inf, True, "3", None):
        with pytest.raises(ValueError, match="depth"):
            operator_matrix(W2, bad)
    assert np.array_equal(operator_matrix(W2, 3.0), operator_matrix(W2, np.int64(3)))
    for f in (log_volume_density, log_orbit_volume):
        with pytest.raises(ValueError, match="square"):
            f(np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="NaN"):
        metric(np.array([[1.0, np.nan], [0.0, 1.0]]), W2, 2)
    with pytest.raises(ValueError, match="shape"):
        riemannian_gradient(W2, np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="shape"):
        operator_matrix(np.ones(3), 2)
    with pytest.raises(ValueError, match="non-negative"):
        metric_eigenvalues([1.0, -1.0], 2)
