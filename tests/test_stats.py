"""dlnmc.stats: descriptors against direct numpy and brute-force operators, the minimum nuclear
norm completion on problems with known answers, KS calibration with a negative control,
Wasserstein and likelihoods against quadrature and closed forms, planted clusters, and the
verdict table on synthetic endpoint tables (with diverged rows that must not poison them)."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst
from scipy.integrate import quad
from scipy.spatial.distance import cdist

from dlnmc import predictions as P
from dlnmc.problems import CompletionProblem, diagonal_2x2, diagonal_3x3, random_low_rank, razin_cohen_2x2
from dlnmc.results import STATUSES, effective_rank, entry_columns
from dlnmc import stats
from dlnmc.stats import clusters, compare, describe, hypotheses, min_nuclear_norm_completion
from . import reference as ref


def make_final(W, depth, status=None):
    """A minimal engine-like final table for endpoints W (runs, d, d')."""
    n = len(W)
    status = ["converged"] * n if status is None else status
    cols = {"run": np.arange(n, dtype=np.int64),
            "depth": np.asarray(np.broadcast_to(depth, n), dtype=np.float64),
            "status": pd.Categorical(status, categories=list(STATUSES))}
    cols.update(zip(entry_columns(W.shape[1:]), W.reshape(n, -1).T))
    return pd.DataFrame(cols)


def correlation_matrices(n, d, rng):
    G = rng.standard_normal((n, d, d))
    C = G @ np.swapaxes(G, 1, 2)
    s = np.sqrt(np.einsum("nii->ni", C))
    return C / s[:, :, None] / s[:, None, :]


# ----------------------------------------------------------------------------- norm hypothesis

def test_min_nuclear_2x2_diagonal_is_a_segment():
    sol = min_nuclear_norm_completion(diagonal_2x2())
    assert sol.norm == pytest.approx(2.0, abs=1e-7)
    assert not sol.unique
    W = 1.5 * np.random.default_rng(0).standard_normal((5, 2, 2))
    a = np.clip((W[:, 0, 1] + W[:, 1, 0]) / 2, -1, 1)
    closed = np.sqrt((W[:, 0, 0] - 1) ** 2 + (W[:, 1, 1] - 1) ** 2 + (W[:, 0, 1] - a) ** 2
                     + (W[:, 1, 0] - a) ** 2)
    np.testing.assert_allclose(sol.distance(W), closed, atol=1e-6)


def test_min_nuclear_3x3_unit_diagonal_is_the_elliptope():
    """||X||_* >= tr X = 3 with equality exactly on correlation matrices; for W = C + S
    (C a correlation matrix, S skew) the nearest of them is C, at distance ||S||_F."""
    sol = min_nuclear_norm_completion(diagonal_3x3())
    assert sol.norm == pytest.approx(3.0, abs=1e-7) and not sol.unique
    rng = np.random.default_rng(1)
    C = correlation_matrices(4, 3, rng)
    S = rng.standard_normal((4, 3, 3))
    S = 0.5 * (S - np.swapaxes(S, 1, 2))
    S[0] = 0.0
    np.testing.assert_allclose(sol.distance(C + S), np.linalg.norm(S, axis=(1, 2)), atol=1e-6)


def test_min_nuclear_unique_cases():
    sol = min_nuclear_norm_completion(razin_cohen_2x2())  # ||[[x,1],[1,0]]||_* = sqrt(x^2+4)
    assert sol.unique and sol.norm == pytest.approx(2.0, abs=1e-7)
    np.testing.assert_allclose(sol.matrix, [[0.0, 1.0], [1.0, 0.0]], atol=1e-6)
    truth = random_low_rank(6, 6, 1, 30, seed=4)
    sol = min_nuclear_norm_completion(truth)
    assert sol.unique
    np.testing.assert_allclose(sol.matrix, truth.ground_truth, atol=1e-5)
    assert sol.norm == pytest.approx(np.linalg.svd(truth.ground_truth, compute_uv=False).sum(),
                                     rel=1e-6)
    W = np.random.default_rng(2).standard_normal((3, 6, 6))
    np.testing.assert_allclose(sol.distance(W), np.linalg.norm(W - sol.matrix, axis=(1, 2)))


def test_solutions_are_cached_per_problem_description():
    """A fresh problem object with the same entries reuses the solution; one with other entries
    does not; the cached values equal a fresh (uncached) computation."""
    ones, other = diagonal_3x3(), diagonal_3x3((1.0, 2.0, 3.0))
    first = min_nuclear_norm_completion(ones)
    hits = stats._solve_nuclear.cache_info().hits
    again = min_nuclear_norm_completion(diagonal_3x3())
    assert stats._solve_nuclear.cache_info().hits == hits + 1
    assert again.matrix is first.matrix and not again.matrix.flags.writeable
    assert min_nuclear_norm_completion(other).norm == pytest.approx(6.0, abs=1e-7)  # tr X
    assert min_nuclear_norm_completion(ones).norm == pytest.approx(3.0, abs=1e-7)
    fresh = stats._solve_nuclear.__wrapped__(stats._problem_key(ones), "CLARABEL")
    assert fresh[0] == first.norm and fresh[2] == first.unique
    for got, want in zip((first.matrix, first.left, first.right), (fresh[1], fresh[3], fresh[4])):
        np.testing.assert_array_equal(got, want)
    # the rank search: r_min = 1 on the 2x2 diagonal task, 2 on Razin & Cohen's (det W = -1)
    for problem, r_min in [(diagonal_2x2(), 1), (razin_cohen_2x2(), 2), (diagonal_2x2(), 1)]:
        key = stats._problem_key(problem)
        assert stats._lowest_completion_rank(key) == r_min
        assert stats._lowest_completion_rank.__wrapped__(key) == r_min


# ----------------------------------------------------------------------------- descriptors

def test_describe_against_numpy_and_brute_operator():
    problem = diagonal_3x3()
    rng = np.random.default_rng(3)
    W = correlation_matrices(7, 3, rng)
    S = 0.2 * rng.standard_normal((7, 3, 3))
    W = W + (S - np.swapaxes(S, 1, 2))
    W[5] = np.nan  # a diverged trajectory
    depths = np.array([2, 2, np.inf, 5, 5, 3, 3])
    status = ["converged"] * 4 + ["max_steps", "diverged", "diverged"]
    final = make_final(W, depths, status)
    out = describe(final, problem)
    good = [0, 1, 2, 3, 4]
    assert out.loc[[5, 6], "norm_nuclear":].isna().all().all()
    for k in good:
        s = np.linalg.svd(W[k], compute_uv=False)
        row = out.iloc[k]
        assert row["norm_nuclear"] == pytest.approx(s.sum(), rel=1e-13)
        assert row["norm_frobenius"] == pytest.approx(np.linalg.norm(W[k]), rel=1e-13)
        assert row["norm_spectral"] == pytest.approx(np.linalg.norm(W[k], 2), rel=1e-13)
        assert row["erank"] == pytest.approx(float(effective_rank(s)), rel=1e-13)
        for r in (1, 2):
            U, s_, Vt = np.linalg.svd(W[k])
            trunc = (U[:, :r] * s_[:r]) @ Vt[:r]
            assert row[f"dist_rank_{r}"] == pytest.approx(np.linalg.norm(W[k] - trunc), rel=1e-10)
        M = (ref.brute_operator_inf(W[k]) if depths[k] == np.inf
             else ref.brute_operator(W[k], int(depths[k])))
        assert row["log_volume_density"] == pytest.approx(-0.5 * np.linalg.slogdet(M)[1], abs=1e-8)
        assert np.isnan(row["log_orbit_volume"]) == (depths[k] == np.inf)
        # distance to the elliptope: the skew part
        assert row["dist_min_nuclear"] == pytest.approx(
            np.linalg.norm(0.5 * (W[k] - W[k].T)), abs=1e-6)
        assert row["nuclear_excess"] == pytest.approx(s.sum() / 3 - 1, abs=1e-7)
    point = describe(final, problem, depth=2, nuclear="point")
    sol = min_nuclear_norm_completion(problem)
    np.testing.assert_allclose(point["dist_min_nuclear"].iloc[good],
                               np.linalg.norm(W[good] - sol.matrix, axis=(1, 2)), rtol=1e-12)
    assert out.attrs["dlnmc_stats"]["unique"] is False


# ----------------------------------------------------------------------------- goodness of fit

def sech2_sample(n, rng, window=None):
    """Inverse-CDF draws from sech^2(t)/2 (CDF (1 + tanh t)/2), optionally truncated."""
    lo, hi = (0.0, 1.0) if window is None else (0.5 * (1 + np.tanh(w)) for w in window)
    return np.arctanh(2 * rng.uniform(lo, hi, n) - 1)


@pytest.mark.parametrize("window", [None, (-1.0, 2.0)])
def test_ks_calibration_and_negative_control(window):
    rng = np.random.default_rng(11)
    right = {"P1": P.p1(np.inf, window=window)}
    reps, n = 200, 40
    p = [compare(sech2_sample(n, rng, window), right, n_boot=0)["p_value"].iloc[0]
         for _ in range(reps)]
    rejections = int(np.sum(np.array(p) < 0.05))
    assert sst.binom.ppf(0.001, reps, 0.05) <= rejections <= sst.binom.ppf(0.999, reps, 0.05)
    wrong = {"P2": P.p2(np.inf, window=window)}
    for _ in range(5):
        table = compare(sech2_sample(2000, rng, window), wrong, n_boot=0)
        assert table.query("statistic == 'ks'")["p_value"].iloc[0] < 1e-3


def test_wasserstein_loglik_and_ratios_against_direct_computation():
    rng = np.random.default_rng(5)
    t = np.sort(sech2_sample(25, rng))
    cands = {"P1": P.p1(np.inf), "P2": P.p2(np.inf), "norm": P.norm_minimizer()}
    table = compare(t, cands, n_boot=300, seed=7)
    get = table.set_index(["candidate", "statistic", "versus"])["value"]
    # W1 = int |F_n - F| dt with the closed-form CDFs, by adaptive quadrature between samples
    for name, F in [("P1", lambda x: 0.5 * (1 + np.tanh(x))),
                    ("P2", lambda x: 0.5 + 2 * np.arctan(np.tanh(x / 2)) / np.pi)]:
        edges = np.concatenate([[-np.inf], t, [np.inf]])
        w1 = sum(quad(lambda x: abs(k / len(t) - F(x)), a, b, epsabs=1e-13)[0]
                 for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])))
        assert get[(name, "wasserstein1", pd.NA)] == pytest.approx(w1, abs=1e-9)
        ks = max(np.max(np.arange(1, 26) / 25 - F(t)), np.max(F(t) - np.arange(25) / 25))
        assert get[(name, "ks", pd.NA)] == pytest.approx(ks, abs=1e-12)
    assert get[("norm", "wasserstein1", pd.NA)] == pytest.approx(np.mean(np.abs(t)), rel=1e-12)
    ll1, ll2 = np.log(0.5 / np.cosh(t) ** 2), np.log(1 / (np.pi * np.cosh(t)))
    assert get[("P1", "mean_loglik", pd.NA)] == pytest.approx(ll1.mean(), rel=1e-12)
    assert get[("norm", "mean_loglik", pd.NA)] == -np.inf
    d = ll1 - ll2
    assert get[("P1", "loglik_ratio", "P2")] == pytest.approx(d.mean(), rel=1e-10)
    row = table.query("candidate == 'P1' and statistic == 'loglik_ratio' and versus == 'P2'")
    z = np.sqrt(25) * d.mean() / d.std(ddof=1)
    assert row["p_value"].iloc[0] == pytest.approx(2 * sst.norm.sf(abs(z)), rel=1e-10)
    mean_ll = table.query("candidate == 'P1' and statistic == 'mean_loglik'").iloc[0]
    assert mean_ll["ci_low"] < mean_ll["value"] < mean_ll["ci_high"]
    assert len(table) == 3 * 3 + 3 * 2
    assert list(table.columns) == ["candidate", "statistic", "versus", "value", "ci_low",
                                   "ci_high", "p_value", "n"]
    pd.testing.assert_frame_equal(table, compare(t, cands, n_boot=300, seed=7))
    with pytest.raises(ValueError):
        compare(np.array([0.1, np.nan]), cands)


