"""End-to-end ("downstairs") dynamics of a deep linear network, batched over trajectories.

State: the end-to-end matrix W (d x d'), as entries or in SVD coordinates (below).
Deterministic flow (Arora, Cohen & Hazan 2018; Cohen, Menon & Veraszto 2023 "CMV", normalized
clock tau = N t; mathematics.md section 2):

    dW/dtau = -Abar_{N,W}(G),  G = P_Omega(W - b),
    Abar_{N,W}(Z) = U [lam o (U^T Z V)] V^T  with W = U S V^T (full SVD),
    lam_il = (1/N) (s_i^2 - s_l^2) / (s_i^{2/N} - s_l^{2/N}),  lam_ii = s_i^{2(N-1)/N},
    N = inf: lam_il = (s_i^2 - s_l^2) / log(s_i^2 / s_l^2)  (logarithmic mean).

Singular values of a rectangular W are padded with zeros (U is d x d, V is d' x d').  The SVD
is a one-sided Jacobi SVD (Hestenes 1958; Demmel & Veselic 1992): accurate for tiny singular
values, and Abar does not depend on which singular vectors are picked for repeated ones.

Integrators: Dormand & Prince 5(4) with Shampine's quartic dense output and the step control of
scipy's ``RK45`` (Hairer, Norsett & Wanner I, II.4), one step size per trajectory; and, for
``temperature > 0``, Euler-Maruyama on the Riemannian Langevin equation of mathematics.md
section 4 with the Ito drift correction T rho^{-1} div(rho A) in closed form (see
:func:`langevin_correction`).

Coordinates of the deterministic flow.  The entries of W resolve a singular value only down to
~ rtol |W| (eps |W| at best), yet at depth N >= 2 the flow moves small singular values in
relative terms: d log s_i / dtau = -s_i^{1-2/N} (U^T G V)_ii (N = inf: -s_i (U^T G V)_ii) is
bounded, so sign(det W) is invariant and |det W| may decay far below 1e-300 (Razin & Cohen
2020; their 2x2 task crosses det = 0 at det ~ 1e-11 when integrated in entries).  So a square
W at N >= 2 is carried in SVD coordinates y = (log s, U, V) (:func:`svd_velocity`) whenever
s_min <= 1e-3 s_max and every two singular values are a factor >= 1.25 apart; it goes back to
entries once s_min > 1e-2 s_max or two singular values come within a factor 1.1
(:func:`_wants_svd`; hysteresis against switching back and forth).  The gap condition is needed
because the rotation rates of U, V grow like 1 / (s_i^{2/N} - s_j^{2/N}) at coincident singular
values, where the SVD parametrization is singular; there the entries are the right state (and
Abar is exact there, see :func:`metric_lambda`).  Where the state is entries, resolvable
singular values (s_min > 1e-3 s_max) and near-coincident ones, the integration and its results
are those of the entry integrator.  Error control in SVD coordinates uses the scale rtol on
every coordinate: a relative error rtol on each s_i and an error rtol on the unit vectors u_i,
v_i, i.e. each term s_i u_i v_i^T to relative accuracy rtol, which is the entry control for
the largest term and resolves the small ones.  U, V are re-orthonormalized (modified
Gram-Schmidt, which keeps det U, det V) after each accepted step; sign(det W) = sign(det U
det V) is fixed at the change of coordinates and log|det W| = sum log s exactly.  Not covered:
rectangular W (no det; a small singular value is still resolved only to ~ rtol |W|), N = 1
(the flow is linear, dW/dtau = -G, and det W may change sign), and a square W with a small
cluster of near-coincident singular values (d >= 3).  The Langevin scheme keeps the entries.

Compile time and speed: the batch kernels are serial loops over runs (the wrapper runs
disjoint slices on threads; the kernels release the GIL), because a ``prange`` batch costs
several times more cold LLVM time for this call tree.  Small helpers are inlined into their
callers at the Numba IR level (``inline="always"``): that removes the array reference counting
of each call, which dominated the cost of a 2x2 evaluation.
"""
import numpy as np

from dlnmc._jit import jit
from dlnmc.kernels.task import CONVERGED, DIVERGED, DIVERGENCE_FACTOR, MAX_STEPS
from dlnmc.kernels.rng import normal

_EPS = np.finfo(np.float64).eps
_SWEEPS = 60

