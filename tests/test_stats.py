"""dlnmc.stats: descriptors against direct numpy and brute-force operators, the minimum nuclear
norm completion on problems with known answers, KS calibration with a negative control,
Wasserstein and likelihoods against quadrature and closed forms, planted clusters, and the
verdict table on synthetic endpoint tables (with diverged rows that must not poison them)."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.integrate import quad
from scipy.spatial.distance import cdist

from dlnmc import manifold
from dlnmc import predictions as P
from dlnmc.problems import CompletionProblem, diagonal_2x2, diagonal_3x3, random_low_rank, razin_cohen_2x2
from dlnmc.results import STATUSES, effective_rank, entry_columns
from dlnmc import stats
from dlnmc.manifold import endpoint_matrices
from dlnmc.stats import clustering, nuclear
from dlnmc.stats.families import volume_on_hyperbola
from dlnmc.stats import clusters, compare, describe, hypotheses, min_nuclear_norm_completion
from . import reference as ref


def make_final(W, depth, status=None, loss=0.0):
    """A minimal engine-like final table for endpoints W (runs, d, d')."""
    n = len(W)
    status = ["converged"] * n if status is None else status
    cols = {"run": np.arange(n, dtype=np.int64),
            "depth": np.asarray(np.broadcast_to(depth, n), dtype=np.float64),
            "loss": np.asarray(np.broadcast_to(loss, n), dtype=np.float64),
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
    hits = nuclear._solve_nuclear.cache_info().hits
    again = min_nuclear_norm_completion(diagonal_3x3())
    assert nuclear._solve_nuclear.cache_info().hits == hits + 1
    assert again.matrix is first.matrix and not again.matrix.flags.writeable
    assert min_nuclear_norm_completion(other).norm == pytest.approx(6.0, abs=1e-7)  # tr X
    assert min_nuclear_norm_completion(ones).norm == pytest.approx(3.0, abs=1e-7)
    fresh = nuclear._solve_nuclear.__wrapped__(nuclear.problem_key(ones), "CLARABEL")
    assert fresh[0] == first.norm and fresh[2] == first.unique
    for got, want in zip((first.matrix, first.left, first.right), (fresh[1], fresh[3], fresh[4])):
        np.testing.assert_array_equal(got, want)
    # the rank search: r_min = 1 on the 2x2 diagonal task, 2 on Razin & Cohen's (det W = -1)
    for problem, r_min in [(diagonal_2x2(), 1), (razin_cohen_2x2(), 2), (diagonal_2x2(), 1)]:
        key = nuclear.problem_key(problem)
        assert nuclear.lowest_completion_rank(key) == r_min
        assert nuclear.lowest_completion_rank.__wrapped__(key) == r_min


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
                                   "ci_high", "p_value", "n", "n_outside"]
    # a point mass has no continuous CDF: no KS p-value against it
    assert np.isnan(table.query("candidate == 'norm' and statistic == 'ks'")["p_value"].iloc[0])
    pd.testing.assert_frame_equal(table, compare(t, cands, n_boot=300, seed=7))
    with pytest.raises(ValueError):
        compare(np.array([0.1, np.nan]), cands)


def test_samples_outside_the_window_are_counted_and_reject():
    """Two of five samples outside the window: counted, kept in the KS distance (the CDF is 1
    above the window), and the candidate, which gives them density 0, is rejected (p = 0)."""
    t = np.array([-0.2, 0.0, 0.3, 4.0, 5.0])
    table = compare(t, {"P1": P.p1(np.inf, window=(-3.0, 3.0)), "P1_wide": P.p1(np.inf)},
                    n_boot=0)
    ks = table.query("statistic == 'ks'").set_index("candidate")
    assert ks.loc["P1", "n_outside"] == 2 and ks.loc["P1_wide", "n_outside"] == 0
    assert ks.loc["P1", "p_value"] == 0.0 and ks.loc["P1_wide", "p_value"] > 0.05
    F = P.p1(np.inf, window=(-3.0, 3.0)).cdf(t)
    assert F[3:] == pytest.approx([1.0, 1.0], abs=1e-15)
    assert ks.loc["P1", "value"] == pytest.approx(
        max(np.max(np.arange(1, 6) / 5 - F), np.max(F - np.arange(5) / 5)), abs=1e-12)


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
    near = np.argmin(np.linalg.norm(W[:-1, None] - centres[None], axis=(2, 3)), axis=1)
    free = ~np.eye(3, dtype=bool).ravel()
    for k in range(3):  # sizes and volumes against brute force
        X = W[:-1][near == k].reshape(-1, 9)
        assert out["diameter"].iloc[k] == pytest.approx(cdist(X, X).max(), rel=1e-12)
        assert out["free_entry_std"].iloc[k] == pytest.approx(X[:, free].std(axis=0).max())
        assert out["log_volume_density_reg"].iloc[k] == pytest.approx(
            brute_log_volume_reg(got[k], 3), rel=1e-8)
    # the two rank-1 centres are images of each other under W -> D W D, D = diag(1, -1, 1),
    # a symmetry of the problem that preserves g^N: one class; the rank-2 cluster another
    cls = out["symmetry_class"].tolist()
    assert cls[0] == cls[1] != cls[2]
    assert out["class_fraction"].tolist() == pytest.approx([0.9, 0.9, 0.1])
    assert brute_log_volume_reg(centres[0], 3) > brute_log_volume_reg(centres[2], 3)
    assert out["is_max_volume"].tolist() == [True, True, False]
    assert out["is_heaviest"].tolist() == [True, True, False]
    sub = clusters(final, diagonal_3x3(), threshold=0.1, max_points=50, seed=1)
    assert sub["size"].tolist() == sizes


def test_symmetries_preserve_the_problem_and_the_spectrum():
    """Every listed map sends completions to completions with the same singular values; the
    counts are those of the groups written out by hand."""
    rng = np.random.default_rng(3)
    for problem, count in [(diagonal_2x2(), 16), (diagonal_3x3(), 96), (razin_cohen_2x2(), 8),
                           (random_low_rank(3, 3, 2, 6, seed=0), 2)]:
        maps = manifold.symmetries(problem)
        assert maps.count == count
        X = np.where(problem.mask, problem.targets, rng.standard_normal((4,) + problem.shape))
        images = maps(X)
        np.testing.assert_allclose(problem.loss(images), 0.0, atol=1e-24)
        np.testing.assert_allclose(np.linalg.svd(images, compute_uv=False),
                                   np.broadcast_to(np.linalg.svd(X, compute_uv=False),
                                                   (count, 4, min(problem.shape))), rtol=1e-12)
    # 2x2 diagonal by hand: {W, D W D, S W S, S D W D S} and their transposes, D = diag(1, -1),
    # S the swap; each twice
    W = rng.standard_normal((2, 2))
    D, S = np.diag([1.0, -1.0]), np.array([[0.0, 1.0], [1.0, 0.0]])
    expect = [M for A in (W, W.T) for M in (A, D @ A @ D, S @ A @ S, S @ D @ A @ D @ S)]
    got = manifold.symmetries(diagonal_2x2())(W)
    for M in expect:
        assert np.sum(np.all(np.isclose(got, M), axis=(1, 2))) == 2


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


def test_clusters_do_not_chain_a_stretch_of_solutions(monkeypatch):
    """A dense arc of rank-1 completions (far longer than the threshold) is cut into clusters
    of diameter <= threshold (complete linkage), never chained into one as single linkage
    would; every reported diameter is the brute-force one; the tight rank-2 cluster's centre is
    its medoid (the arc's mean, for contrast, is not even rank 1)."""
    rng = np.random.default_rng(13)
    W, truth = arc_mixture(rng)
    assert numerical_rank(W[truth == 0].mean(axis=0)) == 3
    X = W.reshape(len(W), -1)
    single = fcluster(linkage(X, "single"), t=0.6, criterion="distance")
    assert len(set(single[truth == 0])) == 1  # what single linkage would report
    final = make_final(W, 3)
    out = clusters(final, diagonal_3x3(), threshold=0.6)
    labels = clustering._complete_linkage(X, 0.6, 3000, 0)
    assert len(out) > 4 and out["size"].sum() == len(W)
    diameters = []
    for k in range(labels.max() + 1):
        members = X[labels == k]
        diameters.append(cdist(members, members).max())
    assert max(diameters) <= 0.6
    np.testing.assert_allclose(np.sort(out["diameter"]), np.sort(diameters), rtol=1e-12)
    tight = out[out["size"] == 40]
    assert len(tight) == 1 and tight["rank"].iloc[0] == 2
    Xt = X[truth == 1]
    medoid = Xt[np.argmin(cdist(Xt, Xt).sum(axis=1))]
    np.testing.assert_array_equal(tight[entry_columns((3, 3))].to_numpy()[0], medoid)
    arc = out[out["size"] != 40]
    assert (arc["rank"] == 1).all() and (arc["member_rank_median"] == 1.0).all()
    # large clusters: the medoid of a seeded subsample, still a member
    monkeypatch.setattr(clustering, "_MEDOID_SAMPLE", 10)
    sub = clusters(final, diagonal_3x3(), threshold=0.6, seed=3)
    centre = sub[entry_columns((3, 3))].to_numpy()[0]
    assert np.any(np.all(X == centre, axis=1))


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

def hyperbola_final(t, rng, depth=np.inf, extra=()):
    """Endpoints on the hyperbola at curve coordinates t (|1 - ab| = 1e-4, random branch),
    then the rows ``extra``: (W, status, loss) each."""
    branch = rng.choice([-1, 1], len(t))
    W = np.stack([P.plane_point(ti, 1e-4 * rng.choice([-1, 1]), b) for ti, b in zip(t, branch)])
    status = ["converged"] * len(t) + [e[1] for e in extra]
    loss = [0.0] * len(t) + [e[2] for e in extra]
    if extra:
        W = np.concatenate([W, np.stack([e[0] for e in extra])])
    return make_final(W, depth, status, loss)


def test_endpoint_status_labels_every_row_by_one_rule():
    on = P.plane_point(0.3, 1e-3, 1)
    rows = [(on, "converged", 1e-12), (P.plane_point(0.3, 0.2, 1), "converged", 1e-12),
            (np.full((2, 2), np.nan), "diverged", np.nan), (1e-3 * np.eye(2), "max_steps", 0.99),
            (0.5 * np.eye(2), "max_steps", 0.25), (on, "max_steps", 1e-3)]
    final = make_final(np.stack([r[0] for r in rows]), 5, [r[1] for r in rows],
                       [r[2] for r in rows])
    got = stats.endpoint_status(final, diagonal_2x2()).astype(str).tolist()
    assert got == ["on_curve", "off_curve", "diverged", "stuck_at_origin", "not_converged",
                   "not_converged"]
    # noisy runs have no convergence: at their horizon they count as finished
    noisy = final.assign(temperature=1e-4)
    assert stats.endpoint_status(noisy, diagonal_2x2()).astype(str).tolist()[-1] == "on_curve"
    # a tighter tolerance moves the first row off the curve and changes nothing else
    tight = stats.endpoint_status(final, diagonal_2x2(), curve_tol=1e-4).astype(str).tolist()
    assert tight[0] == "off_curve" and tight[2:] == got[2:]
    # Razin-Cohen: bounded / unbounded by the sign of det W (every solution has det -1)
    W = np.stack([[[-50.0, 1.0], [1.0, 0.01]], [[60.0, 1.0], [1.0, 0.02]]])
    rc = make_final(W, 3, loss=1e-4 / 2)
    assert stats.endpoint_status(rc, razin_cohen_2x2()).astype(str).tolist() == [
        "bounded", "unbounded"]
    counts = stats.status_counts(stats.endpoint_status(final, diagonal_2x2()), diagonal_2x2())
    assert counts == {"n_diverged": 1, "n_stuck_at_origin": 1, "n_not_converged": 2,
                      "n_on_curve": 1, "n_off_curve": 1}
    assert sum(stats.status_counts(stats.endpoint_status(final, diagonal_2x2())).values()) == 6


def test_hypotheses_on_the_hyperbola_hold_and_fail_on_planted_samples():
    """Exact draws from the N = inf P1 law (sech^2 t / 2) on the curve: the volume hypothesis
    holds; draws packed at the corners: it fails. Diverged and stuck rows are excluded and
    counted, never used."""
    rng = np.random.default_rng(9)
    n = 300
    extra = [(np.full((2, 2), np.nan), "diverged", np.nan),
             (1e-3 * rng.standard_normal((2, 2)), "max_steps", 1.0)]
    final = hyperbola_final(sech2_sample(n, rng), rng, extra=extra)
    table = hypotheses(final, diagonal_2x2(), n_boot=200)
    assert table["hypothesis"].tolist() == ["norm", "rank", "volume"]
    assert (table["n"] == n).all() and (table["n_excluded"] == 2).all()
    assert (table["excluded"] == "diverged 1, stuck_at_origin 1").all()
    W = endpoint_matrices(final, (2, 2))[:n]
    sv = np.linalg.svd(W, compute_uv=False)
    assert table["value"].iloc[0] == pytest.approx(np.mean(sv.sum(axis=1) <= 2 * 1.01))
    assert table["value"].iloc[1] == pytest.approx(
        np.mean(sv[:, 1] < 0.05 * np.linalg.norm(sv, axis=1)))
    assert "r_min = 1" in table["result"].iloc[1]
    assert table["holds"].tolist() == [False, True, True]  # most |t| > 0: norm above 2
    volume = table.iloc[2]
    assert volume["p_value"] > 0.05 / 3 and volume["value"] > 0
    packed = hyperbola_final(0.05 * rng.standard_normal(n), rng)
    again = hypotheses(packed, diagonal_2x2(), n_boot=50)
    assert again["holds"].tolist() == [True, True, False]
    assert again["p_value"].iloc[2] < 1e-6
    # the segment a = b, |a| < 0.8, of minimum nuclear norm completions (N = 2 from small init):
    # norm holds, rank fails (s_2 / s_1 = (1 - |a|) / (1 + |a|) > 0.1), and nothing is on the curve
    a = rng.uniform(-0.8, 0.8, 50)
    segment = make_final(np.stack([[[1.0, x], [x, 1.0]] for x in a]), 2)
    seg = hypotheses(segment, diagonal_2x2(), n_boot=0)
    assert seg["holds"].tolist()[:2] == [True, False] and pd.isna(seg["holds"].iloc[2])
    assert seg["n"].tolist() == [50, 50, 0] and seg["excluded"].iloc[2] == "off_curve 50"


def test_hyperbola_volume_verdict_is_calibrated():
    """Under exact draws from P1 the verdict fails (a false rejection) at most at its level:
    Bonferroni over P1-P3 at 5% / 3 each; a shifted law (t + 0.5) fails nearly always."""
    rng = np.random.default_rng(21)
    reps, n = 200, 60
    fails = sum(not volume_on_hyperbola(hyperbola_final(sech2_sample(n, rng), rng),
                                        diagonal_2x2(), np.inf, window=(-6.0, 6.0),
                                        n_boot=0).holds for _ in range(reps))
    assert fails <= sst.binom.ppf(0.999, reps, 0.05)
    shifted = sum(not volume_on_hyperbola(hyperbola_final(sech2_sample(400, rng) + 0.5, rng),
                                          diagonal_2x2(), np.inf, window=(-6.0, 6.0),
                                          n_boot=0).holds for _ in range(20))
    assert shifted >= 19


@pytest.mark.parametrize("rank1_runs", [70, 30])
def test_hypotheses_volume_on_planted_clusters(rank1_runs):
    """Two planted modes, rank 1 and rank 2: the volume row reports the mass of the mode of
    larger regularized volume (found here with the brute-force operator) with its binomial
    interval, and holds exactly when that mode is the heavier."""
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
    assert bool(volume["holds"]) == (sizes[top] == max(sizes))
    one = hypotheses(make_final(W[:sizes[0]], 4), diagonal_3x3(), n_boot=50).iloc[2]
    assert np.isnan(one["value"]) and pd.isna(one["holds"]) and "one class" in one["result"]


def test_symmetric_images_pool_noisy_ranges_do_not():
    """Two rank-1 modes that are images of each other under a symmetry (D W D) pool into one
    class however their sizes compare; two rank-2 modes that are not images of each other stay
    two classes even though their predicted volumes are close."""
    rng = np.random.default_rng(4)
    x = np.array([1.0, -1.0, 1.0])
    modes = [np.ones((3, 3)), x[:, None] * x[None, :]]
    W = np.concatenate([m + 1e-3 * rng.standard_normal((k, 3, 3)) for m, k in zip(modes, (30, 45))])
    C1 = np.array([[1, 0, 0.6], [0, 1, 0.8], [0.6, 0.8, 1]])
    C2 = np.array([[1, 0.1, 0.6], [0.1, 1, 0.75], [0.6, 0.75, 1]])
    W = np.concatenate([W, C1 + 1e-4 * rng.standard_normal((50, 3, 3)),
                        C2 + 1e-4 * rng.standard_normal((10, 3, 3))])
    out = clusters(make_final(W, 3), diagonal_3x3(), threshold=0.05)
    assert len(out) == 4 and out["symmetry_class"].nunique() == 3
    assert out.groupby("symmetry_class")["size"].sum().sort_values().tolist() == [10, 50, 75]
    table = hypotheses(make_final(W, 3), diagonal_3x3(), n_boot=0)
    volume = table.iloc[2]
    assert volume["value"] == 75 / 135 and bool(volume["holds"])


def test_verdicts_not_testable_say_why():
    """Razin-Cohen endpoints: every completion has full rank (rank NA); the unbounded runs
    (det > 0) are outside the volume premise and counted; the norm hypothesis fails on them."""
    rng = np.random.default_rng(6)
    x = 50 + 10 * rng.random(40)
    W = np.stack([[[xi, 1.0], [1.0, (1.0 + 1e-3) / xi]] for xi in x])  # det > 0, loss ~ 1e-4
    W[:10] = np.stack([[[-xi, 1.0], [1.0, 1e-3]] for xi in x[:10]])     # det < 0: bounded
    table = hypotheses(make_final(W, 3, loss=1e-4), razin_cohen_2x2(), n_boot=0)
    norm, rank, volume = (table.iloc[k] for k in range(3))
    assert norm["holds"] == False and norm["n"] == 40  # noqa: E712
    assert pd.isna(rank["holds"]) and "full rank" in rank["result"]
    assert volume["n"] == 10 and volume["n_excluded"] == 30
    assert volume["excluded"] == "unbounded 30"


def test_hypotheses_bad_inputs():
    rng = np.random.default_rng(12)
    _, _, W = planted_mixture(rng, noise=1e-2)
    final = make_final(W, 4)
    with pytest.raises(ValueError, match="depths"):
        hypotheses(make_final(W, np.arange(len(W)) % 2 + 2), diagonal_3x3())
    stuck = hypotheses(make_final(W, 4, ["max_steps"] * len(W), 3.0), diagonal_3x3())
    assert stuck["holds"].isna().all() and (stuck["n"] == 0).all()
    assert (stuck["excluded"] == f"stuck_at_origin {len(W)}").all()
    with pytest.raises(ValueError):
        describe(final, CompletionProblem((2, 2), {(0, 0): 1.0}))


def test_clusters_small_class_cannot_define_the_largest_volume():
    """A lone endpoint of larger predicted volume than every planted mode (found with the
    brute-force operator) cannot define the largest unless min_size allows."""
    rng = np.random.default_rng(8)
    _, _, W = planted_mixture(rng)
    base = brute_log_volume_reg(np.ones((3, 3)), 3)
    lone = next(c * np.ones((3, 3)) for c in (0.2, 5.0)
                if brute_log_volume_reg(c * np.ones((3, 3)), 3) > base + 1)
    final = make_final(np.concatenate([W, lone[None]]), 3)
    default = clusters(final, diagonal_3x3(), threshold=0.1)
    loose = clusters(final, diagonal_3x3(), threshold=0.1, min_size=1)
    assert default["size"].iloc[-1] == 1 and loose["size"].iloc[-1] == 1
    assert not default["is_max_volume"].iloc[-1] and default["is_max_volume"].iloc[:2].all()
    assert loose["is_max_volume"].iloc[-1] and not loose["is_max_volume"].iloc[:3].any()
    assert loose["log_volume_density_reg"].iloc[-1] == pytest.approx(
        brute_log_volume_reg(lone, 3), rel=1e-8)


def test_symmetry_classes_do_not_chain_neighbours():
    """The segment S(a) = [[1, a, 0], [a, 1, 0], [0, 0, 0]] of diag(1, 1, 0): complete linkage
    cuts it into pieces; a piece joins only its mirror image S(-a) (W -> D W D), never its
    neighbours, so there are about half as many classes as pieces."""
    a = np.linspace(-1, 1, 400)
    W = np.zeros((400, 3, 3))
    W[:, 0, 0] = W[:, 1, 1] = 1.0
    W[:, 0, 1] = W[:, 1, 0] = a
    out = clusters(make_final(W, 2), diagonal_3x3((1.0, 1.0, 0.0)), threshold=0.3)
    pieces, classes = len(out), out["symmetry_class"].nunique()
    assert pieces >= 6 and pieces / 2 <= classes <= pieces / 2 + 1
    for _, members in out.groupby("symmetry_class"):
        mirrored = np.sort(members["w_0_1"].to_numpy())
        assert len(members) <= 2 and np.allclose(mirrored, -mirrored[::-1], atol=0.3)


def test_volume_verdict_needs_a_pile_up():
    """Endpoints scattered over the completions (no class of 5): the volume verdict is NA, not
    decided by which singleton happens to be counted first."""
    rng = np.random.default_rng(17)
    W = np.where(np.eye(3, dtype=bool), 1.0, rng.uniform(-3, 3, (12, 3, 3)))
    volume = hypotheses(make_final(W, 3), diagonal_3x3(), n_boot=0).iloc[2]
    assert pd.isna(volume["holds"]) and "pile up nowhere" in volume["result"]