# ----------------------------------------------------------------------------- clusters

def brute_log_volume_reg(W, depth):
    """-1/2 log det of the brute-force operator at W with its singular values below
    1e-3 s_1 raised to 1e-6 s_1 (the regularized volume density of ``clusters``)."""
    U, s, Vt = np.linalg.svd(W)
    s[np.sum(s > 1e-3 * s[0]):] = 1e-6 * s[0]
    return -0.5 * np.linalg.slogdet(ref.brute_operator((U * s) @ Vt, depth))[1]


def planted_mixture(rng, noise=1e-3):
    x = np.array([1.0, -1.0, 1.0])
    centres = np.stack([np.ones((3, 3)), x[:, None] / x[None, :],
                        np.array([[1, 0, 0.6], [0, 1, 0.8], [0.6, 0.8, 1]])])
    sizes = [120, 60, 20]
    labels = np.repeat(np.arange(3), sizes)
    W = centres[labels] + noise * rng.standard_normal((len(labels), 3, 3))
    return centres, sizes, W[rng.permutation(len(W))]


def test_clusters_recover_planted_mixture():
    rng = np.random.default_rng(8)
    centres, sizes, W = planted_mixture(rng)
    W = np.concatenate([W, np.full((1, 3, 3), np.inf)])
    final = make_final(W, 3, ["converged"] * (len(W) - 1) + ["diverged"])
    out = clusters(final, diagonal_3x3(), threshold=0.1)
    assert out["size"].tolist() == sizes
    assert out["rank"].tolist() == [1, 1, 2]
    got = out[entry_columns((3, 3))].to_numpy().reshape(3, 3, 3)
    np.testing.assert_allclose(got, centres, atol=1e-3)
    assert out.attrs["dlnmc_stats"]["n_excluded"] == 1
    for k in range(3):  # regularized volume against the brute-force operator
        assert out["log_volume_density_reg"].iloc[k] == pytest.approx(
            brute_log_volume_reg(got[k], 3), rel=1e-8)
    member_reg = np.array([brute_log_volume_reg(Wm, 3) for Wm in W[:-1]])
    order = np.argsort(np.linalg.norm(W[:-1, None] - got[None], axis=(2, 3)), axis=1)[:, 0]
    expect = [np.quantile(member_reg[order == k], [0.25, 0.5, 0.75]) for k in range(3)]
    cols = ["log_volume_density_members_q25", "log_volume_density_members",
            "log_volume_density_members_q75"]
    np.testing.assert_allclose(out[cols].to_numpy(), expect, rtol=1e-8)
    top = int(np.argmax([e[1] for e in expect]))
    assert out["is_max_volume"].tolist() == [k == top for k in range(3)]
    # the two rank-1 centres are images of each other under W -> D W D, D = diag(1, -1, 1),
    # which preserves g^N: their predicted volumes tie; the rank-2 cluster's are far lower
    assert out["ties_max_volume"].tolist() == [True, True, False]
    sub = clusters(final, diagonal_3x3(), threshold=0.1, max_points=50, seed=1)
    assert sub["size"].tolist() == sizes


