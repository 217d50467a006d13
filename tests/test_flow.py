"""dlnmc.flow against independent computations: the brute-force Kronecker operator (quadrature
for N = inf), finite differences of rho A for the Langevin drift, a tightly toleranced
solve_ivp, finite differences of the singular values and of the SVD, a 32-digit Taylor-series
integration of the factor flow, upstairs GD, the O(1/N) approach to N = inf, and the invariant
law exp(-l/T) dvol_g by importance sampling (with a negative control)."""
import mpmath as mp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.integrate import solve_ivp

import dlnmc
from dlnmc import CompletionProblem, simulate
from dlnmc.bench.flow import numpy_velocity
from dlnmc.flow import checkpoint_times, simulate_flow
from dlnmc.kernels import flow as kernels

from . import reference as ref

SHAPES = [(2, 2), (3, 3), (4, 4), (2, 3), (3, 2)]
DEPTHS = [1, 2, 3, 7, 50, np.inf]


def inv(depth):
    return 0.0 if np.isinf(depth) else 1.0 / depth


def with_spectrum(shape, s, seed):
    """A random matrix of ``shape`` with singular values ``s``."""
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((shape[0], shape[0])))[0]
    V = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))[0]
    S = np.zeros(shape)
    S[range(len(s)), range(len(s))] = s
    return U @ S @ V.T


def kernel_velocity(W, problem, depth):
    i, j = problem.indices
    out = np.empty(W.shape)
    ws = kernels._workspace(*W.shape)
    kernels.velocity(np.ascontiguousarray(W), i, j, problem.values, inv(depth), ws, out)
    return out, ws


def full_problem(shape, seed):
    rng = np.random.default_rng(seed)
    return CompletionProblem.from_mask(np.ones(shape, dtype=bool), rng.standard_normal(shape))


def matrices(shape, seed):
    """Random, rank-deficient, near-coincident and exactly coincident matrices of ``shape``.

    The rank-deficient one has an exactly zero column (row if wide), so that every SVD sees
    an exact zero singular value: Abar is only Hoelder continuous there (s^{2/N}; for N = inf
    lam(s, e) ~ s^2 / log(s^2 / e^2)), so a singular value of 1e-17 from rounding would move
    it by 1e-5 (N = 7) to 1e-1 (N = inf) and no two SVDs would agree."""
    k = min(shape)
    rng = np.random.default_rng(seed)
    deficient = rng.standard_normal(shape)
    if shape[0] >= shape[1]:
        deficient[:, -1] = 0.0
    else:
        deficient[-1, :] = 0.0
    return [rng.standard_normal(shape), deficient,
            with_spectrum(shape, 1.0 + 1e-9 * np.arange(k), seed),
            with_spectrum(shape, np.full(k, 0.7), seed)]


