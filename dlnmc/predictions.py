"""Predicted endpoint densities on the rank-1 solution curve of the 2x2 diagonal task.

Cohen, Menon & Veraszto (2023) and Menon (2024, problem 14.1): observe w11 = w22 = 1. The
solutions are W = [[1, a], [b, 1]]; the rank-1 ones form the hyperbola ab = 1 (two branches,
sign(a) = sign(b) = +-1). mathematics.md section 5.2 lists three reductions of the volume of g^N
to a density along the hyperbola; this module evaluates them exactly, normalized, as
probability densities in the curve coordinate t (the same density on both branches).

Coordinates of the solution plane
---------------------------------
a = sigma sqrt(1 - u) e^t, b = sigma sqrt(1 - u) e^{-t} (sigma = +-1 the branch, u < 1), so
u = 1 - ab = det W and t = (1/2) log|a / b|; the hyperbola is u = 0, where t = log|a|. The
Jacobian is exactly one: da db = dt du. t -> -t is W -> W^T, which leaves every density
below unchanged, and sigma -> -sigma is W -> D W D (D = diag(1, -1)), likewise.
:func:`dlnmc.manifold.hyperbola_coordinates` maps endpoints to (sigma, t, |u|).

Singular values of W(t, u): s1^2 + s2^2 = 2 + 2 (1 - u) cosh 2t and s1 s2 = |u|, so on the
hyperbola s1 = 2 cosh t, s2 = 0.

The candidates (r = 1/N, r = 0 for N = inf; rho_N = sqrt(det g^N) w.r.t. dW, lam_12 the mixed
metric eigenvalue of mathematics.md section 2.3)
-----------------------------------------------------------------------------------------
P1 (band volume), band width eps:
    P1(t) ~ int_{|u| < eps} rho_N(W(t, u)) du,
    the g^N volume of the band |1 - ab| < eps per unit t (rho_N times the Lebesgue measure
    da db = dt du of the plane, i.e. the g^N volume of the band thickened by an infinitesimal
    Lebesgue slab in (w11, w22)). As eps -> 0 its shape tends to (2 cosh t)^{-2(1 - r)}.
P2 (orbit-weighted band volume): the same integral of rho_N(W) vol(O_W); vol(O_W) is
    proportional to lam_12^{1/2} (Menon & Yu; the constant c_2^{N-1} N^{1/2} cancels on
    normalization). As eps -> 0: (2 cosh t)^{-(1 - r)}.
P3 (g^N length of the curve inside the rank-1 matrices), exact on the hyperbola:
    P3(t) = |dW/dt|_{g^N} = (2 cosh t)^{-(1 - r)} sqrt(4 sinh^2 t + 2N),
    growing like e^{|t| / N}: normalizable only on a window for finite N.
N = inf: the band integrals of P1 and P2 diverge (the integrand behaves like
    log(1/|u|) / |u|), and g^inf is infinite along the curve. The N = inf candidates are the
    N -> inf limits of the normalized finite-N shapes: sech^2 t, sech t and sech t (for P1
    and P2 at any fixed eps; the dependence on eps disappears in the limit, because the band
    integral in y = (|u| / s1^2)^{1/N} has an upper limit that tends to 1 for every t).
N = 1: rho_1 = 1 and lam_12 = 1, so P1 and P2 are uniform in t and P3 is the Euclidean
    arclength sqrt(2 cosh 2t): all three need a window.
Baselines: :func:`norm_minimizer` (point mass at the corners t = 0, where the nuclear,
Frobenius and spectral norms of the rank-1 solutions are smallest) and
:func:`uniform_arclength` (uniform in Euclidean arclength, sqrt(2 cosh 2t) dt, on a window).

Numerics
--------
The band integral substitutes u = +-eps y^N (finite N), which makes the integrand a smooth
function of y in [0, 1] (the u^{-(N-1)/N} singularity cancels), and uses 48-point
Gauss-Legendre in y on each side of the hyperbola, all in log space (no underflow of u or
s2 at large N). Normalization, CDF and partial first moment use composite 16-point
Gauss-Legendre on panels of width <= 1/4 in t; a density on the whole line is truncated where
its tail mass is below 1e-16 (outside the truncation the CDF is 0 or 1 to that accuracy;
the pdf is the exact value everywhere).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "CurveDensity",
    "PointMass",
    "plane_point",
    "log_plane_density",
    "p1",
    "p2",
    "p3",
    "uniform_arclength",
    "norm_minimizer",
    "candidates",
]

_PANEL = 0.25
_GL_T = np.polynomial.legendre.leggauss(16)
_GL_Y = np.polynomial.legendre.leggauss(48)
_TAIL_LOG = 40.0
"""Whole-line densities are truncated at |t| = T with exp(-c T) / c <= exp(-40) (c the decay
rate), a tail mass far below double precision relative to the bulk."""


def _inverse_depth(depth) -> float:
    if isinstance(depth, (bool, np.bool_)):
        raise ValueError(f"depth must be a positive integer or numpy.inf, got {depth!r}")
    try:
        value = float(depth)
    except (TypeError, ValueError):
        raise ValueError(f"depth must be a positive integer or numpy.inf, got {depth!r}") from None
    if value == math.inf:
        return 0.0
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise ValueError(f"depth must be a positive integer or numpy.inf, got {depth!r}")
    return 1.0 / int(value)


def _check_window(window, required, what):
    if window is None:
        if required:
            raise ValueError(f"{what} is not normalizable on the whole curve: give a window (lo, hi)")
        return None
    try:
        lo, hi = (float(x) for x in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a pair (lo, hi), got {window!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"window must be finite with lo < hi, got {window!r}")
    if max(abs(lo), abs(hi)) > 300:
        raise ValueError(f"window must lie in |t| <= 300 (cosh 2t overflows beyond), got {window!r}")
    return lo, hi


def _log_two_cosh(t):
    a = np.abs(t)
    return a + np.log1p(np.exp(-2.0 * a))


# ----------------------------------------------------------------------------- the plane

def plane_point(t, u=0.0, branch=1) -> np.ndarray:
    """The solution W = [[1, a], [b, 1]] with a = branch sqrt(1-u) e^t, b = branch sqrt(1-u) e^-t.

    Parameters
    ----------
    t, u : array_like
        Curve coordinate and u = 1 - ab = det W (u < 1); broadcast together.
    branch : {1, -1}

    Returns
    -------
    ndarray, shape (..., 2, 2)
    """
    t, u = np.broadcast_arrays(np.asarray(t, dtype=np.float64), np.asarray(u, dtype=np.float64))
    if branch not in (1, -1):
        raise ValueError(f"branch must be 1 or -1, got {branch!r}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(u)) and np.all(u < 1)):
        raise ValueError("t and u must be finite with u < 1")
    r = branch * np.sqrt(1.0 - u)
    W = np.ones(t.shape + (2, 2))
    W[..., 0, 1] = r * np.exp(t)
    W[..., 1, 0] = r * np.exp(-t)
    return W


def _log_terms(t, log_abs_u, u, r):
    """log rho_N and log lam_12 at W(t, u), from log|u| (no underflow of u or s2).

    rho_N = prod_il lam_il^{-1/2} (mathematics.md section 2.5) with lam_11 = s1^{2(1-r)},
    lam_22 = s2^{2(1-r)}, lam_12 = s1^{2(1-r)} expm1(D) / (expm1(r D) / r), D = 2 log(s2/s1)
    (expm1(D) / D for r = 0): log rho = -(1-r)(log s1 + log s2) - log lam_12.
    """
    # log S, S = s1^2 + s2^2 = 2 + 2 (1 - u) cosh 2t, without overflow of cosh
    log_S = np.logaddexp(math.log(2.0), np.log1p(-u) + _log_two_cosh(2.0 * t))
    q = np.exp(math.log(2.0) + log_abs_u - log_S)  # 2 s1 s2 / (s1^2 + s2^2) < 1
    log_s1 = 0.5 * (log_S + np.log1p(np.sqrt((1.0 - q) * (1.0 + q))) - math.log(2.0))
    log_s2 = log_abs_u - log_s1
    D = 2.0 * (log_s2 - log_s1)
    denom = np.expm1(r * D) / r if r > 0 else D
    log_lam12 = 2.0 * (1.0 - r) * log_s1 + np.log(np.expm1(D) / denom)
    return -(1.0 - r) * (log_s1 + log_s2) - log_lam12, log_lam12


def log_plane_density(t, u, depth) -> np.ndarray:
    """log rho_N(W(t, u)): the g^N volume density w.r.t. dW at the solution W(t, u).

    Closed form for the 2x2 diagonal task (module docstring); equals
    ``dlnmc.geometry.log_volume_density(plane_point(t, u), depth)`` for u != 0.

    Parameters
    ----------
    t, u : array_like
        Plane coordinates, u = 1 - ab in (-inf, 1) without 0.
    depth : int or numpy.inf
    """
    r = _inverse_depth(depth)
    t, u = np.broadcast_arrays(np.asarray(t, dtype=np.float64), np.asarray(u, dtype=np.float64))
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(u)) and np.all(u < 1) and np.all(u != 0)):
        raise ValueError("t and u must be finite with u < 1 and u != 0")
    return _log_terms(t, np.log(np.abs(u)), u, r)[0]


def _log_band(t, eps, r, orbit):
    """log int_{|u| < eps} rho_N (lam_12)^{orbit/2} du at each t (finite N, r = 1/N).

    u = +-eps y^N, du = N eps y^{N-1} dy; 48-point Gauss-Legendre in y on each side.
    """
    t = np.asarray(t, dtype=np.float64)
    N = round(1.0 / r)
    x, w = _GL_Y
    y, w = 0.5 * (x + 1.0), 0.5 * w
    log_u = math.log(eps) + N * np.log(y)
    log_weight = np.log(w) + math.log(N * eps) + (N - 1) * np.log(y)
    parts = []
    for sign in (1.0, -1.0):
        u = sign * np.exp(log_u)
        log_rho, log_lam = _log_terms(t[..., None], log_u, u, r)
        parts.append(log_rho + 0.5 * orbit * log_lam + log_weight)
    return logsumexp(np.concatenate(parts, axis=-1), axis=-1)


# ----------------------------------------------------------------------------- densities

class CurveDensity:
    """A probability density in t on a window (or the whole line), normalized by quadrature.

    Parameters
    ----------
    name : str
    log_shape : callable
        Unnormalized log-density, vectorized over an array of t.
    window : (float, float)
        Support [lo, hi]; for a whole-line density, the truncation (tail mass < 1e-16).
    whole_line : bool
        True when the density lives on the whole line (``window`` is then only the
        computational truncation).

    Attributes
    ----------
    name, window, whole_line, mean
    """

    def __init__(self, name, log_shape, window, whole_line=False):
        self.name = name
        self.window = (float(window[0]), float(window[1]))
        self.whole_line = bool(whole_line)
        self._log_shape = log_shape
        lo, hi = self.window
        self._edges = np.linspace(lo, hi, max(1, math.ceil((hi - lo) / _PANEL)) + 1)
        self._mid = 0.5 * (self._edges[1:] + self._edges[:-1])
        self._half = 0.5 * (self._edges[1:] - self._edges[:-1])
        x, w = _GL_T
        z = self._mid[:, None] + self._half[:, None] * x
        log_f = log_shape(z)
        self._log_norm = float(logsumexp(log_f + np.log(w * self._half[:, None])))
        f = np.exp(log_f - self._log_norm)
        # Legendre coefficients of the degree-15 interpolants of f and t f on each panel
        # (exact projection by the same Gauss rule), and their antiderivatives from -1.
        P = np.polynomial.legendre.legvander(x, len(x) - 1) * w[:, None]
        scale = np.arange(len(x)) + 0.5
        self._coef = (f @ P) * scale
        self._int0 = np.polynomial.legendre.legint(self._coef, lbnd=-1, axis=1)
        self._int1 = np.polynomial.legendre.legint(((f * z) @ P) * scale, lbnd=-1, axis=1)
        self._cum = np.concatenate([[0.0], np.cumsum(self._half * (f * w).sum(axis=-1))])
        self._cum_t = np.concatenate([[0.0], np.cumsum(self._half * (f * z * w).sum(axis=-1))])
        self.mean = float(self._cum_t[-1])

    def __repr__(self):
        kind = "whole line, truncated at" if self.whole_line else "window"
        return f"CurveDensity({self.name!r}, {kind} {self.window})"

    def _inside(self, t):
        if self.whole_line:
            return np.ones(t.shape, dtype=bool)
        return (t >= self.window[0]) & (t <= self.window[1])

    def logpdf(self, t) -> np.ndarray:
        """Normalized log-density (the exact expression); -inf outside a window."""
        t = np.asarray(t, dtype=np.float64)
        inside = self._inside(t)
        out = np.full(t.shape, -np.inf)
        out[inside] = self._log_shape(t[inside]) - self._log_norm
        return out

    def pdf(self, t) -> np.ndarray:
        """Normalized density; 0 outside a window."""
        return np.exp(self.logpdf(t))

    def loglik(self, t) -> float:
        """Log-likelihood sum_k log pdf(t_k) of a sample."""
        return float(np.sum(self.logpdf(t)))

    def _locate(self, t):
        t = np.clip(np.asarray(t, dtype=np.float64), *self.window)
        k = np.clip(np.searchsorted(self._edges, t, side="right") - 1, 0, len(self._mid) - 1)
        return k, (t - self._mid[k]) / self._half[k]

    def _panel_integral(self, coef, k, x):
        return self._half[k] * np.polynomial.legendre.legval(x, coef[k].T, tensor=False)

    def cdf(self, t) -> np.ndarray:
        """P(T <= t): Gauss-Legendre panels, the partial panel by the integral of the
        degree-15 Legendre interpolant of the density at its Gauss nodes (error ~1e-15)."""
        k, x = self._locate(t)
        return np.clip(self._cum[k] + self._panel_integral(self._int0, k, x), 0.0, 1.0)

    def partial_mean(self, t) -> np.ndarray:
        """E[T; T <= t] = int_{-inf}^t s pdf(s) ds, by the same quadrature as :meth:`cdf`."""
        k, x = self._locate(t)
        return self._cum_t[k] + self._panel_integral(self._int1, k, x)

    def ppf(self, q) -> np.ndarray:
        """Quantile function: cdf(t) = q by safeguarded Newton inside the panel holding q."""
        q = np.asarray(q, dtype=np.float64)
        if not np.all(np.isfinite(q)) or np.any((q < 0) | (q > 1)):
            raise ValueError("quantile levels must lie in [0, 1]")
        k = np.clip(np.searchsorted(self._cum, q, side="right") - 1, 0, len(self._mid) - 1)
        target = (q - self._cum[k]) / self._half[k]
        lo, hi = np.full(q.shape, -1.0), np.full(q.shape, 1.0)
        x = np.zeros(q.shape)
        x[(q == 0) | (q == 1)] = -1.0  # exact ends, set below; no iterations spent there
        target[(q == 0) | (q == 1)] = 0.0
        for _ in range(100):
            g = np.polynomial.legendre.legval(x, self._int0[k].T, tensor=False) - target
            lo, hi = np.where(g < 0, x, lo), np.where(g > 0, x, hi)
            slope = np.polynomial.legendre.legval(x, self._coef[k].T, tensor=False)
            new = x - g / np.where(slope > 0, slope, np.inf)
            new = np.where((new < lo) | (new > hi), 0.5 * (lo + hi), new)
            new = np.where(g == 0, x, new)
            done = np.all(np.abs(new - x) <= 1e-13)
            x = new
            if done:
                break
        t = self._mid[k] + self._half[k] * x
        return np.where(q == 0, self.window[0], np.where(q == 1, self.window[1], t))

    def quantile_integral(self, q) -> np.ndarray:
        """int_0^q ppf(p) dp (used by the Wasserstein distance)."""
        return self.partial_mean(self.ppf(q))


class PointMass:
    """A point mass at ``location`` in t (the norm-minimizer baseline).

    Its Lebesgue log-density is +inf at the location and -inf elsewhere.
    """

    whole_line = True

    def __init__(self, name, location=0.0):
        self.name = name
        self.location = float(location)
        self.mean = self.location
        self.window = (self.location, self.location)

    def __repr__(self):
        return f"PointMass({self.name!r}, at t = {self.location})"

    def logpdf(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return np.where(t == self.location, np.inf, -np.inf)

    def pdf(self, t) -> np.ndarray:
        return np.exp(self.logpdf(t))

    def loglik(self, t) -> float:
        t = np.asarray(t, dtype=np.float64)
        return float(np.inf if np.all(t == self.location) else -np.inf)

    def cdf(self, t) -> np.ndarray:
        return (np.asarray(t, dtype=np.float64) >= self.location).astype(np.float64)

    def partial_mean(self, t) -> np.ndarray:
        return self.location * self.cdf(t)

    def ppf(self, q) -> np.ndarray:
        return np.full(np.shape(q), self.location)

    def quantile_integral(self, q) -> np.ndarray:
        return self.location * np.asarray(q, dtype=np.float64)


def _build(name, log_shape, decay, window):
    """A CurveDensity on ``window``, or on the whole line (decay rate > 0) when None."""
    if window is not None:
        return CurveDensity(name, log_shape, window)
    T = (_TAIL_LOG - math.log(decay)) / decay
    return CurveDensity(name, log_shape, (-T, T), whole_line=True)


def _band_candidate(name, depth, eps, window, orbit):
    r = _inverse_depth(depth)
    power = (2 - orbit) * (1.0 - r)
    window = _check_window(window, required=(power == 0), what=f"{name} at depth {depth}")
    if eps is not None:
        eps = float(eps)
        if not 0 < eps < 1:
            raise ValueError(f"band width eps must lie in (0, 1), got {eps!r}")
    if eps is None or r == 0:
        def log_shape(t):
            return -power * _log_two_cosh(t)
        label = f"{name} N={depth}" + ("" if eps is None else " (N=inf limit)")
    else:
        def log_shape(t):
            return _log_band(t, eps, r, orbit)
        label = f"{name} N={depth} eps={eps:g}"
    return _build(label, log_shape, power, window)


def p1(depth, eps=None, window=None) -> CurveDensity:
    """P1: g^N volume of the band |1 - ab| < eps, per unit t (mathematics.md section 5.2).

    Parameters
    ----------
    depth : int or numpy.inf
    eps : float in (0, 1), optional
        Band width; exact band integral (module docstring). None: the eps -> 0 limit
        (2 cosh t)^{-2(N-1)/N}. Ignored at N = inf (limit shape sech^2 t).
    window : (lo, hi), optional
        Restrict to lo <= t <= hi and renormalize; required for N = 1.
    """
    return _band_candidate("P1", depth, eps, window, orbit=0)


def p2(depth, eps=None, window=None) -> CurveDensity:
    """P2: orbit volume times g^N volume of the band |1 - ab| < eps (mathematics.md section 5.2).

    eps -> 0 limit (2 cosh t)^{-(N-1)/N}; N = inf: sech t. Parameters as :func:`p1`.
    """
    return _band_candidate("P2", depth, eps, window, orbit=1)


def p3(depth, window=None) -> CurveDensity:
    """P3: g^N arclength of the rank-1 curve, (2 cosh t)^{-(N-1)/N} sqrt(4 sinh^2 t + 2N).

    Exact on the hyperbola (no band). Finite N: not normalizable on the whole curve, a
    ``window`` is required. N = inf: the limit of the normalized shapes, sech t.
    """
    r = _inverse_depth(depth)
    window = _check_window(window, required=(r > 0), what=f"P3 at depth {depth}")
    if r == 0:
        def log_shape(t):
            return -_log_two_cosh(t)
    else:
        log_2N = math.log(2.0 / r)

        def log_shape(t):
            a = np.abs(t)
            with np.errstate(divide="ignore"):
                log_2sinh = a + np.log(-np.expm1(-2.0 * a))
            return -(1.0 - r) * _log_two_cosh(t) + 0.5 * np.logaddexp(2.0 * log_2sinh, log_2N)
    return _build(f"P3 N={depth}", log_shape, 1.0, window)


def uniform_arclength(window) -> CurveDensity:
    """Uniform in Euclidean arclength of the hyperbola on a window: density ~ sqrt(2 cosh 2t)."""
    window = _check_window(window, required=True, what="the uniform arclength law")

    def log_shape(t):
        return 0.5 * _log_two_cosh(2.0 * t)
    return CurveDensity("uniform arclength", log_shape, window)


def norm_minimizer() -> PointMass:
    """Point mass at the corners t = 0 (a = b = +-1): the minimal-norm rank-1 solutions."""
    return PointMass("norm minimizer", 0.0)


def candidates(depth, window, eps=None) -> dict:
    """All candidates on one window: P1, P2, P3, uniform arclength, norm minimizer.

    Parameters
    ----------
    depth : int or numpy.inf
    window : (lo, hi)
        Common support; every continuous candidate is restricted to it and renormalized.
    eps : float, optional
        Band width for P1 and P2 (None: eps -> 0 limit).

    Returns
    -------
    dict
        ``{"P1", "P2", "P3", "uniform_arclength", "norm_minimizer"}`` -> candidate.
    """
    return {"P1": p1(depth, eps, window), "P2": p2(depth, eps, window), "P3": p3(depth, window),
            "uniform_arclength": uniform_arclength(window), "norm_minimizer": norm_minimizer()}