def arc_mixture(rng, n_arc=300, n_point=40):
    """Rank-1 unit-diagonal completions exp(x_i - x_j), x = (0, s, -s), densely along
    s in [-1.5, 1.5] (one single-linkage cluster whose MEAN has rank 3), and a tight cluster at
    a rank-2 correlation matrix (distance >= 1.5 from the arc)."""
    s = np.linspace(-1.5, 1.5, n_arc) + rng.uniform(-1e-3, 1e-3, n_arc)
    x = np.stack([0 * s, s, -s], axis=1)
    arc = np.exp(x[:, :, None] - x[:, None, :])
    C = np.array([[1, 0, 0.6], [0, 1, 0.8], [0.6, 0.8, 1]])
    W = np.concatenate([arc, C + 1e-5 * rng.standard_normal((n_point, 3, 3))])
    return W, np.repeat([0, 1], [n_arc, n_point])


def numerical_rank(W, tol=1e-3):
    s = np.linalg.svd(W, compute_uv=False)
    return np.sum(s > tol * s[..., :1], axis=-1)


def test_cluster_centre_is_the_medoid_not_the_mean(monkeypatch):
    rng = np.random.default_rng(13)
    W, truth = arc_mixture(rng)
    assert numerical_rank(W[truth == 0].mean(axis=0)) == 3  # the mean is no rank-1 endpoint
    final = make_final(W, 3)
    out = clusters(final, diagonal_3x3(), threshold=0.6)
    assert out["size"].tolist() == [300, 40]
    assert out["rank"].tolist() == [1, 2]
    assert out["member_rank_median"].tolist() == [1.0, 2.0]
    got = out[entry_columns((3, 3))].to_numpy().reshape(-1, 3, 3)
    for k in range(2):  # brute-force medoid: argmin of the summed distances
        X = W[truth == k].reshape(-1, 9)
        medoid = X[np.argmin(cdist(X, X).sum(axis=1))].reshape(3, 3)
        np.testing.assert_array_equal(got[k], medoid)
        assert out["erank"].iloc[k] == pytest.approx(
            float(effective_rank(np.linalg.svd(medoid, compute_uv=False))), rel=1e-12)
        U, sv, Vt = np.linalg.svd(medoid)
        sv[k + 1:] = 1e-6 * sv[0]
        M = ref.brute_operator((U * sv) @ Vt, 3)
        assert out["log_volume_density_reg"].iloc[k] == pytest.approx(
            -0.5 * np.linalg.slogdet(M)[1], rel=1e-8)
    # large clusters: the medoid of a seeded subsample, still a rank-1 member of the arc
    monkeypatch.setattr(stats, "_MEDOID_SAMPLE", 50)
    sub = clusters(final, diagonal_3x3(), threshold=0.6, seed=3)
    centre = sub[entry_columns((3, 3))].to_numpy()[0]
    assert np.any(np.all(W[truth == 0].reshape(-1, 9) == centre, axis=1))
    assert sub["rank"].tolist() == [1, 2]


