"""Slow, obviously correct NumPy references shared by the tests.

Each section belongs to one module under test; the references use plain matrix products on one
trajectory at a time and nothing from the code they check.
"""
import numpy as np

# ---------------------------------------------------------------------------------------
# engine (dlnmc.simulate): plain GD on W = W_N ... W_1, one trajectory at a time
# ---------------------------------------------------------------------------------------


def end_to_end(factors):
    """W = W_N ... W_1 for one trajectory (factors ordered W_1 first)."""
    W = factors[0]
    for F in factors[1:]:
        W = F @ W
    return W


def loss(W, mask, targets):
    """1/2 sum over observed entries of (W_ij - b_ij)^2."""
    return 0.5 * np.sum((mask * (W - targets)) ** 2)


def factor_gradients(factors, mask, targets):
    """dl/dW_p = (W_N ... W_{p+1})^T G (W_{p-1} ... W_1)^T, G = P_Omega(W - b)."""
    N = len(factors)
    G = mask * (end_to_end(factors) - targets)
    grads = []
    for p in range(N):
        left = end_to_end(factors[p + 1:]) if p + 1 < N else np.eye(G.shape[0])
        right = end_to_end(factors[:p]) if p > 0 else np.eye(G.shape[1])
        grads.append(left.T @ G @ right.T)
    return grads


def gd_trajectory(factors, mask, targets, lr, steps):
    """``steps`` plain GD steps, every factor from the old ones; returns (factors, losses)."""
    factors = [np.array(F, dtype=np.float64) for F in factors]
    losses = []
    for _ in range(steps):
        losses.append(loss(end_to_end(factors), mask, targets))
        grads = factor_gradients(factors, mask, targets)
        factors = [F - lr * g for F, g in zip(factors, grads)]
    losses.append(loss(end_to_end(factors), mask, targets))
    return factors, np.array(losses)


# ---------------------------------------------------------------------------------------
# geometry (dlnmc.geometry): brute-force operators, quadrature, Gram determinants
# ---------------------------------------------------------------------------------------
import scipy.linalg  # noqa: E402
import scipy.stats  # noqa: E402


def psd_power(M, p, rtol=1e-12):
    """M^p for a symmetric PSD M by eigh; eigenvalues below rtol * max are exactly 0, and
    0^p = 0 for p > 0, 1 for p == 0 (identity on the kernel)."""
    w, Q = np.linalg.eigh(M)
    w = np.where(w <= rtol * max(w.max(), 0.0), 0.0, w)
    return (Q * w**p) @ Q.T


def brute_operator(W, depth):
    """(1/N) sum_j kron(P_j, Q_j), P_j = (W W^T)^{(N-j)/N}, Q_j = (W^T W)^{(j-1)/N}: the
    normalized operator on row-major vec(Z) = Z.reshape(-1), finite depth. Powers from the full
    SVD of W with singular values padded by zeros and 0^0 = 1 (REFERENCE.md section 2)."""
    U, s, Vt = np.linalg.svd(W)
    su = np.zeros(W.shape[0])
    sv = np.zeros(W.shape[1])
    su[: s.size], sv[: s.size] = s, s
    M = np.zeros((W.size, W.size))
    for j in range(1, depth + 1):
        P = (U * su ** (2.0 * (depth - j) / depth)) @ U.T
        Q = (Vt.T * sv ** (2.0 * (j - 1) / depth)) @ Vt
        M += np.kron(P, Q)
    return M / depth