# -- the right-hand side -------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_velocity_matches_brute_force_operator(shape, depth):
    problem = full_problem(shape, 1)
    for W in matrices(shape, 2):
        got, (U, s, V, *_rest) = kernel_velocity(W, problem, depth)
        want = ref.flow_velocity(W, problem.mask, problem.targets, depth)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-11 * np.abs(want).max() + 1e-300)
        S = np.zeros(shape)
        S[range(min(shape)), range(min(shape))] = s[:min(shape)]
        np.testing.assert_allclose(U @ S @ V.T, W, rtol=0, atol=1e-14 * max(1, np.abs(W).max()))
        np.testing.assert_allclose(U.T @ U, np.eye(shape[0]), rtol=0, atol=1e-14)
        np.testing.assert_allclose(V.T @ V, np.eye(shape[1]), rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape, s", [((2, 2), (1.5, 3e-4)), ((3, 3), (2.0, 0.6, 1e-4))])
@pytest.mark.parametrize("depth", [2, 3, np.inf])
def test_svd_velocity_matches_finite_differences_of_the_svd(shape, s, depth):
    """d(log s, U, V)/dtau of the SVD coordinates against central differences of numpy's SVD
    of W moving along the brute-force velocity -Abar(G), on a problem with a partial mask."""
    rng = np.random.default_rng(11)
    W = with_spectrum(shape, np.array(s), 12)
    mask = rng.random(shape) < 0.6
    problem = CompletionProblem.from_mask(mask, rng.standard_normal(shape))
    U, sv, Vt = np.linalg.svd(W)
    y = np.concatenate([np.log(sv), U.ravel(), Vt.T.ravel()])
    out = np.empty_like(y)
    i, j = problem.indices
    loss, finite = kernels.svd_velocity(y, i, j, problem.values, inv(depth),
                                        kernels._svd_workspace(shape[0]), out)
    assert finite and loss == pytest.approx(problem.loss(W[None])[0], rel=1e-12)
    dW = ref.flow_velocity(W, problem.mask, problem.targets, depth)
    eps = 1e-5
    ends = []
    for sign in (1, -1):
        Ue, se, Vte = np.linalg.svd(W + sign * eps * dW)
        flip = np.sign(np.sum(Ue * U, axis=0))  # the singular vectors that continue u_i, v_i
        ends.append(np.concatenate([np.log(se), (Ue * flip).ravel(), (Vte.T * flip).ravel()]))
    fd = (ends[0] - ends[1]) / (2 * eps)
    np.testing.assert_allclose(out, fd, rtol=0, atol=1e-6 * np.abs(fd).max())


# The N = inf metric is degenerate on rectangular matrices: no Langevin drift to check there.
@pytest.mark.parametrize("shape, depth", [
    (shape, depth) for depth in (1, 2, 3, 7, np.inf)
    for shape in ((2, 2), (3, 3), (2, 3), (3, 2)) if not (np.isinf(depth) and shape[0] != shape[1])])
def test_langevin_correction_matches_finite_differences(shape, depth):
    rng = np.random.default_rng(3)
    k = min(shape)
    for W in (rng.standard_normal(shape), with_spectrum(shape, 1.0 + 1e-9 * np.arange(k), 4)):
        _, (U, s, V, _A, lam, *_rest) = kernel_velocity(W, full_problem(shape, 0), depth)
        kappa = np.empty(k)
        kernels.langevin_correction(s, lam, inv(depth), kappa)
        S = np.zeros(shape)
        S[range(k), range(k)] = kappa
        h = 1e-4 * np.linalg.svd(W, compute_uv=False).min()
        want = ref.langevin_drift_fd(W, depth, h)
        np.testing.assert_allclose(U @ S @ V.T, want, rtol=0, atol=1e-6 * max(1, np.abs(want).max()))


def test_closed_form_volume_density_matches_operator_determinant():
    # checks the reference used by the invariant-law test against the brute-force operator
    rng = np.random.default_rng(5)
    for depth in (3, np.inf):
        for W in rng.standard_normal((3, 2, 2)):
            want = -0.5 * np.linalg.slogdet(ref.flow_operator(W, depth))[1]
            s = np.linalg.svd(W, compute_uv=False)
            assert ref.log_volume_density_closed_form(s, depth) == pytest.approx(want, abs=1e-10)


# -- integration ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [3, np.inf])
def test_flow_matches_tight_solve_ivp_with_dense_output(depth):
    problem = dlnmc.razin_cohen_2x2()
    W0 = np.array([[[0.3, -0.2], [0.1, 0.4]], [[0.5, 0.2], [0.2, 0.5]]])
    times = np.array([0.0, 0.37, 1.0, 2.5, 4.0])
    result = simulate_flow(problem, depth, 2, init=W0, t_max=4.0, tol=0, checkpoints=times,
                           rtol=1e-10, atol=1e-13)
    cols = [c for c in result.history.columns if c.startswith("w_")]
    for r in range(2):
        sol = solve_ivp(lambda t, y: numpy_velocity(y.reshape(2, 2), problem.mask,
                                                    problem.targets, depth).ravel(),
                        (0, 4.0), W0[r].ravel(), method="DOP853", rtol=1e-13, atol=1e-15,
                        t_eval=times)
        hist = result.history[result.history.run == r]
        np.testing.assert_array_equal(hist.time_tau, times)
        np.testing.assert_allclose(hist[cols].to_numpy(), sol.y.T, rtol=0, atol=1e-8)
        # the checkpointed loss is the loss of the checkpointed W
        np.testing.assert_allclose(hist.loss, problem.loss(hist[cols].to_numpy().reshape(-1, 2, 2)),
                                   rtol=1e-14)
    assert (result.final.status == "max_steps").all()
    assert (result.final.time_tau == 4.0).all()


@pytest.mark.parametrize("d, depth", [(2, 2), (3, 3), (3, np.inf)])
def test_flow_through_svd_coordinates_matches_tight_solve_ivp(d, depth):
    """W(0) with s_min ~ 1e-6 s_max, all entries observed, target with singular values 1 .. 0.5:
    the state goes to SVD coordinates and, for N = 2 where s_min grows, back to entries.
    Entries and log|det W| at the checkpoints against DOP853 on the entries (rtol 1e-13, so
    s_min = 1e-6 is resolved to ~1e-7 relative)."""
    problem = CompletionProblem.from_mask(np.ones((d, d), dtype=bool),
                                          with_spectrum((d, d), np.linspace(1.0, 0.5, d), 7))
    W0 = with_spectrum((d, d), np.array([0.9, 0.3, 1e-6][-d:]), 8)[None]
    times = np.array([0.0, 2.0, 5.0, 10.0, 20.0])
    result = simulate_flow(problem, depth, 1, init=W0, t_max=times[-1], tol=0, checkpoints=times,
                           rtol=1e-10, atol=1e-13)
    sol = solve_ivp(lambda t, y: numpy_velocity(y.reshape(d, d), problem.mask, problem.targets,
                                                depth).ravel(),
                    (0, times[-1]), W0[0].ravel(), method="DOP853", rtol=1e-13, atol=1e-16,
                    t_eval=times)
    hist = result.history
    np.testing.assert_allclose(hist.filter(like="w_").to_numpy(), sol.y.T, rtol=0, atol=1e-8)
    want = np.linalg.slogdet(sol.y.T.reshape(-1, d, d))
    np.testing.assert_allclose(hist.log_abs_det, want[1], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.sign(hist.det), want[0])


@pytest.mark.parametrize("depth", [2, 5, np.inf])
def test_singular_value_dynamics(depth):
    """d s_r / d tau = -s_r^{2(N-1)/N} <G, u_r v_r^T> (Arora et al. 2019, Thm 3, normalized)."""
    problem = dlnmc.diagonal_3x3((1.0, 2.0, 0.5))
    W0 = (0.4 * np.eye(3) + 0.2 * np.random.default_rng(6).standard_normal((3, 3)))[None]
    tau, delta = 1.5, 1e-3
    result = simulate_flow(problem, depth, 1, init=W0, t_max=2.0, tol=0, rtol=1e-12, atol=1e-14,
                           checkpoints=[tau - delta, tau, tau + delta])
    cols = [c for c in result.history.columns if c.startswith("w_")]
    Ws = result.history.set_index("time_tau")[cols].to_numpy().reshape(-1, 3, 3)
    fd = (np.linalg.svd(Ws[2], compute_uv=False) - np.linalg.svd(Ws[0], compute_uv=False)) / (2 * delta)
    U, s, Vt = np.linalg.svd(Ws[1])
    G = problem.gradient(Ws[1])
    power = 2.0 if np.isinf(depth) else 2.0 * (depth - 1) / depth
    want = -s**power * np.einsum("ir,ij,rj->r", U, G, Vt)
    np.testing.assert_allclose(fd, want, rtol=1e-5, atol=1e-9)


def test_upstairs_balanced_gd_converges_to_flow_at_rate_lr():
    """GD with step lr on balanced factors tracks the flow at tau = N lr steps up to O(lr):
    the Euler error of GD is O(lr) over a fixed time and balancedness drifts by O(lr^2) per
    step, O(lr) in all.  Checked: error <= 2 lr and halving lr halves the error (+-20%)."""
    problem, depth, t = dlnmc.diagonal_2x2(), 3, 1.0
    kw = dict(init="balanced", init_scale=0.5, seed=4)
    flow = simulate_flow(problem, depth, 3, t_max=depth * t, tol=0, rtol=1e-11, atol=1e-14,
                         checkpoints=None, **kw)
    cols = [c for c in flow.final.columns if c.startswith("w_")]
    errors = []
    for lr in (2e-3, 1e-3):
        gd = simulate(problem, depth, 3, lr, max_steps=round(t / lr), tol=0, checkpoints=None, **kw)
        np.testing.assert_array_equal(gd.final.det_init, flow.final.det_init)  # same W(0)
        errors.append(np.abs(gd.final[cols].to_numpy() - flow.final[cols].to_numpy()).max())
        assert errors[-1] <= 2 * lr
    assert 1.6 <= errors[0] / errors[1] <= 2.4


def test_large_depth_approaches_infinity_at_rate_one_over_n():
    problem = dlnmc.razin_cohen_2x2()
    W0 = np.array([[[0.3, -0.2], [0.1, 0.4]]])
    kw = dict(init=W0, t_max=3.0, tol=0, rtol=1e-12, atol=1e-14, checkpoints=None)
    cols = [f"w_{i}_{j}" for i in range(2) for j in range(2)]
    W_inf = simulate_flow(problem, np.inf, 1, **kw).final[cols].to_numpy()
    errors = [np.abs(simulate_flow(problem, n, 1, **kw).final[cols].to_numpy() - W_inf).max()
              for n in (16, 32, 64)]
    assert errors[2] < 0.05
    for coarse, fine in zip(errors, errors[1:]):
        assert 1.8 <= coarse / fine <= 2.2


def test_rank_deficient_and_coincident_starts_stay_finite():
    """On the 2x2 diagonal task: W = 0; rank 1 with u = v = (1, 2)/sqrt 5; 0.01 I (coincident
    singular values); rank 1 along e_2 e_2^T.  For N >= 2, lam = 0 between zero singular values
    (W = 0 and the e_1 e_1^T direction of the last start stay frozen: loss 1 and 1/2); for
    N = inf also lam(s, 0) = 0, so a rank-1 W keeps its singular vectors and cannot fit I."""
    problem = dlnmc.diagonal_2x2()
    W0 = np.array([np.zeros((2, 2)), [[1e-3, 2e-3], [2e-3, 4e-3]], 0.01 * np.eye(2),
                   [[0.0, 0.0], [0.0, 1e-3]]])
    expect = {1: "CCCC", 2: "MCCM", 3: "MCCM", np.inf: "MMCM"}
    for depth, codes in expect.items():
        result = simulate_flow(problem, depth, 4, init=W0, t_max=3e3)
        final = result.final
        assert np.all(np.isfinite(result.history.filter(like="w_").to_numpy()))
        assert "".join(final.status.str[0].str.upper()) == codes
        if depth >= 2:
            assert final.loss[0] == 1.0 and final.w_0_0[3] == 0.0
            assert final.loss[3] == pytest.approx(0.5, abs=1e-8)


def factor_flow_reference(W0, problem, depth, taus, order=24, tol=1e-30, dps=32):
    """log|det W(tau)| and W(tau) of gradient flow on balanced factors W_N ... W_1 = W(0) at
    the times tau = N t (Arora, Cohen & Hazan 2018: the end-to-end matrix follows
    dW/dtau = -Abar(G)), by a Taylor series method of the given order in mpmath: the ODE
    dW_j/dt = -(W_N..W_{j+1})^T G (W_{j-1}..W_1)^T is polynomial, so its Taylor coefficients
    follow from Cauchy products; steps h with max |coefficient_q| h^q <= tol for q = order - 1,
    order (Jorba & Zou 2005).  Independent of the SVD of W and exact to ~tol per step."""
    def mul(A, B, tA=False, tB=False):  # 2x2, row-major 4-tuples
        a, b, c, d = (A[0], A[2], A[1], A[3]) if tA else A
        e, f, g, h = (B[0], B[2], B[1], B[3]) if tB else B
        return (a * e + b * g, a * f + b * h, c * e + d * g, c * f + d * h)

    def conv(X, Y, tX=False, tY=False):  # coefficient len(X) - 1 of the series product X Y
        k = len(X) - 1
        terms = [mul(X[m], Y[k - m], tX, tY) for m in range(k + 1)]
        return tuple(mp.fsum(t[q] for t in terms) for q in range(4))

    N = depth
    with mp.workdps(dps):
        U, S, V = mp.svd_r(mp.matrix(W0.tolist()))  # W0 = U diag(S) V
        D = mp.diag([x ** (mp.mpf(1) / N) for x in S])
        F = [(A[0, 0], A[0, 1], A[1, 0], A[1, 1]) for A in [D * V] + [D] * (N - 2) + [U * D]]
        obs = problem.mask.ravel()
        b = [mp.mpf(float(v)) for v in problem.targets.ravel()]
        t, out = mp.mpf(0), []
        for tau in taus:
            while t < tau:
                ser = [[Fj] for Fj in F]  # Taylor coefficients of W_1, ..., W_N
                pre = [ser[0]] + [[] for _ in range(N - 1)]  # pre[j] = W_{j+1} .. W_1
                suf = [[] for _ in range(N - 1)] + [None]  # suf[j] = W_N .. W_{j+2}
                G, T = [], [[] for _ in range(N)]
                for k in range(order):
                    for j in range(1, N):
                        pre[j].append(conv(ser[j][:k + 1], pre[j - 1][:k + 1]))
                    for j in range(N - 2, -1, -1):
                        suf[j].append(ser[j + 1][k] if suf[j + 1] is None
                                      else conv(suf[j + 1][:k + 1], ser[j + 1][:k + 1]))
                    Wk = pre[N - 1][k]
                    G.append(tuple(Wk[q] - (b[q] if k == 0 else 0) if obs[q] else mp.mpf(0)
                                   for q in range(4)))
                    for j in range(N):  # dW_{j+1}/dtau = -(1/N) suf[j]^T G pre[j - 1]^T
                        T[j].append(G[k] if j == 0 else conv(G, pre[j - 1][:k + 1], tY=True))
                        dk = T[j][k] if suf[j] is None else conv(suf[j][:k + 1], T[j], tX=True)
                        ser[j].append(tuple(-v / (N * (k + 1)) for v in dk))
                big = [max(abs(v) for s in ser for v in s[q]) for q in (order - 1, order)]
                h = min([tau - t] + [(tol / m) ** (mp.mpf(1) / q)
                                     for m, q in zip(big, (order - 1, order)) if m])
                F = []
                for s in ser:
                    acc = s[order]
                    for q in range(order - 1, -1, -1):
                        acc = tuple(u * h + v for u, v in zip(acc, s[q]))
                    F.append(acc)
                t += h
            W = F[0]
            for Fj in F[1:]:
                W = mul(Fj, W)
            out.append((float(mp.log(abs(W[0] * W[3] - W[1] * W[2]))), np.array(W, dtype=float)))
    return out


@pytest.mark.parametrize("depth", [2, 3])
def test_tiny_determinant_matches_high_precision_factor_flow(depth):
    """Razin & Cohen's 2x2 task with det W ~ 1e-21 .. 1e-16 at O(1) entries, far below what
    the entries resolve: log|det W(tau)| of the checkpoints against the 32-digit factor flow.
    N = 2: a balanced init at scale 1e-8 (det W shrinks by ~e^-8 while W grows to O(1));
    N = 3: W(0) = 1e-2 R diag(1, 1e-16) (W(0) = Q D with orthogonal Q: the SVD of the
    float64 W(0) is exact to rounding, so both integrations start from the same W)."""
    problem = dlnmc.razin_cohen_2x2()
    if depth == 2:
        kw, taus = dict(init="balanced", init_scale=1e-8, det_sign=1, seed=1), [10, 20, 30, 40]
    else:
        c, s = np.cos(0.4), np.sin(0.4)
        kw, taus = dict(init=1e-2 * np.array([[[c, -s * 1e-16], [s, c * 1e-16]]])), [5, 10, 20]
    result = simulate_flow(problem, depth, 1, tol=0, t_max=taus[-1], checkpoints=[0, *taus],
                           rtol=1e-10, atol=0.0, **kw)
    hist = result.history
    cols = [c for c in hist.columns if c.startswith("w_")]
    want = factor_flow_reference(hist[cols].to_numpy()[0].reshape(2, 2), problem, depth, taus)
    got = hist[hist.time_tau > 0]
    np.testing.assert_allclose(got.log_abs_det, [w[0] for w in want], rtol=0, atol=1e-7)
    np.testing.assert_allclose(got[cols].to_numpy(), [w[1] for w in want], rtol=0, atol=1e-8)
    assert np.exp(got.log_abs_det).max() < 1e-15 and (got.det > 0).all()
    np.testing.assert_allclose(got.det, np.exp(got.log_abs_det), rtol=1e-12)
    assert result.final.log_abs_det[0] == got.log_abs_det.iloc[-1]


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_razin_cohen_det_keeps_its_sign_and_w11_grows(depth):
    """Razin & Cohen (2020): from a balanced near-zero init with det W(0) > 0 the flow keeps
    det W > 0 (d log|det W| / dtau is bounded), so it cannot reach the solutions (det = -1):
    w22 >= 1 / w11 and the loss l ~ 1 / (2 w11^2), i.e. |w11| sqrt(2 l) -> 1.  At l = 1e-4 the
    det has underflowed at N = 2 (log|det| ~ -2500): its sign survives as the sign of zero.
    t_max = 3e5: reaching l = 1e-4 takes tau ~ 1.2e5 (N = 2), 3.2e4 (N = 3), 1.7e4 (N = 4),
    and ~1e6, 6e5, 5e5 steps (the fast relaxation of w12, w21 at rate ~ s_max^{2 - 2/N} / N
    bounds the explicit steps), hence 4 runs here."""
    result = simulate_flow(dlnmc.razin_cohen_2x2(), depth, 4, init="balanced", init_scale=1e-3,
                           det_sign=1, tol=1e-4, t_max=3e5, checkpoints=None, seed=2)
    final = result.final
    assert (final.status == "converged").all()
    assert not np.signbit(final.det).any() and np.isfinite(final.log_abs_det).all()
    ratio = np.abs(final.w_0_0) * np.sqrt(2 * final.loss)
    assert np.all(np.abs(ratio - 1) < 0.1)


# -- Langevin ------------------------------------------------------------------------------

def reference_cdf(statistic, B, T, depth, n, seed):
    """CDF of ``statistic(W)`` under exp(-|W - B|^2 / (2T)) dvol_{g^N}: weighted empirical CDF
    of Gaussian draws N(B, T) with weights sqrt(det g^N) (closed form)."""
    rng = np.random.default_rng(seed)
    W = B + np.sqrt(T) * rng.standard_normal((n, *B.shape))
    log_w = ref.log_volume_density_closed_form(np.linalg.svd(W, compute_uv=False), depth)
    weights = np.exp(log_w - log_w.max())
    x = statistic(W)
    order = np.argsort(x)
    x, cum = x[order], np.cumsum(weights[order]) / weights.sum()
    return lambda q: np.interp(q, x, cum, left=0.0, right=1.0)


@pytest.mark.parametrize("depth", [3, np.inf])
def test_langevin_reproduces_invariant_law(depth):
    """Endpoints of Riemannian Langevin on l = |W - B|^2 / 2 (all entries observed) follow
    exp(-l/T) dvol_g: KS test of the nuclear norm against the importance-sampled law; the
    flat Gibbs law exp(-l/T) dW (no volume factor) must be rejected (negative control).

    Confinement: near rank 1 the volume behaves like s_min^{1/N - 1} ds_min (N = inf:
    log(1/s)/s, not normalizable), so B has s_min / sqrt(T) ~ 6.6 and the singular set is out
    of reach (its Gibbs weight ~ exp(-22)); EM bias O(dt) is far below the KS resolution."""
    B = np.array([[2.0, 0.3], [0.2, 1.5]])
    problem = CompletionProblem.from_mask(np.ones((2, 2), dtype=bool), B)
    T, runs = 0.05, 1000
    W0 = B + np.sqrt(T) * np.random.default_rng(7).standard_normal((runs, 2, 2))
    result = simulate_flow(problem, depth, runs, init=W0, t_max=4.0, tol=0, temperature=T,
                           dt=2e-3, checkpoints=None, seed=8)
    assert (result.final.status == "max_steps").all()
    nuclear = result.final.sv_0 + result.final.sv_1

    def statistic(W):
        return np.linalg.svd(W, compute_uv=False).sum(axis=-1)

    volume = reference_cdf(statistic, B, T, depth, 400_000, seed=9)
    flat = reference_cdf(statistic, B, T, 1, 400_000, seed=9)  # N = 1: the flat metric
    assert stats.kstest(nuclear, volume).pvalue > 1e-3
    assert stats.kstest(nuclear, flat).pvalue < 1e-4


# -- reproducibility, init, tables, validation -----------------------------------------------

@pytest.mark.parametrize("temperature", [0.0, 0.02])
def test_bitwise_reproducible_across_threads_and_splits(temperature):
    problem = dlnmc.razin_cohen_2x2()
    kw = dict(init_scale=0.3, t_max=20.0, temperature=temperature, seed=3, dt=1e-2)
    whole = simulate_flow(problem, 3, 6, n_threads=1, **kw)
    threads = simulate_flow(problem, 3, 6, n_threads=2, **kw)
    parts = [simulate_flow(problem, 3, 2, first_run=0, n_threads=2, **kw),
             simulate_flow(problem, 3, 4, first_run=2, n_threads=1, **kw)]
    split = [pd.concat([p.final for p in parts], ignore_index=True),
             pd.concat([p.history for p in parts], ignore_index=True)]
    for other in ([threads.final, threads.history], split):
        pd.testing.assert_frame_equal(whole.final, other[0], check_exact=True)
        pd.testing.assert_frame_equal(whole.history, other[1], check_exact=True)


@pytest.mark.parametrize("depth", [2, 4])
def test_initial_matrices_match_engine(depth):
    problem = dlnmc.diagonal_3x3()
    for init in ("balanced", "gaussian"):
        kw = dict(init=init, init_scale=1e-2, seed=5, first_run=3, det_sign=1)
        gd = simulate(problem, depth, 4, 1e-3, max_steps=1, checkpoints=[0], **kw)
        flow = simulate_flow(problem, depth, 4, t_max=1.0, checkpoints=[0.0], **kw)
        cols = [c for c in flow.history.columns if c.startswith("w_")]
        start = flow.history[flow.history.time_tau == 0]
        # the engine forms W(0) in its kernel, in another order of products: equal to rounding
        np.testing.assert_allclose(start[cols].to_numpy(),
                                   gd.history[gd.history.step == 0][cols].to_numpy(), rtol=1e-13)
        np.testing.assert_array_equal(flow.final.det_init, gd.final.det_init)
        assert (flow.final.det_init > 0).all()


def test_tables_have_engine_columns_plus_time():
    problem = dlnmc.diagonal_2x2()
    gd = simulate(problem, 2, 2, 1e-2, max_steps=5)
    flow = simulate_flow(problem, np.inf, 2, init_scale=0.1, t_max=1e3)
    assert list(flow.final.columns) == [*gd.final.columns[:9], "time_tau", *gd.final.columns[9:],
                                        "log_abs_det"]
    assert flow.final.depth.dtype == np.float64 and np.isinf(flow.final.depth).all()
    assert flow.final.lr.isna().all()
    assert list(flow.final.status.cat.categories) == list(gd.final.status.cat.categories)
    assert list(flow.history.columns) == ["run", "step", "time_tau", *gd.history.columns[2:],
                                          "det", "log_abs_det"]
    assert (flow.final.status == "converged").all() and (flow.final.loss <= 1e-8).all()
    assert flow.factors is None and flow.provenance["kind"] == "flow"
    assert len(checkpoint_times("log", 1e3)) == 52
    last = flow.history.groupby("run").tail(1)
    np.testing.assert_array_equal(last.time_tau, flow.final.time_tau)
    merged = pd.concat([gd.final, flow.final], ignore_index=True)
    assert merged.depth.dtype == np.float64


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=0), "depth"), (dict(depth=2.5), "depth"), (dict(depth=-np.inf), "depth"),
    (dict(depth=np.nan), "depth"), (dict(depth=True), "depth"), (dict(runs=0), "runs"),
    (dict(t_max=0.0), "t_max"), (dict(t_max=np.inf), "t_max"), (dict(tol=-1.0), "tol"),
    (dict(temperature=-0.1), "temperature"), (dict(rtol=0.0), "rtol"), (dict(rtol=1.0), "rtol"),
    (dict(atol=-1.0), "atol"), (dict(dt=0.0), "dt"), (dict(n_threads=0), "n_threads"),
    (dict(checkpoints=[0.5, 20.0]), "checkpoint"), (dict(checkpoints="lin"), "checkpoints"),
    (dict(init=np.zeros((3, 2, 2))), "shape"), (dict(init=np.full((2, 2, 2), np.nan)), "non-finite"),
    (dict(init=np.tile(np.eye(2), (2, 1, 1)), det_sign=-1), "det sign"),
    (dict(init=np.zeros((2, 2, 2)), temperature=0.1), "full rank"),
    (dict(init="uniform"), "init"), (dict(init_scale=0.0), "init_scale"),
    (dict(max_steps=0), "max_steps"),
])
def test_bad_inputs_raise(kwargs, match):
    args = dict(problem=dlnmc.diagonal_2x2(), depth=2, runs=2, t_max=10.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate_flow(**args)


def test_bad_problem_and_degenerate_langevin_raise():
    with pytest.raises(ValueError, match="CompletionProblem"):
        simulate_flow("diagonal_2x2", 2, 2)
    rect = CompletionProblem((2, 3), {(0, 0): 1.0})
    with pytest.raises(ValueError, match="square"):
        simulate_flow(rect, np.inf, 2, temperature=0.1)