@pytest.mark.filterwarnings("error")
def test_large_problems_build_tables_without_warnings():
    """10 x 10: one column per entry; inserting them one at a time fragments the frame
    (pandas PerformanceWarning above 100 blocks)."""
    truth = random_low_rank(10, 10, 2, 60, seed=5)
    rng = np.random.default_rng(14)
    W = truth.ground_truth + 1e-3 * rng.standard_normal((6, 10, 10))
    W[3:] += 1.0
    final = make_final(W, 2)
    out = clusters(final, truth)
    assert out["size"].tolist() == [3, 3]
    assert out.columns.is_unique and out[entry_columns((10, 10))].notna().all().all()
    desc = describe(final.assign(erank=-1.0), truth, nuclear="point")  # engine tables hold erank
    assert desc.columns.is_unique and len(desc) == 6
    np.testing.assert_allclose(desc["erank"], effective_rank(np.linalg.svd(W, compute_uv=False)))
    np.testing.assert_allclose(desc[[f"sv_{k}" for k in range(10)]].to_numpy(),
                               np.linalg.svd(W, compute_uv=False), rtol=1e-12)


# ----------------------------------------------------------------------------- verdicts

def test_hypotheses_on_the_hyperbola_with_diverged_rows():
    rng = np.random.default_rng(9)
    n = 300
    t = sech2_sample(n, rng)
    branch = rng.choice([-1, 1], n)
    W = np.stack([P.plane_point(t[i], 1e-4 * rng.choice([-1, 1]), branch[i]) for i in range(n)])
    W = np.concatenate([W, np.full((2, 2, 2), np.nan)])
    final = make_final(W, np.inf, ["converged"] * n + ["diverged", "max_steps"])
    table = hypotheses(final, diagonal_2x2(), n_boot=200)
    assert table["hypothesis"].tolist() == ["norm", "rank", "volume"]
    assert (table["n"] == n).all() and (table["n_excluded"] == 2).all()
    assert table["value"].notna().all()
    nuc = np.linalg.svd(W[:n], compute_uv=False).sum(axis=1)
    assert table["value"].iloc[0] == pytest.approx(np.mean(nuc > 2 * 1.01))
    erank = effective_rank(np.linalg.svd(W[:n], compute_uv=False))
    assert table["value"].iloc[1] == pytest.approx(np.median(erank))
    volume = table.iloc[2]
    assert volume["statistic"].startswith("mean log-likelihood ratio, P1")
    assert volume["value"] > 0 and volume["p_value"] > 1e-3
    assert "r_min = 1" in table["result"].iloc[1]


