"""dlnmc.predictions against independent computations: the geometry layer and brute-force
operators for the volume density, mpmath band integrals, scipy quadrature for normalization and
CDFs, closed forms at N = inf, and the g^N length of the curve from dlnmc.geometry.metric."""
import numpy as np
import pytest
from scipy.integrate import quad

from dlnmc import geometry, predictions as P
from . import reference as ref

T = np.array([-2.5, -0.4, 0.0, 0.7, 1.9])


@pytest.mark.parametrize("depth", [1, 2, 5, 20, np.inf])
@pytest.mark.parametrize("u", [0.3, -0.5, 1e-3, -1e-5])
def test_plane_density_matches_geometry(depth, u):
    """Near and away from the hyperbola (the SVD inside geometry loses relative accuracy
    ~1e-16/|u| in s2, hence the tolerance)."""
    ours = P.log_plane_density(T, u, depth)
    theirs = geometry.log_volume_density(P.plane_point(T, u), depth)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


@pytest.mark.parametrize("depth", [2, 5, np.inf])
def test_plane_density_matches_brute_operator(depth):
    for t, u, branch in [(0.3, 0.2, 1), (-1.1, -0.4, -1), (0.8, 0.05, 1)]:
        W = P.plane_point(t, u, branch)
        M = ref.brute_operator_inf(W) if depth == np.inf else ref.brute_operator(W, depth)
        expected = -0.5 * np.linalg.slogdet(M)[1]
        assert P.log_plane_density(t, u, depth) == pytest.approx(expected, abs=1e-8)


def _band_cases():
    return [(P.p1, 0, 3, 0.2), (P.p2, 1, 3, 0.2), (P.p1, 0, 20, 1e-5), (P.p2, 1, 20, 1e-5)]


@pytest.mark.parametrize("make, orbit, depth, eps", _band_cases())
def test_band_densities_against_mpmath(make, orbit, depth, eps):
    """Shape of the exact band integral: ratios pdf(t)/pdf(0) against an mpmath integral of
    the direct (non-log-space) formulas over u."""
    c = make(depth, eps)
    ts = np.array([0.0, 1.3])
    mass = np.array([ref.band_mass_2x2(t, eps, depth, orbit, dps=20) for t in ts])
    pdf = c.pdf(ts)
    assert pdf[1] / pdf[0] == pytest.approx(mass[1] / mass[0], rel=1e-10)


def _all_candidates():
    out = []
    for depth in (2, 5, np.inf):
        for eps in (None, 1e-4, 0.2):
            out += [P.p1(depth, eps), P.p2(depth, eps)]
    out += [P.p1(1, 0.1, (-2, 3)), P.p2(1, None, (-1, 1)), P.p1(5, 0.01, (-1.5, 0.5)),
            P.p3(3, (-4, 4)), P.p3(50, (-2, 6)), P.p3(np.inf), P.p3(np.inf, (-1, 1)),
            P.uniform_arclength((-3, 3))]
    return out


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("c", _all_candidates(), ids=repr)
def test_candidates_are_normalized(c):
    """Independent adaptive quadrature of pdf over the domain (the whole line when the density
    lives there: pdf is exact beyond the internal truncation); cdf and partial_mean against
    quadrature at interior points; ppf inverts cdf."""
    lo, hi = (-np.inf, np.inf) if c.whole_line else c.window
    pieces = [lo, -1.0, 0.0, 1.0, hi] if c.whole_line else [lo, hi]
    total = sum(quad(lambda x: c.pdf(np.array(x)), a, b, limit=200, epsabs=1e-13)[0]
                for a, b in zip(pieces[:-1], pieces[1:]))
    assert total == pytest.approx(1.0, abs=1e-9)
    a = max(c.window[0], -3.0)
    for x in np.linspace(a, min(c.window[1], 3.0), 4)[1:]:
        mass = quad(lambda s: c.pdf(np.array(s)), a, x, epsabs=1e-14)[0] + c.cdf(a)
        first = quad(lambda s: s * c.pdf(np.array(s)), a, x, epsabs=1e-14)[0] + c.partial_mean(a)
        assert c.cdf(x) == pytest.approx(mass, abs=1e-11)
        assert c.partial_mean(x) == pytest.approx(first, abs=1e-11)
    q = np.array([1e-6, 0.05, 0.5, 0.77, 1 - 1e-6])
    np.testing.assert_allclose(c.cdf(c.ppf(q)), q, atol=1e-12)
    assert c.cdf(c.window[0]) == pytest.approx(0.0, abs=1e-15)
    assert c.cdf(c.window[1]) == pytest.approx(1.0, abs=1e-14)
    if not c.whole_line:
        assert c.pdf(np.array(c.window[1] + 0.1)) == 0.0
        assert c.logpdf(np.array(c.window[0] - 0.1)) == -np.inf


