"""End-to-end ("downstairs") dynamics of a deep linear network, batched over trajectories.

State: the end-to-end matrix W (d x d').  Deterministic flow (Arora, Cohen & Hazan 2018;
Cohen, Menon & Veraszto 2023 "CMV", normalized clock tau = N t; REFERENCE.md section 2):

    dW/dtau = -Abar_{N,W}(G),  G = P_Omega(W - b),
    Abar_{N,W}(Z) = U [lam o (U^T Z V)] V^T  with W = U S V^T (full SVD),
    lam_il = (1/N) (s_i^2 - s_l^2) / (s_i^{2/N} - s_l^{2/N}),  lam_ii = s_i^{2(N-1)/N},
    N = inf: lam_il = (s_i^2 - s_l^2) / log(s_i^2 / s_l^2)  (logarithmic mean).

Singular values of a rectangular W are padded with zeros (U is d x d, V is d' x d').  The SVD
is a one-sided Jacobi SVD (Hestenes 1958; Demmel & Veselic 1992): accurate for tiny singular
values, and Abar does not depend on which singular vectors are picked for repeated ones.

Integrators: Dormand & Prince 5(4) with Shampine's quartic dense output and the step control of
scipy's ``RK45`` (Hairer, Norsett & Wanner I, II.4), one step size per trajectory; and, for
``temperature > 0``, Euler-Maruyama on the Riemannian Langevin equation of REFERENCE.md
section 4 with the Ito drift correction T rho^{-1} div(rho A) in closed form (see
:func:`langevin_correction`).

Compile time and speed: the batch kernels are serial loops over runs (the wrapper runs
disjoint slices on threads; the kernels release the GIL), because a ``prange`` batch costs
several times more cold LLVM time for this call tree.  Small helpers are inlined into their
callers at the Numba IR level (``inline="always"``): that removes the array reference counting
of each call, which dominated the cost of a 2x2 evaluation.
"""
import numpy as np

from dlnmc._jit import jit
from dlnmc.kernels.gd import CONVERGED, DIVERGED, DIVERGENCE_FACTOR, MAX_STEPS
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
    """lam_il of REFERENCE.md section 2 for i < d, l < d' (``lam`` is d x d'), in the stable
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

    A is the normalized operator Abar_{N,W} as a d d' x d d' matrix (REFERENCE.md section 4).
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


@jit(inline="always")
def _rms(x, scale):
    """RMS of x / scale (scipy's error norm)."""
    acc = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            acc += (x[i, j] / scale[i, j]) ** 2
    return np.sqrt(acc / x.size)


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
def flow_batch(W, obs_i, obs_j, vals, inv_depth, t_max, tol, rtol, atol, max_steps, ckpt,
               hist_time, hist_step, hist_loss, hist_w, time_out, steps_out, loss_out, status_out):
    """Integrate dW/dtau = -Abar_{N,W}(G) for every ``W[r]`` (runs x d x d', in place) from
    tau = 0 until loss <= tol, tau = t_max, ``max_steps`` accepted steps or divergence.

    Dormand-Prince 5(4) with scipy's step control, the last step shortened to end exactly at
    t_max; checkpoints ``ckpt`` (sorted tau) filled by dense output; one output slot per run.
    Serial: the wrapper runs disjoint slices of the batch on threads (the kernel drops the GIL).
    """
    d, dp = W.shape[1], W.shape[2]
    ws = _workspace(d, dp)
    K = np.empty((7, d, dp))
    y_new = np.empty((d, dp))
    scale = np.empty((d, dp))
    err = np.empty((d, dp))
    for r in range(W.shape[0]):
        Wr = W[r]
        loss, finite = velocity(Wr, obs_i, obs_j, vals, inv_depth, ws, K[0])
        cap = DIVERGENCE_FACTOR * max(1.0, loss)
        t = 0.0
        c = 0
        while c < ckpt.shape[0] and ckpt[c] <= 0.0:
            _record(c, 0, 0.0, Wr, loss, hist_time[r], hist_step[r], hist_loss[r], hist_w[r])
            c += 1
        status = _outcome(loss, cap, tol, finite)
        # first step: the first guess of Hairer, Norsett & Wanner I, II.4 (scipy's
        # select_initial_step without its second evaluation); the controller corrects it
        for i in range(d):
            for j in range(dp):
                scale[i, j] = atol + abs(Wr[i, j]) * rtol
        d0 = _rms(Wr, scale)
        d1 = _rms(K[0], scale)
        h_abs = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, t_max)
        steps = 0
        while status < 0:
            if t >= t_max or steps >= max_steps:
                status = MAX_STEPS
                break
            rejected = False
            while True:
                if not h_abs >= 10.0 * (np.nextafter(t, np.inf) - t):
                    status = DIVERGED  # step size underflow: blow-up or NaN
                    break
                t_new = min(t + h_abs, t_max)
                h = t_new - t
                for st in range(1, 7):  # stages 2..7; the 7th is the new state (FSAL)
                    for i in range(d):
                        for j in range(dp):
                            acc = 0.0
                            for q in range(st):
                                acc += _A[st, q] * K[q, i, j]
                            y_new[i, j] = Wr[i, j] + h * acc
                    loss_new, finite = velocity(y_new, obs_i, obs_j, vals, inv_depth, ws, K[st])
                for i in range(d):
                    for j in range(dp):
                        acc = 0.0
                        for q in range(7):
                            acc += _E[q] * K[q, i, j]
                        err[i, j] = h * acc
                        scale[i, j] = atol + max(abs(Wr[i, j]), abs(y_new[i, j])) * rtol
                norm = _rms(err, scale)
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
                x = (ckpt[c] - t) / h
                for i in range(d):
                    for j in range(dp):
                        acc = 0.0
                        xp = 1.0
                        for q in range(4):
                            xp *= x
                            kp = 0.0
                            for k in range(7):
                                kp += K[k, i, j] * _P[k, q]
                            acc += kp * xp
                        err[i, j] = y_new[i, j] if ckpt[c] == t_new else Wr[i, j] + h * acc
                _record(c, steps, ckpt[c], err, residual(err, obs_i, obs_j, vals, scale)[0],
                        hist_time[r], hist_step[r], hist_loss[r], hist_w[r])
                c += 1
            t = t_new
            loss = loss_new
            for i in range(d):
                for j in range(dp):
                    Wr[i, j] = y_new[i, j]
                    K[0, i, j] = K[6, i, j]
            status = _outcome(loss, cap, tol, finite)
        time_out[r] = t
        steps_out[r] = steps
        loss_out[r] = loss
        status_out[r] = status


@jit
def langevin_batch(W, obs_i, obs_j, vals, inv_depth, temperature, dt, t_max, tol, ckpt, keys,
                   hist_time, hist_step, hist_loss, hist_w, time_out, steps_out, loss_out,
                   status_out):
    """Euler-Maruyama for the Riemannian Langevin equation (REFERENCE.md section 4) for every
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