@pytest.mark.parametrize("rank1_runs", [70, 30])
def test_hypotheses_volume_on_planted_clusters(rank1_runs):
    """Two planted modes, rank 1 and rank 2: the volume row reports the mass of the mode of
    larger regularized volume (found here with the brute-force operator) with its binomial
    interval, and says the hypothesis holds exactly when that mode is the heavier."""
    rng = np.random.default_rng(12)
    centres = [np.ones((3, 3)), np.array([[1, 0, 0.6], [0, 1, 0.8], [0.6, 0.8, 1]])]
    sizes = [rank1_runs, 100 - rank1_runs]
    W = np.concatenate([c + 1e-3 * rng.standard_normal((k, 3, 3))
                        for c, k in zip(centres, sizes)])
    top = int(np.argmax([brute_log_volume_reg(c, 4) for c in centres]))
    volume = hypotheses(make_final(W, 4), diagonal_3x3(), n_boot=50).iloc[2]
    assert volume["value"] == sizes[top] / 100
    ci = sst.binomtest(sizes[top], 100).proportion_ci(0.95)
    assert (volume["ci_low"], volume["ci_high"]) == pytest.approx((ci.low, ci.high))
    holds = sizes[top] == max(sizes)
    assert volume["result"].endswith("holds" if holds else "fails")
    one = hypotheses(make_final(W[:sizes[0]], 4), diagonal_3x3(), n_boot=50).iloc[2]
    assert np.isnan(one["value"]) and "single mode" in one["result"]