def brute_operator_inf(W, nodes=80):
    """int_0^1 kron((W W^T)^{1-x}, (W^T W)^x) dx by Gauss-Legendre, powers by eigh."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    x, w = 0.5 * (x + 1.0), 0.5 * w
    A, B = W @ W.T, W.T @ W
    return sum(wk * np.kron(psd_power(A, 1.0 - xk), psd_power(B, xk)) for xk, wk in zip(x, w))


def skew_basis(d):
    """Frobenius-orthonormal basis (E_ab - E_ba) / sqrt(2), a < b, of so(d)."""
    basis = []
    for a in range(d):
        for b in range(a + 1, d):
            E = np.zeros((d, d))
            E[a, b], E[b, a] = 1.0, -1.0
            basis.append(E / np.sqrt(2.0))
    return basis


def balanced_factors(W, depth, rng):
    """W_p = Q_p S^{1/N} Q_{p-1}^T with Q_0 = V, Q_N = U and Haar Q_1 .. Q_{N-1}."""
    U, s, Vt = np.linalg.svd(W)
    d = W.shape[0]
    Qs = [Vt.T] + [scipy.stats.ortho_group.rvs(d, random_state=rng) for _ in range(depth - 1)]
    Qs.append(U)
    root = np.diag(s ** (1.0 / depth))
    return [Qs[p + 1] @ root @ Qs[p].T for p in range(depth)]


def orbit_gram_log_volume(factors):
    """1/2 log det(J^T J) of the orbit map O(d)^{N-1} -> factors, W_p -> O_p W_p O_{p-1}^T,
    at the identity, in Frobenius-orthonormal coordinates of so(d)^{N-1} (factors W_1 first)."""
    N, d = len(factors), factors[0].shape[0]
    columns = []
    for p in range(N - 1):  # O_{p+1} moves W_{p+1} (left) and W_{p+2} (right), 1-based
        for E in skew_basis(d):
            tangent = [np.zeros((d, d)) for _ in range(N)]
            tangent[p] = E @ factors[p]
            tangent[p + 1] = -factors[p + 1] @ E
            columns.append(np.concatenate([t.ravel() for t in tangent]))
    J = np.array(columns).T
    return 0.5 * np.linalg.slogdet(J.T @ J)[1]


def svd_jacobian_log_abs_det(s, U0, V0, h=1e-5):
    """log|det| of the Jacobian of (s, a, b) -> U0 expm(K(a)) diag(s) expm(K(b))^T V0^T at
    a = b = 0 by central differences, K(a) = sum_{i<j} a_ij (E_ij - E_ji): the SVD map in local
    coordinates; CMV's dW = van(S^2) dS dU dV says this is log van(S^2)."""
    d = s.size
    k = d * (d - 1) // 2
    skew = [np.sqrt(2.0) * E for E in skew_basis(d)]

    def W_of(theta):
        A = sum(t * E for t, E in zip(theta[d: d + k], skew))
        B = sum(t * E for t, E in zip(theta[d + k:], skew))
        return U0 @ scipy.linalg.expm(A) @ np.diag(theta[:d]) @ scipy.linalg.expm(B).T @ V0.T

    theta0 = np.concatenate([s, np.zeros(2 * k)])
    J = np.empty((d * d, d * d))
    for c in range(d * d):
        e = np.zeros(d * d)
        e[c] = h
        J[:, c] = ((W_of(theta0 + e) - W_of(theta0 - e)) / (2.0 * h)).ravel()
    return np.linalg.slogdet(J)[1]


def log_volume_o3_by_euler_angles(nodes=40, h=1e-6):
    """log vol O(3) in the Frobenius metric: 2 * int sqrt(det(J^T J)) over ZYZ Euler angles,
    J by central differences; the density depends on beta only (Gauss-Legendre in beta)."""
    def R(a, b, c):
        def rz(t):
            return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        return rz(a) @ ry @ rz(c)

    x, w = np.polynomial.legendre.leggauss(nodes)
    betas, weights = 0.5 * np.pi * (x + 1.0), 0.5 * np.pi * w
    total = 0.0
    for beta, wk in zip(betas, weights):
        p = np.array([0.3, beta, 1.1])
        J = np.array([((R(*(p + h * e)) - R(*(p - h * e))) / (2 * h)).ravel()
                      for e in np.eye(3)]).T
        total += wk * np.sqrt(np.linalg.det(J.T @ J))
    return np.log(2.0 * (2.0 * np.pi) ** 2 * total)


# ---------------------------------------------------------------------------------------
# runner (dlnmc.runner, dlnmc.cli, Dask): bitwise comparison of result tables
# ---------------------------------------------------------------------------------------
def assert_tables_identical(a, b):
    """Same columns, dtypes, attrs and values; floats compared by their bits (NaN and -0.0
    included), everything else by ``Series.equals``."""
    assert list(a.columns) == list(b.columns)
    assert list(a.dtypes) == list(b.dtypes)
    assert a.attrs == b.attrs
    for col in a.columns:
        x, y = a[col], b[col]
        if x.dtype == np.float64:
            assert np.array_equal(x.to_numpy().view(np.int64), y.to_numpy().view(np.int64)), col
        else:
            assert x.equals(y), col