def test_infinite_depth_closed_forms():
    t = T
    np.testing.assert_allclose(P.p1(np.inf).pdf(t), 0.5 / np.cosh(t) ** 2, rtol=1e-13)
    np.testing.assert_allclose(P.p1(np.inf).cdf(t), 0.5 * (1 + np.tanh(t)), atol=1e-14)
    gd = 2 * np.arctan(np.tanh(t / 2))
    for c in (P.p2(np.inf), P.p2(np.inf, eps=0.1), P.p3(np.inf)):
        np.testing.assert_allclose(c.pdf(t), 1 / (np.pi * np.cosh(t)), rtol=1e-13)
        np.testing.assert_allclose(c.cdf(t), 0.5 + gd / np.pi, atol=1e-14)


def test_asymptotic_forms_and_limits():
    """eps -> 0 gives the asymptotic shapes; at N = 20 and eps = 1e-5 the exact band density
    still differs from them by more than 1%; large N approaches the N = inf shapes."""
    t = np.array([0.0, 2.0])
    for N in (2, 20):
        asym = np.cosh(t) ** (-2 * (N - 1) / N)
        exact = P.p1(N, 1e-14).pdf(t)
        assert exact[1] / exact[0] == pytest.approx(asym[1] / asym[0], rel=2e-2 if N == 20 else 1e-6)
    exact, asym = P.p1(20, 1e-5).pdf(t), P.p1(20).pdf(t)
    assert abs(exact[1] / exact[0] / (asym[1] / asym[0]) - 1) > 0.01
    q = np.array([0.1, 0.9])
    np.testing.assert_allclose(P.p1(10**6, 0.1).ppf(q), P.p1(np.inf).ppf(q), rtol=1e-4)
    np.testing.assert_allclose(P.p2(10**6, 0.1).ppf(q), P.p2(np.inf).ppf(q), rtol=1e-4)


@pytest.mark.parametrize("depth", [2, 3])
def test_p3_is_the_metric_length_of_the_curve(depth):
    """|dW/dt|_{g^N} from geometry.metric at W(t, u) with u = 1e-12 (the part of dW/dt off the
    rank-1 tangent space is O(s2), its contribution O(s2^{2/N}) ~ 1e-8)."""
    t = np.array([-1.5, 0.0, 0.4, 2.0])
    W = P.plane_point(t, 1e-12)
    dW = np.zeros_like(W)
    dW[:, 0, 1], dW[:, 1, 0] = W[:, 0, 1], -W[:, 1, 0]
    length = np.sqrt(geometry.metric(W, dW, depth))
    c = P.p3(depth, (-3, 3))
    np.testing.assert_allclose(c.pdf(t) / c.pdf(np.array(0.0)), length / length[1], rtol=1e-6)


def test_uniform_arclength_and_point_mass():
    c = P.uniform_arclength((-1, 2))
    t = np.array([-0.5, 0.3, 1.7])
    speed = np.sqrt(np.exp(2 * t) + np.exp(-2 * t))  # |d(e^t, e^-t)/dt|
    np.testing.assert_allclose(c.pdf(t) / speed, c.pdf(t)[0] / speed[0], rtol=1e-13)
    np.testing.assert_allclose(c.pdf(t), P.p3(1, (-1, 2)).pdf(t), rtol=1e-13)
    m = P.norm_minimizer()
    assert m.cdf(np.array([-1e-9, 0.0])).tolist() == [0.0, 1.0]
    assert m.loglik(np.array([0.0, 0.1])) == -np.inf


def test_candidates_dict_and_validation():
    cands = P.candidates(5, (-3, 3), eps=1e-3)
    assert list(cands) == ["P1", "P2", "P3", "uniform_arclength", "norm_minimizer"]
    with pytest.raises(ValueError, match="window"):
        P.p3(4)
    with pytest.raises(ValueError, match="window"):
        P.p1(1)
    with pytest.raises(ValueError, match="eps"):
        P.p1(3, eps=1.5)
    with pytest.raises(ValueError, match="depth"):
        P.p2(2.5)
    with pytest.raises(ValueError, match="window"):
        P.p1(3, window=(2, 1))
    with pytest.raises(ValueError):
        P.log_plane_density(0.0, 0.0, 3)