def test_hypotheses_bad_inputs():
    rng = np.random.default_rng(12)
    _, _, W = planted_mixture(rng, noise=1e-2)
    final = make_final(W, 4)
    with pytest.raises(ValueError, match="depths"):
        hypotheses(make_final(W, np.arange(len(W)) % 2 + 2), diagonal_3x3())
    with pytest.raises(ValueError):
        describe(final, CompletionProblem((2, 2), {(0, 0): 1.0}))


def test_clusters_small_cluster_cannot_define_the_largest_volume():
    """A lone endpoint of larger predicted volume than every planted mode (found with the
    brute-force operator) may tie with the largest but not define it unless min_size allows."""
    rng = np.random.default_rng(8)
    _, _, W = planted_mixture(rng)

    base = brute_log_volume_reg(np.ones((3, 3)), 3)
    lone = next(c * np.ones((3, 3)) for c in (0.2, 5.0)
                if brute_log_volume_reg(c * np.ones((3, 3)), 3) > base + 1)
    final = make_final(np.concatenate([W, lone[None]]), 3)
    default = clusters(final, diagonal_3x3(), threshold=0.1)
    loose = clusters(final, diagonal_3x3(), threshold=0.1, min_size=1)
    assert default["size"].iloc[-1] == 1 and loose["size"].iloc[-1] == 1
    assert not default["is_max_volume"].iloc[-1]
    assert default["is_max_volume"].iloc[:2].any() and default["ties_max_volume"].iloc[:2].all()
    assert loose["is_max_volume"].iloc[-1]
    assert loose["log_volume_density_members"].iloc[-1] == pytest.approx(
        brute_log_volume_reg(lone, 3), rel=1e-8)