# Dormand-Prince 5(4) (the constants of scipy.integrate.RK45): stage matrix with the
# 5th-order weights as its last row (FSAL), error weights (5th - 4th order) and Shampine's
# dense-output matrix.  The RHS is autonomous, so the nodes are not needed.
_A = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [1 / 5, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3 / 40, 9 / 40, 0.0, 0.0, 0.0, 0.0],
    [44 / 45, -56 / 15, 32 / 9, 0.0, 0.0, 0.0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0.0, 0.0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0.0],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
])
_E = np.array([-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
_P = np.array([
    [1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
    [0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
    [0.0, 127303824393 / 49829197408, -318862633887 / 49829197408,
     701980252875 / 199316789632],
    [0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
    [0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
])
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
_SPREAD_IN, _SPREAD_OUT = 1e-3, 1e-2
_GAP_IN, _GAP_OUT = np.log(1.25), np.log(1.1)


# -- linear algebra of tiny matrices ---------------------------------------------------------

@jit
def _jacobi(A, L, R, s):
    """One-sided Jacobi SVD of a tall A (m x n, m >= n): A = L diag(s) R^T.

    On exit R (n x n) holds the accumulated rotations, s[:n] the column norms of A R and
    s[n:] = 0, L (m x m) the normalized columns completed to an orthonormal basis (by
    Gram-Schmidt on the unit vectors) where a column vanishes or m > n.  A is overwritten.
    """
    m, n = A.shape
    for i in range(n):
        norm = 0.0
        for k in range(m):
            norm += A[k, i] * A[k, i]
        s[i] = norm  # squared column norms, recomputed after each rotation
        for j in range(n):
            R[i, j] = 1.0 if i == j else 0.0
    for _sweep in range(_SWEEPS):
        rotated = False
        for i in range(n - 1):
            for j in range(i + 1, n):
                gamma = 0.0
                for k in range(m):
                    gamma += A[k, i] * A[k, j]
                alpha, beta = s[i], s[j]
                if abs(gamma) <= _EPS * np.sqrt(alpha * beta):
                    continue
                rotated = True
                zeta = (beta - alpha) / (2.0 * gamma)
                root = np.sqrt(1.0 + zeta * zeta) if abs(zeta) < 1e150 else abs(zeta)
                t = np.copysign(1.0, zeta) / (abs(zeta) + root)
                c = 1.0 / np.sqrt(1.0 + t * t)
                sn = c * t
                alpha = 0.0
                beta = 0.0
                for k in range(m):
                    a, b = A[k, i], A[k, j]
                    A[k, i] = c * a - sn * b
                    A[k, j] = sn * a + c * b
                    alpha += A[k, i] * A[k, i]
                    beta += A[k, j] * A[k, j]
                s[i] = alpha
                s[j] = beta
                for k in range(n):
                    a, b = R[k, i], R[k, j]
                    R[k, i] = c * a - sn * b
                    R[k, j] = sn * a + c * b
        if not rotated:
            break
    for j in range(m):
        s[j] = np.sqrt(s[j]) if j < n else 0.0
        inv = 1.0 / s[j] if s[j] > 0.0 else 0.0
        for k in range(m):
            L[k, j] = A[k, j] * inv if j < n else 0.0
    for j in range(m):
        if s[j] > 0.0:
            continue
        best = -1.0
        for e in range(m):  # the unit vector with the largest part outside the columns so far
            for k in range(m):
                A[k, 0] = 1.0 if k == e else 0.0
            for _twice in range(2):
                for q in range(m):
                    if q == j or (s[q] == 0.0 and q > j):
                        continue
                    dot = 0.0
                    for k in range(m):
                        dot += L[k, q] * A[k, 0]
                    for k in range(m):
                        A[k, 0] -= dot * L[k, q]
            norm = 0.0
            for k in range(m):
                norm += A[k, 0] * A[k, 0]
            if norm > best:
                best = norm
                for k in range(m):
                    L[k, j] = A[k, 0]
        norm = np.sqrt(best)
        for k in range(m):
            L[k, j] /= norm


@jit(inline="always")
def svd_small(W, U, s, V, A):
    """Full SVD W = U S V^T of a small d x d' matrix: U (d, d), V (d', d') orthogonal,
    ``s`` (max(d, d'),) the singular values, unsorted and padded with zeros so that S_ii = s_i.
    ``A`` is scratch of shape (max(d, d'), min(d, d'))."""
    d, dp = W.shape
    tall = d >= dp
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            A[i, j] = W[i, j] if tall else W[j, i]
    left, right = (U, V) if tall else (V, U)
    _jacobi(A, left, right, s)


@jit(inline="always")
def metric_lambda(s, inv_depth, lam):
    """lam_il of mathematics.md section 2.3 for i < d, l < d' (``lam`` is d x d'), in the stable
    form lam = s_hi^{2(N-1)/N} expm1(-u) / (N expm1(-u/N)), u = 2 log(s_hi / s_lo) >= 0
    (N = inf, ``inv_depth = 0``: s_hi^2 (-expm1(-u)) / u), exact for coincident and zero
    singular values."""
    d, dp = lam.shape
    p = 2.0 - 2.0 * inv_depth
    for c in range(min(d, dp)):
        lam[c, c] = s[c] ** p
    for i in range(d):
        for l in range(dp):
            if i == l:
                continue
            if l < i < dp:  # symmetric: lam[l, i] is already there
                lam[i, l] = lam[l, i]
                continue
            hi, lo = (i, l) if s[i] >= s[l] else (l, i)
            top = lam[hi, hi] if s[hi] > 0.0 else s[hi] ** p  # s[hi] > 0: hi < min(d, d')
            if s[hi] == s[lo]:
                lam[i, l] = top
                continue
            u = 2.0 * np.log(s[hi] / s[lo])
            if inv_depth == 0.0:
                lam[i, l] = top * (-np.expm1(-u)) / u
            else:
                lam[i, l] = top * np.expm1(-u) * inv_depth / np.expm1(-u * inv_depth)


@jit(inline="always")
def sandwich(L, Z, R, out, tmp):
    """out = L Z R^T for d x d' matrices Z, out and square L, R; ``tmp`` is d x d'.
    Coordinates of Z in the frame u_i v_l^T are ``sandwich(U.T, Z, V.T)``; back with
    ``sandwich(U, M, V)``."""
    d, dp = Z.shape
    for i in range(d):
        for l in range(dp):
            acc = 0.0
            for k in range(d):
                acc += L[i, k] * Z[k, l]
            tmp[i, l] = acc
    for i in range(d):
        for l in range(dp):
            acc = 0.0
            for k in range(dp):
                acc += tmp[i, k] * R[l, k]
            out[i, l] = acc


@jit(inline="always")
def residual(W, obs_i, obs_j, vals, G):
    """G = P_Omega(W - b); returns ``(loss, finite)``: l = 1/2 |G|^2 and whether every entry
    of W is finite."""
    total = 0.0
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            G[i, j] = 0.0
            total += abs(W[i, j])
    loss = 0.0
    for m in range(vals.shape[0]):
        e = W[obs_i[m], obs_j[m]] - vals[m]
        G[obs_i[m], obs_j[m]] = e
        loss += e * e
    loss *= 0.5
    return loss, np.isfinite(total + loss)


# -- the Ito drift correction of the Riemannian Langevin equation ---------------------------

@jit
def _phi2(z):
    """(e^z - 1 - z) / z^2, by its Taylor series for |z| < 0.1."""
    if abs(z) >= 0.1:
        return (np.expm1(z) - z) / (z * z)
    acc = 0.0
    fact = 3628800.0  # 10!
    for k in range(8, -1, -1):  # sum_{k=0}^{8} z^k / (k + 2)!
        acc = acc * z + 1.0 / fact
        fact /= k + 2
    return acc


@jit
def _g(v):
    """1 / (1 - e^{-v}) - 1/v: half the log-derivative of the logarithmic mean; series for
    |v| < 0.1 (Bernoulli numbers), g(0) = 1/2, g(inf) = 1, g(-inf) = 0."""
    if abs(v) >= 0.1:
        return -1.0 / np.expm1(-v) - 1.0 / v
    v2 = v * v
    return 0.5 + v * (1.0 / 12 - v2 * (1.0 / 720 - v2 * (1.0 / 30240 - v2 / 1209600)))


@jit
def langevin_correction(s, lam, inv_depth, kappa):
    """kappa_c such that rho^{-1} div(rho A) = U diag(kappa) V^T, rho = det(A)^{-1/2}.

    A is the normalized operator Abar_{N,W} as a d d' x d d' matrix (mathematics.md section 4.2).
    Its frame is diagonal: rho^{-1} div(rho A) = div A + A grad log rho, and in the basis
    u_a v_b^T first-order SVD perturbation gives, for c < min(d, d'),

        kappa_c = (p/2) lam_cc / s_c + sum_o [phi(s_c, s_o) - (lam_cc / s_c) gamma(u_co)],

    summed over o != c, o < d and again over o != c, o < d' (padded zeros included), with
    p = 2(N-1)/N, phi(s_c, s_o) = s_c (lam_cc - lam_co) / (s_c^2 - s_o^2) (from div A),
    u_co = 2 log(s_c / s_o) and gamma(u) = g(u) - g(u/N)/N = s_c d log lam_co / d s_c / 2
    (from grad log rho).  For |u| <= 1 phi is evaluated through phi2 and E1(z) = 1 + z phi2(z)
    so that coincident singular values need no limit.  Needs every s_c > 0 (c < min(d, d')).
    """
    d, dp = lam.shape
    k = min(d, dp)
    p = 2.0 - 2.0 * inv_depth
    for c in range(k):
        sc = s[c]
        ratio = lam[c, c] / sc
        acc = 0.5 * p * ratio
        for o in range(max(d, dp)):
            if o == c:
                continue
            mult = (o < d) + (o < dp)
            so = s[o]
            if so > 0.0:
                u = 2.0 * np.log(sc / so)
            else:
                u = np.inf
            gam = _g(u) - (_g(u * inv_depth) * inv_depth if inv_depth > 0.0 else 0.0)
            if abs(u) <= 1.0:
                a, b = _phi2(-u), _phi2(-u * inv_depth)
                e1, e1n = 1.0 - u * a, 1.0 - u * inv_depth * b
                phi = ratio * (a - b * inv_depth) / (e1 * e1n)
            else:
                phi = sc * (lam[c, c] - lam[c, o] if o < dp else lam[c, c] - lam[o, c]) \
                    / ((sc - so) * (sc + so))
            acc += mult * (phi - ratio * gam)
        kappa[c] = acc


# -- trajectories ------------------------------------------------------------------------

@jit
def _workspace(d, dp):
    """Scratch for :func:`velocity`: (U, s, V, SVD scratch, lam, M, tmp)."""
    m = max(d, dp)
    return (np.empty((d, d)), np.empty(m), np.empty((dp, dp)), np.empty((m, min(d, dp))),
            np.empty((d, dp)), np.empty((d, dp)), np.empty((d, dp)))


@jit(inline="always")
def velocity(W, obs_i, obs_j, vals, inv_depth, ws, out):
    """out = -Abar_{N,W}(P_Omega(W - b)); returns ``(loss, finite)`` as :func:`residual`.

    ``ws`` = (U, s, V, scratch, lam, M, tmp) from ``_workspace``; on exit it holds the SVD of
    W, the metric eigenvalues and M = -lam o (U^T G V), the frame coordinates of the result."""
    U, s, V, A, lam, M, tmp = ws
    loss, finite = residual(W, obs_i, obs_j, vals, out)
    svd_small(W, U, s, V, A)
    metric_lambda(s, inv_depth, lam)
    sandwich(U.T, out, V.T, M, tmp)
    d, dp = M.shape
    for i in range(d):
        for l in range(dp):
            M[i, l] *= -lam[i, l]
    sandwich(U, M, V, out, tmp)
    return loss, finite


@jit
def _svd_workspace(d):
    """Scratch for :func:`svd_velocity`: (s, W, G, K, tmp)."""
    return np.empty(d), np.empty((d, d)), np.empty((d, d)), np.empty((d, d)), np.empty((d, d))


@jit(inline="always")
def compose(y, s, W):
    """W = U diag(s) V^T from the SVD-coordinate state y = (log s, U, V) (``s`` is scratch)."""
    d = W.shape[0]
    for i in range(d):
        s[i] = np.exp(y[i])
    for a in range(d):
        for b in range(d):
            acc = 0.0
            for i in range(d):
                acc += y[d + a * d + i] * s[i] * y[d + d * d + b * d + i]
            W[a, b] = acc


@jit(inline="always")
def svd_velocity(y, obs_i, obs_j, vals, inv_depth, ws, out):
    """out = d(log s, U, V)/dtau along dW/dtau = -Abar_{N,W}(G) for the square W = U diag(s) V^T
    held as y = (log s, U row-major, V row-major); returns ``(loss, finite)`` of W.

    With K = U^T G V and M = -lam o K the frame coordinates of dW/dtau: d s_i = M_ii, so
    d log s_i / dtau = -s_i^{1 - 2/N} K_ii; and dU = U Omega_U, dV = V Omega_V with Omega
    antisymmetric and M_ij = (Omega_U)_ij s_j - s_i (Omega_V)_ij for i != j.  Solving that
    pair with M_ji, and using lam_ij / (s_i^2 - s_j^2) = c_ij = 1 / (N (s_i^{2/N} - s_j^{2/N}))
    (N = inf: 1 / (2 log(s_i / s_j))),

        (Omega_U)_ij = c_ij (s_j K_ij + s_i K_ji),  (Omega_V)_ij = c_ij (s_i K_ij + s_j K_ji).

    c_ij is evaluated from the log gap u = 2 |log(s_i / s_j)| as s_hi^{-2/N} / (N (-expm1(-u/N)))
    (N = inf: 1 / u), exact however small s_lo is.  ``ws`` = (s, W, G, K, tmp) from
    ``_svd_workspace``.
    """
    s, W, G, K, tmp = ws
    d = W.shape[0]
    u0, v0 = d, d + d * d  # U_ai = y[u0 + a d + i], V_bj = y[v0 + b d + j]
    compose(y, s, W)
    loss, finite = residual(W, obs_i, obs_j, vals, G)
    for a in range(d):  # K = U^T (G V)
        for j in range(d):
            acc = 0.0
            for b in range(d):
                acc += G[a, b] * y[v0 + b * d + j]
            tmp[a, j] = acc
    for i in range(d):
        for j in range(d):
            acc = 0.0
            for a in range(d):
                acc += y[u0 + a * d + i] * tmp[a, j]
            K[i, j] = acc
    p = 1.0 - 2.0 * inv_depth
    for i in range(d):
        out[i] = -np.exp(p * y[i]) * K[i, i]
        G[i, i] = 0.0  # G <- Omega_U, tmp <- Omega_V
        tmp[i, i] = 0.0
        for j in range(i + 1, d):
            hi = max(y[i], y[j])
            u = 2.0 * abs(y[i] - y[j])
            gap = u if inv_depth == 0.0 else -np.expm1(-u * inv_depth) / inv_depth
            c = np.exp(-2.0 * hi * inv_depth) / gap
            if y[i] < y[j]:
                c = -c
            a = c * (s[j] * K[i, j] + s[i] * K[j, i])
            b = c * (s[i] * K[i, j] + s[j] * K[j, i])
            G[i, j], G[j, i] = a, -a
            tmp[i, j], tmp[j, i] = b, -b
    for a in range(d):
        for b in range(d):
            du = 0.0
            dv = 0.0
            for k in range(d):
                du += y[u0 + a * d + k] * G[k, b]
                dv += y[v0 + a * d + k] * tmp[k, b]
            out[u0 + a * d + b] = du
            out[v0 + a * d + b] = dv
    return loss, finite


@jit
def _orthonormalize(y, start, d):
    """Modified Gram-Schmidt on the columns of the d x d matrix Q_ij = y[start + i d + j], in
    place (R has a positive diagonal, so the sign of det Q is kept)."""
    for j in range(d):
        for q in range(j):
            dot = 0.0
            for k in range(d):
                dot += y[start + k * d + q] * y[start + k * d + j]
            for k in range(d):
                y[start + k * d + j] -= dot * y[start + k * d + q]
        norm = 0.0
        for k in range(d):
            norm += y[start + k * d + j] ** 2
        norm = np.sqrt(norm)
        for k in range(d):
            y[start + k * d + j] /= norm


@jit
def _det_sign(Q, A):
    """Sign of det Q for a square Q by Gaussian elimination with partial pivoting on the copy
    A (same shape)."""
    d = Q.shape[0]
    for i in range(d):
        for j in range(d):
            A[i, j] = Q[i, j]
    sign = 1.0
    for k in range(d):
        p = k
        for i in range(k + 1, d):
            if abs(A[i, k]) > abs(A[p, k]):
                p = i
        if A[p, k] == 0.0:
            return 0.0
        if p != k:
            sign = -sign
            for j in range(d):
                a = A[k, j]
                A[k, j] = A[p, j]
                A[p, j] = a
        if A[k, k] < 0.0:
            sign = -sign
        for i in range(k + 1, d):
            f = A[i, k] / A[k, k]
            for j in range(k, d):
                A[i, j] -= f * A[k, j]
    return sign


@jit
def _wants_svd(x, in_svd):
    """Whether to carry SVD coordinates, given the log singular values x: enter once
    s_min <= _SPREAD_IN s_max with every pair of singular values a factor >= e^_GAP_IN apart,
    leave once s_min > _SPREAD_OUT s_max or a pair comes within e^_GAP_OUT (hysteresis)."""
    spread = np.log(_SPREAD_OUT if in_svd else _SPREAD_IN)
    gap = _GAP_OUT if in_svd else _GAP_IN
    lo = np.inf
    hi = -np.inf
    for i in range(x.shape[0]):
        lo = min(lo, x[i])
        hi = max(hi, x[i])
        for j in range(i):
            if not abs(x[i] - x[j]) >= gap:
                return False
    return lo > -np.inf and hi < np.inf and lo - hi <= spread


@jit(inline="always")
def _rms(x, scale, n):
    """RMS of x[:n] / scale[:n] (scipy's error norm)."""
    acc = 0.0
    for i in range(n):
        acc += (x[i] / scale[i]) ** 2
    return np.sqrt(acc / n)


@jit(inline="always")
def _record(c, step, t, W, loss, hist_time, hist_step, hist_loss, hist_w):
    """Write checkpoint ``c`` of one run."""
    hist_time[c] = t
    hist_step[c] = step
    hist_loss[c] = loss
    dp = W.shape[1]
    for i in range(W.shape[0]):
        for j in range(dp):
            hist_w[c, i * dp + j] = W[i, j]


@jit(inline="always")
def _outcome(loss, cap, tol, finite):
    """CONVERGED / DIVERGED / -1 (keep going)."""
    if not finite or loss > cap:
        return DIVERGED
    if loss <= tol:
        return CONVERGED
    return -1


@jit
def _matrix(svd, y, d, dp, s, W):
    """The W of state y: its entries, or :func:`compose` into ``W`` (SVD coordinates)."""
    if svd:
        compose(y, s, W)
        return W
    return y[:d * dp].reshape((d, dp))


@jit
def _change_coordinates(svd, y, x, ws, sws):
    """Rewrite the state y of a square W in place: (log s, U, V) -> the entries of W if
    ``svd``, else entries -> (x, U, V) from :func:`velocity`'s SVD in ``ws`` (x = log s).
    Returns sign(det W) = sign(det U det V) of the new SVD coordinates (NaN for entries)."""
    d = x.shape[0]
    if svd:
        W = sws[1]
        compose(y, sws[0], W)
        for k in range(d * d):
            y[k] = W[k // d, k % d]
        return np.nan
    U, V, A = ws[0], ws[2], ws[3]
    for i in range(d):
        y[i] = x[i]
        for j in range(d):
            y[d + i * d + j] = U[i, j]
            y[d + d * d + i * d + j] = V[i, j]
    return _det_sign(U, A) * _det_sign(V, A)


@jit
def flow_batch(W, obs_i, obs_j, vals, inv_depth, t_max, tol, rtol, atol, max_steps, ckpt,
               hist_time, hist_step, hist_loss, hist_w, hist_logdet, hist_sign, time_out,
               steps_out, loss_out, status_out, logdet_out, sign_out):
    """Integrate dW/dtau = -Abar_{N,W}(G) for every ``W[r]`` (runs x d x d', in place) from
    tau = 0 until loss <= tol, tau = t_max, ``max_steps`` accepted steps or divergence.

    Dormand-Prince 5(4) with scipy's step control, the last step shortened to end exactly at
    t_max; checkpoints ``ckpt`` (sorted tau) filled by dense output; one output slot per run.
    The state is the entries of W, or, for square W at depth N >= 2 whose singular values are
    spread and apart (:func:`_wants_svd`, checked before each step), y = (log s, U, V) with the
    error scale rtol on every coordinate and U, V re-orthonormalized after each accepted step.
    There ``logdet`` = sum log s and ``sign`` = sign(det U det V) are written for the
    checkpoints and the final state; NaN where the state is the entries.
    Serial: the wrapper runs disjoint slices of the batch on threads (the kernel drops the GIL).
    """
    d, dp = W.shape[1], W.shape[2]
    n_w, n_s = d * dp, d + 2 * d * d
    can_svd = d == dp and inv_depth <= 0.5
    ws = _workspace(d, dp)
    sws = _svd_workspace(d)
    s_w = ws[1]
    y = np.empty(max(n_w, n_s))  # the state: W's entries (n_w) or (log s, U, V) (n_s)
    y_new = np.empty(y.size)
    Y, Y_new = y[:n_w].reshape((d, dp)), y_new[:n_w].reshape((d, dp))
    stages = np.empty(7 * y.size)
    K_w = stages[:7 * n_w].reshape((7, d, dp))  # the stages as matrices (entries)
    scale = np.empty(y.size)
    err = np.empty(y.size)
    x = np.empty(d)
    G = np.empty((d, dp))
    Wc = np.empty((d, dp))
    for r in range(W.shape[0]):
        Wr = W[r]
        n, sign, fresh = n_w, np.nan, False  # n: length of the state, n_s in SVD coordinates
        svd = n != n_w  # (not the literal False: it would type the calls below twice)
        K = stages[:7 * n].reshape((7, n))  # the stages as flat vectors
        for k in range(n):
            y[k] = Wr[k // dp, k % dp]
        loss, finite = velocity(Y, obs_i, obs_j, vals, inv_depth, ws, K_w[0])
        cap = DIVERGENCE_FACTOR * max(1.0, loss)
        t = 0.0
        c = 0
        while c < ckpt.shape[0] and ckpt[c] <= 0.0:
            _record(c, 0, 0.0, Wr, loss, hist_time[r], hist_step[r], hist_loss[r], hist_w[r])
            c += 1
        status = _outcome(loss, cap, tol, finite)
        # first step: the first guess of Hairer, Norsett & Wanner I, II.4 (scipy's
        # select_initial_step without its second evaluation); the controller corrects it
        for k in range(n):
            scale[k] = atol + abs(y[k]) * rtol
        d0 = _rms(y, scale, n)
        d1 = _rms(K[0], scale, n)
        h_abs = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, t_max)
        steps = 0
        while status < 0:
            if t >= t_max or steps >= max_steps:
                status = MAX_STEPS
                break
            if can_svd:
                for i in range(d):  # log singular values: the state's, or from velocity's SVD
                    x[i] = y[i] if svd else np.log(s_w[i])
                if _wants_svd(x, svd) != svd:
                    sign = _change_coordinates(svd, y, x, ws, sws)
                    n = n_w if svd else n_s
                    svd = n != n_w
                    K = stages[:7 * n].reshape((7, n))
                    fresh = True
            rejected = False
            while True:
                if not h_abs >= 10.0 * (np.nextafter(t, np.inf) - t):
                    status = DIVERGED  # step size underflow: blow-up or NaN
                    break
                t_new = min(t + h_abs, t_max)
                h = t_new - t
                # stages 2..7, the 7th at the new state (FSAL); stage 1 too after a change
                # of coordinates (its stage point is y itself)
                for st in range(0 if fresh else 1, 7):
                    for k in range(n):
                        acc = 0.0
                        for q in range(st):
                            acc += _A[st, q] * K[q, k]
                        y_new[k] = y[k] + h * acc
                    if svd:
                        loss_new, finite = svd_velocity(y_new, obs_i, obs_j, vals, inv_depth,
                                                        sws, K[st])
                    else:
                        loss_new, finite = velocity(Y_new, obs_i, obs_j, vals, inv_depth, ws,
                                                    K_w[st])
                fresh = False
                for k in range(n):
                    acc = 0.0
                    for q in range(7):
                        acc += _E[q] * K[q, k]
                    err[k] = h * acc
                    scale[k] = rtol if svd else atol + max(abs(y[k]), abs(y_new[k])) * rtol
                norm = _rms(err, scale, n)
                if norm < 1.0:
                    factor = _MAX_FACTOR if norm == 0.0 else min(_MAX_FACTOR,
                                                                 _SAFETY * norm**-0.2)
                    h_abs *= min(1.0, factor) if rejected else factor
                    break
                h_abs *= max(_MIN_FACTOR, _SAFETY * norm**-0.2) if np.isfinite(norm) \
                    else _MIN_FACTOR
                rejected = True
            if status >= 0:
                break
            steps += 1
            while c < ckpt.shape[0] and ckpt[c] <= t_new:
                # Shampine's quartic y(t + x h) = y + h sum_q (K^T P)_q x^{q+1}; exact at x = 1
                xc = (ckpt[c] - t) / h
                for k in range(n):
                    acc = 0.0
                    xp = 1.0
                    for q in range(4):
                        xp *= xc
                        kp = 0.0
                        for m in range(7):
                            kp += K[m, k] * _P[m, q]
                        acc += kp * xp
                    err[k] = y_new[k] if ckpt[c] == t_new else y[k] + h * acc
                Wk = _matrix(svd, err, d, dp, sws[0], Wc)
                _record(c, steps, ckpt[c], Wk, residual(Wk, obs_i, obs_j, vals, G)[0],
                        hist_time[r], hist_step[r], hist_loss[r], hist_w[r])
                hist_logdet[r, c] = err[:d].sum() if svd else np.nan
                hist_sign[r, c] = sign if svd else np.nan
                c += 1
            t = t_new
            loss = loss_new
            for k in range(n):
                y[k] = y_new[k]
                K[0, k] = K[6, k]
            if svd:
                _orthonormalize(y, d, d)
                _orthonormalize(y, d + d * d, d)
            status = _outcome(loss, cap, tol, finite)
        Wk = _matrix(svd, y, d, dp, sws[0], Wc)
        for i in range(d):
            for j in range(dp):
                Wr[i, j] = Wk[i, j]
        logdet_out[r] = y[:d].sum() if svd else np.nan
        sign_out[r] = sign if svd else np.nan
        time_out[r] = t
        steps_out[r] = steps
        loss_out[r] = loss
        status_out[r] = status


@jit
def langevin_batch(W, obs_i, obs_j, vals, inv_depth, temperature, dt, t_max, tol, ckpt, keys,
                   hist_time, hist_step, hist_loss, hist_w, time_out, steps_out, loss_out,
                   status_out):
    """Euler-Maruyama for the Riemannian Langevin equation (mathematics.md section 4) for every
    ``W[r]`` (in place), one SVD per step:

        W <- W + h [-Abar(G) + T U diag(kappa) V^T] + sqrt(2 T h) U [sqrt(lam) o Xi] V^T,

    fixed h = dt (the last step shortened to end at t_max), Xi_k = ``normal(keys[r],
    n d d' + k)`` at step n.  (U^T Xi V has the law of Xi, so the noise sqrt(2T) Abar^{1/2} dB
    is drawn directly in the frame.)  Checkpoints are recorded at the first step at or after
    each; stops as :func:`flow_batch` does.  Serial, like :func:`flow_batch`.
    """
    d, dp = W.shape[1], W.shape[2]
    ws = _workspace(d, dp)
    U, s, V, _scratch, lam, M, tmp = ws
    kappa = np.empty(min(d, dp))
    G = np.empty((d, dp))
    size = np.uint64(d * dp)
    noise = np.sqrt(2.0 * temperature)
    n_total = int(np.ceil(t_max / dt * (1.0 - 1e-12)))
    for r in range(W.shape[0]):
        Wr = W[r]
        cap = np.inf
        c = 0
        n = 0
        t = 0.0
        while True:
            loss, finite = velocity(Wr, obs_i, obs_j, vals, inv_depth, ws, G)
            while c < ckpt.shape[0] and ckpt[c] <= t * (1.0 + 1e-12):
                _record(c, n, t, Wr, loss, hist_time[r], hist_step[r], hist_loss[r], hist_w[r])
                c += 1
            if n == 0:
                cap = DIVERGENCE_FACTOR * max(1.0, loss)
            status = _outcome(loss, cap, tol, finite)
            if status >= 0:
                break
            if n >= n_total:
                status = MAX_STEPS
                break
            t_next = t_max if n + 1 == n_total else (n + 1) * dt
            h = t_next - t
            langevin_correction(s, lam, inv_depth, kappa)
            root = noise * np.sqrt(h)
            base = np.uint64(n) * size
            for i in range(d):
                for l in range(dp):
                    xi = normal(keys[r], base + np.uint64(i * dp + l))
                    M[i, l] = h * M[i, l] + root * np.sqrt(lam[i, l]) * xi
                    if i == l:
                        M[i, l] += h * temperature * kappa[i]
            sandwich(U, M, V, G, tmp)
            for i in range(d):
                for l in range(dp):
                    Wr[i, l] += G[i, l]
            n += 1
            t = t_next
        time_out[r] = t
        steps_out[r] = n
        loss_out[r] = loss
        status_out[r] = status
