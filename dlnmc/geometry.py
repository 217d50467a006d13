"""Riemannian geometry of the deep linear network on end-to-end matrices.

Pure functions of matrices (no problems, no tables), vectorized over leading batch axes,
float64. Depth is any integer ``N >= 1`` or ``numpy.inf``. All formulas are those of
mathematics.md sections 2 and 3:

- Arora, Cohen & Hazan (2018), balanced gradient flow of the product:
  dW/dt = -A_{N,W}(G), A_{N,W}(Z) = sum_{j=1}^N (W W^T)^{(N-j)/N} Z (W^T W)^{(j-1)/N}.
- Cohen, Menon & Veraszto (2023, "CMV"), the normalized operator Abar = A / N, the metric
  g^N_W(Z, Z) = <Z, Abar^{-1} Z> and its volume form (Theorem 1.1); the limit N = inf,
  Abar_inf(Z) = int_0^1 (W W^T)^{1-x} Z (W^T W)^x dx.
- Menon & Yu (2025), the volume of the balanced fibre (orbit) over W.

Clocks
------
``clock="normalized"`` (default) is CMV's operator Abar = A / N (time tau = N t);
``clock="upstairs"`` is A = N * Abar, the clock of gradient descent on the factors
(t = step size * steps). The upstairs clock has no N = inf limit (ValueError).

Eigen-structure
---------------
With the full SVD W = U Sigma V^T (U d x d, V d' x d'), Abar(u_i v_l^T) = lam_il u_i v_l^T for
all i < d, l < d', where lam_il is the pair formula of :func:`metric_eigenvalues` evaluated at
the singular values padded with zeros to length d (for i) and d' (for l). With 0^0 = 1 in the
sum over j this is exact for rectangular and rank-deficient W: a zero singular value paired
with s > 0 gives lam = s^{2(N-1)/N} / N (only the j term with exponent 0 on the kernel
survives), two zero singular values give lam = 1 for N = 1 and 0 for N > 1, and N = inf gives
lam = 0 for any pair containing a zero singular value.

vec convention
--------------
:func:`operator_matrix` acts on row-major vectorizations, ``vec(Z) = Z.reshape(-1)``.
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammaln

__all__ = [
    "metric_eigenvalues",
    "log_volume_density",
    "log_orbit_volume",
    "log_orthogonal_group_volume",
    "riemannian_gradient",
    "metric",
    "operator_matrix",
]

_CLOCKS = ("normalized", "upstairs")
_COORDS = ("lebesgue", "svd")


# ----------------------------------------------------------------------------- validation

def _check_depth(depth) -> float:
    """The depth N as a float: a positive integer, or inf (then 1 / N = 0.0)."""
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, float, np.integer,
                                                                     np.floating)):
        raise ValueError(f"depth must be a positive integer or numpy.inf, got {depth!r}")
    if not (depth == np.inf or (np.isfinite(depth) and depth >= 1 and depth == int(depth))):
        raise ValueError(f"depth must be a positive integer or numpy.inf, got {depth!r}")
    return float(depth)


def _clock_factor(clock, N) -> float:
    """Multiplier of the normalized operator: 1 (normalized) or N (upstairs)."""
    if clock not in _CLOCKS:
        raise ValueError(f"clock must be one of {_CLOCKS}, got {clock!r}")
    if clock == "normalized":
        return 1.0
    if N == np.inf:
        raise ValueError("the upstairs clock A = N * Abar has no limit for depth = inf; "
                         "use clock='normalized'")
    return N


def _as_matrices(W, name="W", square=False) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim < 2:
        raise ValueError(f"{name} must have shape (..., rows, cols), got shape {W.shape}")
    if square and W.shape[-1] != W.shape[-2]:
        raise ValueError(f"{name} must be square (..., d, d), got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError(f"{name} contains NaN or inf")
    return W


def _as_direction(Z, W, name) -> np.ndarray:
    Z = _as_matrices(Z, name)
    if Z.shape[-2:] != W.shape[-2:]:
        raise ValueError(f"{name} must have the matrix shape of W {W.shape[-2:]}, got {Z.shape}")
    return Z


# ----------------------------------------------------------------------------- eigenvalues

def _pair_terms(x, y, r):
    """Stable pieces of the eigenvalue lam for one pair of singular values (s_i, s_l).

    Parameters
    ----------
    x, y : float or ndarray
        log s_i^2 and log s_l^2 (``-inf`` for a zero singular value); broadcast together.
    r : float
        1 / N, or 0.0 for N = inf.

    Returns
    -------
    log_scale, ratio : ndarray
        lam = exp(log_scale) * ratio and log lam = log_scale + log(ratio), with
        m = max(x, y), delta = min(x, y) - m <= 0, log_scale = (1 - r) m and
        ratio = expm1(delta) / E_r(delta) in [r, 1] (in [0, 1] for r = 0), where
        E_r(delta) = expm1(r delta) / r (E_0(delta) = delta) and ratio = 1 at delta = 0.

    Notes
    -----
    This is lam_il = (1/N) (s_i^2 - s_l^2) / (s_i^{2/N} - s_l^{2/N}) of mathematics.md
    section 2.3 (lam_ii = s_i^{2(N-1)/N}; the logarithmic mean (s_i^2 - s_l^2) / log(s_i^2/s_l^2)
    for N = inf), factored so that no difference of nearly equal numbers is formed: the
    relative accuracy is a few ulp for nearly coincident and for tiny singular values alike.
    A zero singular value paired with s > 0 gives delta = -inf, ratio = r; two zero singular
    values give lam = 0 (lam = 1 for N = 1). The Numba kernels of the end-to-end flow
    (dlnmc/kernels/flow.py) mirror this function scalar by scalar (log s^2 in, the two pieces
    out, the ``where`` branches as ifs); keep the two in step.
    """
    m = np.maximum(x, y)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        delta = np.where(m == -np.inf, 0.0, np.minimum(x, y) - m)
        denom = np.expm1(r * delta) / r if r > 0.0 else delta
        ratio = np.where(denom == 0.0, 1.0, np.expm1(delta) / denom)
    log_scale = np.zeros_like(m) if r == 1.0 else (1.0 - r) * m
    return log_scale, ratio


def _log_squares(s) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 2.0 * np.log(s)


def _log_eigenvalue_grid(s_rows, s_cols, r):
    """(log_scale, ratio) on the grid of pairs (s_rows[i], s_cols[l])."""
    x = _log_squares(s_rows)
    y = _log_squares(s_cols)
    return _pair_terms(x[..., :, None], y[..., None, :], r)


def metric_eigenvalues(s, depth, clock="normalized") -> np.ndarray:
    """Eigenvalues lam_il of the end-to-end operator for singular values ``s``.

    Parameters
    ----------
    s : array_like, shape (..., d)
        Singular values (finite, >= 0; zeros allowed).
    depth : int or numpy.inf
        Depth N >= 1.
    clock : {"normalized", "upstairs"}
        Eigenvalues of CMV's Abar (default) or of A = N * Abar (finite N only).

    Returns
    -------
    lam : ndarray, shape (..., d, d)
        lam_il = (1/N) (s_i^2 - s_l^2) / (s_i^{2/N} - s_l^{2/N}), lam_ii = s_i^{2(N-1)/N};
        for N = inf the logarithmic mean of s_i^2 and s_l^2 (mathematics.md section 2.3;
        Cohen, Menon & Veraszto 2023, section 2). Abar(u_i v_l^T) = lam_il u_i v_l^T.

    Notes
    -----
    Computed as exp((1 - r) m) * expm1(delta) / (expm1(r delta) / r) with r = 1/N,
    m = max(log s_i^2, log s_l^2), delta = min - max (see ``_pair_terms``): accurate to a few
    ulp when singular values nearly coincide or are tiny. Values below ~1e-308 underflow to 0.
    """
    N = _check_depth(depth)
    factor = _clock_factor(clock, N)
    s = np.asarray(s, dtype=np.float64)
    if s.ndim < 1:
        raise ValueError(f"s must have shape (..., d), got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("singular values must be finite and non-negative")
    log_scale, ratio = _log_eigenvalue_grid(s, s, 1.0 / N)
    return factor * np.exp(log_scale) * ratio


def _padded_svd(W):
    """Full SVD with the singular values padded by zeros to lengths rows and cols."""
    U, s, Vt = np.linalg.svd(W, full_matrices=True)
    rows, cols = W.shape[-2:]
    pad = [(0, 0)] * (s.ndim - 1)
    s_rows = np.pad(s, pad + [(0, rows - s.shape[-1])])
    s_cols = np.pad(s, pad + [(0, cols - s.shape[-1])])
    return U, s_rows, s_cols, np.swapaxes(Vt, -1, -2)


def _operator_eigen(W, depth, clock):
    """U, V and the (..., d, d') grid lam of the operator in the basis u_i v_l^T."""
    N = _check_depth(depth)
    factor = _clock_factor(clock, N)
    U, s_rows, s_cols, V = _padded_svd(W)
    log_scale, ratio = _log_eigenvalue_grid(s_rows, s_cols, 1.0 / N)
    return U, factor * np.exp(log_scale) * ratio, V


# ----------------------------------------------------------------------------- operator

def riemannian_gradient(W, G, depth, clock="normalized") -> np.ndarray:
    """The end-to-end operator applied to G: Abar_{N,W}(G), the Riemannian gradient of g^N.

    Parameters
    ----------
    W : array_like, shape (..., d, d')
        End-to-end matrices (any rank, square or rectangular).
    G : array_like, shape (..., d, d')
        Euclidean gradients (batch axes broadcast against W's).
    depth : int or numpy.inf
    clock : {"normalized", "upstairs"}
        Abar = A / N (CMV, default) or A (Arora, Cohen & Hazan 2018, eq. for dW/dt).

    Returns
    -------
    ndarray
        Abar(G) = U (lam o (U^T G V)) V^T with the full SVD of W, o the entrywise product, which
        equals (1/N) sum_j (W W^T)^{(N-j)/N} G (W^T W)^{(j-1)/N} (0^0 = identity on the kernel,
        only for the term whose exponent is 0) and, for N = inf,
        int_0^1 (W W^T)^{1-x} G (W^T W)^x dx (mathematics.md section 2.2). Gradient flow of a loss l
        on the end-to-end matrix is dW/dtau = -riemannian_gradient(W, grad l(W), N).
    """
    W = _as_matrices(W)
    G = _as_direction(G, W, "G")
    U, lam, V = _operator_eigen(W, depth, clock)
    Ut = np.swapaxes(U, -1, -2)
    return U @ (lam * (Ut @ G @ V)) @ np.swapaxes(V, -1, -2)


def metric(W, Z, depth, clock="normalized") -> np.ndarray:
    """The metric g^N_W(Z, Z) = <Z, Abar^{-1}(Z)> (CMV 2023, section 2).

    Parameters
    ----------
    W : array_like, shape (..., d, d')
        End-to-end matrices, full rank for a finite value in every direction.
    Z : array_like, shape (..., d, d')
        Tangent vectors (batch axes broadcast against W's).
    depth : int or numpy.inf
    clock : {"normalized", "upstairs"}
        The upstairs metric is <Z, A^{-1} Z> = g / N.

    Returns
    -------
    ndarray, shape (...)
        sum_il (U^T Z V)_il^2 / lam_il. Where W is rank-deficient (or, for N = inf, rectangular)
        some lam_il vanish: a nonzero component there gives +inf, an exactly zero component
        contributes 0 (the metric of the subspace where it is finite). Never NaN.
    """
    W = _as_matrices(W)
    Z = _as_direction(Z, W, "Z")
    U, lam, V = _operator_eigen(W, depth, clock)
    c2 = (np.swapaxes(U, -1, -2) @ Z @ V) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(c2 == 0.0, 0.0, c2 / lam)
    return terms.sum(axis=(-2, -1))


def operator_matrix(W, depth, clock="normalized") -> np.ndarray:
    """The matrix of Abar_{N,W} acting on row-major vectorizations ``vec(Z) = Z.reshape(-1)``.

    Parameters
    ----------
    W : array_like, shape (..., d, d')
    depth : int or numpy.inf
    clock : {"normalized", "upstairs"}

    Returns
    -------
    M : ndarray, shape (..., d d', d d')
        Symmetric positive semi-definite, ``M @ Z.reshape(-1) == riemannian_gradient(W, Z,
        depth).reshape(-1)``; M = K diag(vec lam) K^T with K = kron(U, V) (row-major), i.e.
        (1/N) sum_j kron((W W^T)^{(N-j)/N}, (W^T W)^{(j-1)/N}) (mathematics.md section 2.3, there
        written kron(Q^T, P) for column-major vec).
    """
    W = _as_matrices(W)
    U, lam, V = _operator_eigen(W, depth, clock)
    n = W.shape[-2] * W.shape[-1]
    K = np.einsum("...ai,...bl->...abil", U, V).reshape(W.shape[:-2] + (n, n))
    return (K * lam.reshape(W.shape[:-2] + (1, n))) @ np.swapaxes(K, -1, -2)


# ----------------------------------------------------------------------------- volumes

def _singular_values_and_log_eigenvalues(W, N):
    """s and the (..., d, d) grid log lam_il (-inf where lam = 0) of square W."""
    s = np.linalg.svd(W, compute_uv=False)
    log_scale, ratio = _log_eigenvalue_grid(s, s, 1.0 / N)
    with np.errstate(divide="ignore"):
        return s, log_scale + np.log(ratio)


def log_volume_density(W, depth, coords="lebesgue", clock="normalized") -> np.ndarray:
    """log sqrt(det g^N_W): the log-density of the Riemannian volume of g^N.

    Parameters
    ----------
    W : array_like, shape (..., d, d)
        Square end-to-end matrices (ValueError otherwise).
    depth : int or numpy.inf
    coords : {"lebesgue", "svd"}
        ``"lebesgue"``: density with respect to dW,
        sqrt(det g^N) = prod_{i,l} lam_il^{-1/2}
        = N^{d(d-1)/2} det(S^2)^{(1-N)/(2N)} van(S^{2/N}) / van(S^2).
        ``"svd"``: CMV (2023) Theorem 1.1, the density in (Sigma, U, V) coordinates,
        N^{d(d-1)/2} det(S^2)^{(1-N)/(2N)} van(S^{2/N}) (N = inf: det(S^2)^{-1/2} van(log S^2)),
        i.e. the Lebesgue density times the Jacobian van(S^2) of dW = van(S^2) dS dU dV, where
        dU, dV are the volumes of O(d) in which the coordinates omega_ij (i < j) of the skew
        matrix U^T dU are orthonormal (the Frobenius metric halved).
    clock : {"normalized", "upstairs"}
        The upstairs metric <Z, A^{-1} Z> = g / N has density N^{-d^2/2} times the normalized one.

    Returns
    -------
    ndarray, shape (...)
        Computed in log space from the stable pair formula; exact at coincident singular values
        (where the ``"svd"`` density is 0: -inf). Rank-deficient W: +inf for N > 1 and N = inf
        (some lam_il vanish; for ``"svd"`` with a repeated zero singular value the limit depends
        on the direction of approach and +inf is returned by convention); for N = 1 the metric is
        Euclidean, 0 for ``"lebesgue"`` and log van(S^2) for ``"svd"``. Never NaN.
    """
    if coords not in _COORDS:
        raise ValueError(f"coords must be one of {_COORDS}, got {coords!r}")
    W = _as_matrices(W, square=True)
    N = _check_depth(depth)
    factor = _clock_factor(clock, N)
    d = W.shape[-1]
    s, log_lam = _singular_values_and_log_eigenvalues(W, N)
    out = -0.5 * log_lam.sum(axis=(-2, -1)) - 0.5 * d * d * np.log(factor)
    if coords == "svd":
        with np.errstate(invalid="ignore"):
            out = np.where(out == np.inf, np.inf, out + _log_vandermonde_squares(s))
    return out


def _log_vandermonde_squares(s) -> np.ndarray:
    """log van(S^2) = sum_{i<j} log|s_i^2 - s_j^2|, from max * (-expm1(delta))."""
    x = _log_squares(s)
    xi, xj = x[..., :, None], x[..., None, :]
    m = np.maximum(xi, xj)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(m == -np.inf, -np.inf, np.minimum(xi, xj) - m)
        terms = m + np.log(-np.expm1(delta))
    iu = np.triu_indices(s.shape[-1], 1)
    return terms[..., iu[0], iu[1]].sum(axis=-1)


def log_orthogonal_group_volume(d) -> float:
    """log c_d, c_d = volume of O(d) (both components) in the metric induced by Frobenius.

    c_d = 2 * 2^{d(d-1)/4} * prod_{k=1}^{d-1} |S^k|, |S^k| = 2 pi^{(k+1)/2} / Gamma((k+1)/2):
    SO(d) -> S^{d-1}, Q -> Q e_d is a Riemannian submersion with fibre SO(d-1) in the metric in
    which E_ij - E_ji (i < j) are orthonormal, so vol SO(d) = prod_k |S^k| there; the Frobenius
    norm of E_ij - E_ji is sqrt(2), which scales the d(d-1)/2-dimensional volume by
    2^{d(d-1)/4}, and O(d) has two components. c_1 = 2, c_2 = 4 sqrt(2) pi ~ 17.7715,
    c_3 = 32 sqrt(2) pi^2 ~ 446.647.
    """
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    k = np.arange(1, d)
    log_spheres = np.log(2.0) + 0.5 * (k + 1) * np.log(np.pi) - gammaln(0.5 * (k + 1))
    return float(np.log(2.0) + 0.25 * d * (d - 1) * np.log(2.0) + log_spheres.sum())


def log_orbit_volume(W, depth) -> np.ndarray:
    """log vol(O_W): the volume of the balanced fibre over W (Menon & Yu 2025).

    The balanced factorizations (W_N, ..., W_1) of W form one orbit of O(d)^{N-1}, acting by
    W_p -> O_p W_p O_{p-1}^T (O_0 = O_N = I), with the Frobenius metric on the factors:
    vol(O_W) = c_d^{N-1} prod_{i<j} [(s_i^2 - s_j^2) / (s_i^{2/N} - s_j^{2/N})]^{1/2}
    (mathematics.md section 3, the square root checked against the Gram determinant of the orbit
    map), c_d from :func:`log_orthogonal_group_volume`.

    Parameters
    ----------
    W : array_like, shape (..., d, d)
        Square end-to-end matrices.
    depth : int
        N >= 1. N = 1: the orbit is a point and log vol = 0 by convention (the formula gives
        c_d^0 * 1). N = inf raises ValueError: c_d^{N-1} and the product (which grows like
        N^{d(d-1)/4}) diverge; the N-independent shape prod_{i<j} lam_ij^{1/2} with the
        normalized lam of :func:`metric_eigenvalues` has a limit.

    Returns
    -------
    ndarray, shape (...)
        Equals (N-1) log c_d + 1/2 sum_{i<j} log(N lam_ij), finite at coincident singular values
        and at a simple zero singular value; -inf when 0 is a repeated singular value (N > 1):
        the orbit map is then not an immersion and its Gram determinant vanishes.
    """
    W = _as_matrices(W, square=True)
    N = _check_depth(depth)
    if N == np.inf:
        raise ValueError("the orbit volume diverges for depth = inf (c_d^(N-1) and N^(d(d-1)/4));"
                         " use metric_eigenvalues for its N-independent shape")
    d = W.shape[-1]
    _, log_lam = _singular_values_and_log_eigenvalues(W, N)
    iu = np.triu_indices(d, 1)
    pairs = log_lam[..., iu[0], iu[1]].sum(axis=-1) + len(iu[0]) * np.log(N)
    return (N - 1.0) * log_orthogonal_group_volume(d) + 0.5 * pairs
