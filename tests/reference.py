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


def rmsprop_trajectory(factors, mask, targets, lr, steps, scale=1.0, eps=1e-4, decay=0.99):
    """Arora et al. (2019)'s global RMSprop on the objective ``scale * l``: one step size per
    iteration, lr / (sqrt(a / (1 - decay^t)) + eps), a the running average of the squared
    gradient norm over all factors; returns (factors, losses of l)."""
    factors = [np.array(F, dtype=np.float64) for F in factors]
    losses, average = [], 0.0
    for t in range(1, steps + 1):
        losses.append(loss(end_to_end(factors), mask, targets))
        grads = [scale * g for g in factor_gradients(factors, mask, targets)]
        average = decay * average + (1 - decay) * sum(np.sum(g * g) for g in grads)
        step = lr / (np.sqrt(average / (1 - decay**t)) + eps)
        factors = [F - step * g for F, g in zip(factors, grads)]
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
    SVD of W with singular values padded by zeros and 0^0 = 1 (mathematics.md section 2.3)."""
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


# ---------------------------------------------------------------------------------------
# stats (dlnmc.stats, dlnmc.manifold, dlnmc.predictions): high-precision band integrals on
# the 2x2 diagonal task, brute-force nearest rank-r completions
# ---------------------------------------------------------------------------------------
def band_mass_2x2(t, eps, depth, orbit, dps=30):
    """int_{|u| < eps} rho_N(W) lam_12^{orbit/2} du at W = [[1, a], [b, 1]],
    a = sqrt(1-u) e^t, b = sqrt(1-u) e^{-t}, in mpmath: singular values from the trace and
    determinant of W^T W, lam_12 = (1/N)(s1^2 - s2^2)/(s1^{2/N} - s2^{2/N}) by the direct
    quotient, rho_N = (s1 s2)^{-(N-1)/N} / lam_12; quadrature in v = log(eps/|u|) on [0, inf)."""
    import mpmath

    N = mpmath.mpf(depth)
    with mpmath.workdps(dps):
        t = mpmath.mpf(t)

        def integrand(v, sign):
            u = sign * eps * mpmath.exp(-v)
            a2 = (1 - u) * mpmath.exp(2 * t)
            b2 = (1 - u) * mpmath.exp(-2 * t)
            T = 2 + a2 + b2
            s1sq = (T + mpmath.sqrt(T**2 - 4 * u**2)) / 2
            s2sq = u**2 / s1sq
            lam = (s1sq - s2sq) / (N * (s1sq ** (1 / N) - s2sq ** (1 / N)))
            rho = (s1sq * s2sq) ** (-(N - 1) / (2 * N)) / lam
            return rho * lam ** (mpmath.mpf(orbit) / 2) * abs(u)

        total = sum(mpmath.quad(lambda v: integrand(v, s), [0, 1, 10, 100, 10 * N, mpmath.inf])
                    for s in (1, -1))
    return float(total)


def nearest_rank1_diagonal(W):
    """Nearest rank-1 completion of the d x d unit-diagonal task by brute force: rank-1
    completions are X_ij = x_i / x_j; grid search over x_2..x_d (x_1 = 1, signs and log-spaced
    magnitudes), then Nelder-Mead from the best grid point. Returns the distance."""
    from itertools import product

    from scipy.optimize import minimize

    d = W.shape[0]
    grid = np.concatenate([-np.logspace(-2, 2, 121), np.logspace(-2, 2, 121)])

    def dist2(x):
        x = np.concatenate([[1.0], x])
        return np.sum((x[:, None] / x[None, :] - W) ** 2)

    x = np.array(list(product(grid, repeat=d - 1)))
    x = np.concatenate([np.ones((len(x), 1)), x], axis=1)
    best = x[np.argmin(np.sum((x[:, :, None] / x[:, None, :] - W) ** 2, axis=(1, 2))), 1:]
    res = minimize(dist2, best, method="Nelder-Mead",
                   options={"xatol": 1e-12, "fatol": 1e-16, "maxiter": 20000})
    return float(np.sqrt(res.fun))


def nearest_singular_completion(problem, W, starts=20, seed=0):
    """Nearest exact completion with det X = 0 (rank <= d - 1 of a square problem): SLSQP on the
    free entries with the determinant as equality constraint, from many random starts."""
    from scipy.optimize import minimize

    free = np.nonzero(~problem.mask)
    rng = np.random.default_rng(seed)

    def embed(x):
        X = problem.targets.copy()
        X[free] = x
        return X

    best = np.inf
    for k in range(starts):
        x0 = W[free] + (0 if k == 0 else rng.standard_normal(len(free[0])))
        res = minimize(lambda x: np.sum((embed(x) - W) ** 2), x0, method="SLSQP",
                       constraints=[{"type": "eq", "fun": lambda x: np.linalg.det(embed(x))}],
                       options={"ftol": 1e-14, "maxiter": 500})
        if res.success and abs(np.linalg.det(embed(res.x))) < 1e-9:
            best = min(best, float(np.sqrt(res.fun)))
    return best


# ---------------------------------------------------------------------------------------
# flow (dlnmc.flow): end-to-end velocity from the brute-force operator, the Langevin drift
# rho^{-1} div(rho A) by central differences, the closed-form volume density
# ---------------------------------------------------------------------------------------


def flow_operator(W, depth):
    """The normalized operator Abar_{N,W} as a matrix on row-major vec(Z), finite N or inf."""
    return brute_operator_inf(W) if np.isinf(depth) else brute_operator(W, int(depth))


def flow_velocity(W, mask, targets, depth):
    """-Abar_{N,W}(P_Omega(W - b)) through the brute-force operator matrix."""
    G = mask * (W - targets)
    return -(flow_operator(W, depth) @ G.ravel()).reshape(W.shape)


def langevin_drift_fd(W, depth, h):
    """rho^{-1} div(rho A), rho = det(A)^{-1/2} (mathematics.md section 4.1), by central
    differences of the brute-force matrix along each coordinate, step ``h``."""
    n = W.size
    A0 = flow_operator(W, depth)
    log_rho0 = -0.5 * np.linalg.slogdet(A0)[1]
    div = np.zeros(n)
    for j in range(n):
        E = np.zeros(n)
        E[j] = h
        for sign in (1.0, -1.0):
            A = flow_operator(W + sign * E.reshape(W.shape), depth)
            ratio = np.exp(-0.5 * np.linalg.slogdet(A)[1] - log_rho0)
            div += sign * ratio * A[:, j] / (2.0 * h)
    return div.reshape(W.shape)


def log_volume_density_closed_form(s, depth):
    """log sqrt(det g^N) w.r.t. dW for square matrices with singular values ``s`` (last axis),
    mathematics.md section 2.5: N^{d(d-1)/2} det(S^2)^{(1-N)/(2N)} van(S^{2/N}) / van(S^2), and
    det(S^2)^{-1/2} van(log S^2) / van(S^2) for N = inf."""
    s = np.asarray(s, dtype=np.float64)
    d = s.shape[-1]
    i, j = np.triu_indices(d, 1)
    log_det = np.sum(np.log(s**2), axis=-1)
    log_van_sq = np.sum(np.log(np.abs(s[..., i] ** 2 - s[..., j] ** 2)), axis=-1)
    if np.isinf(depth):
        ls = np.log(s**2)
        return -0.5 * log_det + np.sum(np.log(np.abs(ls[..., i] - ls[..., j])), axis=-1) - log_van_sq
    p = 2.0 / depth
    log_van_p = np.sum(np.log(np.abs(s[..., i] ** p - s[..., j] ** p)), axis=-1)
    return (d * (d - 1) / 2 * np.log(depth) + (1 - depth) / (2 * depth) * log_det + log_van_p
            - log_van_sq)
