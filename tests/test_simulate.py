"""The public engine against independent computations (tests/reference.py, finite
differences, closed-form noise laws)."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import dlnmc
from dlnmc import CompletionProblem, simulate
from dlnmc.init import init_factors, product

from . import reference as ref


def random_problem(rng, rows, cols, frac=0.6):
    mask = rng.random((rows, cols)) < frac
    mask.flat[rng.integers(rows * cols)] = True
    return CompletionProblem.from_mask(mask, rng.standard_normal((rows, cols)))


def as_list(factors, r):
    return [F[r] for F in factors]


# -- gradients ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape, depth, widths", [((2, 2), 3, None), ((3, 2), 2, [4]), ((2, 3), 4, [3, 1, 2])])
def test_engine_step_is_the_finite_difference_gradient(shape, depth, widths):
    rng = np.random.default_rng(0)
    problem = random_problem(rng, *shape)
    init = init_factors(shape, depth, 2, "gaussian", init_scale=1.0, widths=widths, seed=1)
    lr = 1e-3
    res = simulate(problem, depth, 2, lr, init=init, widths=widths, max_steps=1, tol=0,
                   checkpoints=None)
    h = 1e-6
    for r in range(2):
        factors = as_list(init, r)
        for p, F in enumerate(factors):
            engine_grad = (F - res.factors[p][r]) / lr
            fd = np.zeros_like(F)
            for idx in np.ndindex(F.shape):
                plus = [G.copy() for G in factors]
                minus = [G.copy() for G in factors]
                plus[p][idx] += h
                minus[p][idx] -= h
                fd[idx] = (ref.loss(ref.end_to_end(plus), problem.mask, problem.targets)
                           - ref.loss(ref.end_to_end(minus), problem.mask, problem.targets)) / (2 * h)
            np.testing.assert_allclose(engine_grad, fd, rtol=1e-6, atol=1e-8)


# -- the engine against the slow reference --------------------------------------------------

@pytest.mark.parametrize(
    "shape, depth, widths, init",
    [((2, 2), 1, None, "gaussian"), ((2, 2), 5, None, "balanced"), ((3, 3), 3, None, "gaussian"),
     ((3, 2), 3, [4, 3], "balanced"), ((2, 4), 2, [1], "gaussian"), ((4, 3), 4, None, "balanced")],
)
def test_engine_matches_reference_trajectory_by_trajectory(shape, depth, widths, init):
    rng = np.random.default_rng(hash((shape, depth)) % 2**32)
    problem = random_problem(rng, *shape)
    runs, steps, lr = 3, 1000, 0.02
    factors0 = init_factors(shape, depth, runs, init, init_scale=0.5, widths=widths, seed=7)
    res = simulate(problem, depth, runs, lr, init=init, init_scale=0.5, widths=widths,
                   max_steps=steps, tol=0, seed=7, checkpoints=[0, 10, 1000])
    assert (res.final["status"] == "max_steps").all() and (res.final["steps"] == steps).all()
    for r in range(runs):
        factors, losses = ref.gd_trajectory(as_list(factors0, r), problem.mask, problem.targets, lr, steps)
        for p in range(depth):
            got = res.factors[p][r]
            assert np.max(np.abs(got - factors[p])) <= 1e-10 * max(1.0, np.max(np.abs(factors[p])))
        W = ref.end_to_end(factors)
        row = res.final.iloc[r]
        np.testing.assert_allclose([row[f"w_{i}_{j}"] for i in range(shape[0]) for j in range(shape[1])],
                                   W.reshape(-1), rtol=1e-10, atol=1e-12)
        assert row["loss"] == pytest.approx(losses[-1], rel=1e-9, abs=1e-20)
        hist = res.history[res.history["run"] == r].set_index("step")["loss"]
        np.testing.assert_allclose(hist.loc[[0, 10, 1000]].to_numpy(), losses[[0, 10, 1000]], rtol=1e-9,
                                   atol=1e-20)


def test_final_table_columns_and_spectral_values():
    problem = dlnmc.razin_cohen_2x2()
    res = simulate(problem, 3, 5, 0.01, init_scale=0.1, max_steps=300, tol=1e-3, seed=3)
    f = res.final
    expected = ["run", "seed", "depth", "lr", "init", "init_scale", "widths", "temperature",
                "steps", "loss", "status", "w_0_0", "w_0_1", "w_1_0", "w_1_1", "det_init", "sv_0", "sv_1", "erank", "det"]
    assert list(f.columns) == expected
    assert (f["widths"] == "2x2").all()
    assert isinstance(f["status"].dtype, pd.CategoricalDtype)
    assert list(f["status"].cat.categories) == ["converged", "max_steps", "diverged"]
    assert f["steps"].dtype == np.int64 and f["loss"].dtype == np.float64
    W = f[["w_0_0", "w_0_1", "w_1_0", "w_1_1"]].to_numpy().reshape(-1, 2, 2)
    s = np.linalg.svd(W, compute_uv=False)
    np.testing.assert_allclose(f[["sv_0", "sv_1"]].to_numpy(), s, rtol=1e-12)
    p = s / s.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(f["erank"], np.exp(-(p * np.log(p)).sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(f["det"], np.linalg.det(W), rtol=1e-12)
    W0 = product(init_factors((2, 2), 3, 5, "balanced", 0.1, seed=3))
    np.testing.assert_allclose(f["det_init"], np.linalg.det(W0), rtol=1e-12)
    np.testing.assert_allclose(f["loss"], problem.loss(W), rtol=1e-12)


def test_stop_rule_and_history():
    problem = dlnmc.diagonal_2x2()
    res = simulate(problem, 2, 4, 0.05, init_scale=0.1, max_steps=5000, tol=1e-6, seed=0)
    f = res.final
    assert (f["status"] == "converged").all() and (f["loss"] <= 1e-6).all()
    h = res.history
    for r, g in h.groupby("run"):
        steps = g["step"].to_numpy()
        assert steps[0] == 0 and np.all(np.diff(steps) > 0)
        assert steps[-1] == f.loc[f["run"] == r, "steps"].item()      # the endpoint closes the curve
        # GD from a small init on this task: loss before stopping stays above tol
        assert np.all(g["loss"].to_numpy()[:-1] > 1e-6)
    # tol = 0 runs every step
    res0 = simulate(problem, 2, 2, 0.05, init_scale=0.1, max_steps=700, tol=0, checkpoints=None)
    assert (res0.final["steps"] == 700).all() and (res0.final["status"] == "max_steps").all()
    assert set(res0.history["step"]) == {700}


# -- conservation of balancedness ------------------------------------------------------------

def _imbalance(factors, r):
    F = as_list(factors, r)
    return sum(np.linalg.norm(F[p + 1].T @ F[p + 1] - F[p] @ F[p].T) for p in range(len(F) - 1))


def test_balancedness_drift_is_second_order_in_lr():
    problem = dlnmc.diagonal_3x3((1.0, 2.0, 0.5))
    init = init_factors((3, 3), 4, 3, "balanced", init_scale=1.0, seed=2)
    assert max(_imbalance(init, r) for r in range(3)) < 1e-12
    one_step = []
    fixed_time = []
    for lr in (1e-2, 5e-3, 2.5e-3):
        res = simulate(problem, 4, 3, lr, init=init, max_steps=1, tol=0, checkpoints=None)
        one_step.append([_imbalance(res.factors, r) for r in range(3)])
        res = simulate(problem, 4, 3, lr, init=init, max_steps=round(2.0 / lr), tol=0, checkpoints=None)
        fixed_time.append([_imbalance(res.factors, r) for r in range(3)])
    one_step, fixed_time = np.array(one_step), np.array(fixed_time)
    # one step: exactly lr^2 (g_{p+1}^T g_{p+1} - g_p g_p^T) -> ratio 4 per halving of lr
    np.testing.assert_allclose(one_step[:-1] / one_step[1:], 4.0, rtol=1e-6)
    # fixed time t = 2: t/lr steps of O(lr^2) -> O(lr), ratio ~2 per halving
    np.testing.assert_allclose(fixed_time[:-1] / fixed_time[1:], 2.0, rtol=0.1)


# -- reproducibility -----------------------------------------------------------------------

@pytest.mark.parametrize("shape, temperature", [((2, 2), 0.0), ((3, 2), 0.0), ((2, 2), 1e-4)])
def test_bitwise_reproducible_across_threads_and_splits(shape, temperature):
    problem = random_problem(np.random.default_rng(4), *shape)
    kw = dict(depth=3, lr=0.01, init_scale=0.3, max_steps=400, tol=1e-5, seed=11,
              temperature=temperature)
    whole = simulate(problem, runs=37, n_threads=1, **kw)
    two = simulate(problem, runs=37, n_threads=2, **kw)
    parts = [simulate(problem, runs=n, first_run=start, n_threads=2, **kw)
             for start, n in ((0, 5), (5, 1), (6, 31))]
    final = pd.concat([p.final for p in parts], ignore_index=True)
    history = pd.concat([p.history for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(whole.final, two.final, check_exact=True)
    pd.testing.assert_frame_equal(whole.final, final, check_exact=True)
    pd.testing.assert_frame_equal(whole.history, history, check_exact=True)
    for p in range(3):
        np.testing.assert_array_equal(whole.factors[p], np.concatenate([q.factors[p] for q in parts]))


# -- noise -----------------------------------------------------------------------------------

def test_noise_increments_have_the_stated_variance():
    problem = dlnmc.diagonal_2x2()
    runs, lr, T = 2000, 1e-3, 0.5
    init = init_factors((2, 2), 3, runs, "gaussian", init_scale=1.0, seed=0)
    clean = simulate(problem, 3, runs, lr, init=init, max_steps=1, tol=0, checkpoints=None)
    noisy = simulate(problem, 3, runs, lr, init=init, max_steps=1, tol=0, checkpoints=None,
                     temperature=T, seed=5)
    xi = np.concatenate([(n - c).reshape(-1) for n, c in zip(noisy.factors, clean.factors)])
    sigma = np.sqrt(2 * lr * T)
    z = xi / sigma
    n = z.size

    def variance_p(scale):
        # chi-square test of sum z^2 / scale^2 with n degrees of freedom, two-sided
        q = stats.chi2.cdf(np.sum((z / scale) ** 2), n)
        return 2 * min(q, 1 - q)

    assert variance_p(1.0) > 1e-3
    assert variance_p(1.05) < 1e-6              # negative control: a 5% wrong scale is rejected
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert stats.kstest(z * 1.05, "norm").pvalue < 1e-3
    # no correlation between neighbouring parameters or between runs
    Z = z.reshape(-1)
    assert abs(np.corrcoef(Z[:-1], Z[1:])[0, 1]) < 5 / np.sqrt(n)
    # a different seed gives different noise, the same seed the same noise
    again = simulate(problem, 3, runs, lr, init=init, max_steps=1, tol=0, checkpoints=None,
                     temperature=T, seed=5)
    np.testing.assert_array_equal(again.factors[0], noisy.factors[0])
    other = simulate(problem, 3, runs, lr, init=init, max_steps=1, tol=0, checkpoints=None,
                     temperature=T, seed=6)
    assert not np.array_equal(other.factors[0], noisy.factors[0])


# -- divergence ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 2), (2, 3)])
def test_divergent_rows_do_not_disturb_the_others(shape):
    problem = random_problem(np.random.default_rng(8), *shape, frac=1.0)
    depth, runs = 3, 8
    init = init_factors(shape, depth, runs, "gaussian", init_scale=0.3, seed=1)
    blow = np.array([1, 4, 6])
    for F in init:
        F[blow] *= 20.0                       # far too large for this lr: these runs explode
    kw = dict(max_steps=3000, tol=1e-9, checkpoints=[0, 100])
    res = simulate(problem, depth, runs, 0.05, init=init, **kw)
    status = res.final["status"].to_numpy()
    assert (status[blow] == "diverged").all()
    keep = np.setdiff1d(np.arange(runs), blow)
    assert (status[keep] != "diverged").all()
    clean = simulate(problem, depth, len(keep), 0.05, init=[F[keep] for F in init], **kw)
    cols = [c for c in res.final.columns if c != "run"]
    pd.testing.assert_frame_equal(res.final.iloc[keep][cols].reset_index(drop=True),
                                  clean.final[cols], check_exact=True)
    # statistics of the batch stay finite where they concern the healthy runs
    assert np.isfinite(res.final.loc[res.final["status"] != "diverged", "loss"]).all()


# -- input validation and output ------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(depth=0), "depth"), (dict(depth=2.5), "depth"), (dict(runs=0), "runs"),
     (dict(lr=0.0), "lr"), (dict(lr=np.nan), "lr"), (dict(lr=np.inf), "lr"),
     (dict(max_steps=-1), "max_steps"), (dict(tol=-1.0), "tol"), (dict(seed=-3), "seed"),
     (dict(temperature=-1.0), "temperature"), (dict(init_scale=np.nan), "init_scale"),
     (dict(init="laplace"), "init must be"), (dict(widths=[2]), "hidden widths"),
     (dict(checkpoints=[5, 10**9]), "checkpoint"), (dict(checkpoints="linear"), "checkpoints"),
     (dict(n_threads=0), "n_threads"), (dict(det_sign=2), "det_sign")],
)
def test_bad_inputs_raise(kwargs, match):
    args = dict(problem=dlnmc.diagonal_2x2(), depth=3, runs=2, lr=0.01, max_steps=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate(**args)


def test_problem_type_checked():
    with pytest.raises(ValueError, match="CompletionProblem"):
        simulate(np.eye(2), 2, 1, 0.01)


def test_parquet_round_trip_with_provenance(tmp_path):
    res = simulate(dlnmc.razin_cohen_2x2(), 3, 4, 0.01, init_scale=0.1, max_steps=200, seed=9)
    out = res.to_parquet(tmp_path / "run")
    back = dlnmc.read_result(out)
    pd.testing.assert_frame_equal(back.final, res.final, check_exact=True)
    pd.testing.assert_frame_equal(back.history, res.history, check_exact=True)
    for a, b in zip(back.factors, res.factors):
        np.testing.assert_array_equal(a, b)
    prov = pd.read_parquet(out / "final.parquet").attrs["dlnmc"]
    assert prov["params"]["seed"] == 9 and prov["params"]["depth"] == 3
    assert set(prov["versions"]) >= {"dlnmc", "numba", "numpy"}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    res = simulate(dlnmc.diagonal_2x2(), 2, 2, 0.01, max_steps=10)

    def broken(table, path, **kw):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(dlnmc.results.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        res.to_parquet(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []


def test_razin_cohen_det_positive_drives_w11_up():
    res = simulate(dlnmc.razin_cohen_2x2(), 3, 20, 0.01, init_scale=1e-3, max_steps=20000,
                   tol=1e-4, seed=0, det_sign=1, checkpoints=None)
    f = res.final
    assert (f["det"] > 0).all()
    # every solution has det -1; staying at det > 0 forces |w11| ~ 1/sqrt(2 loss)
    bound = 1 / np.sqrt(2 * f["loss"])
    assert (f["w_0_0"].abs() > 0.5 * bound).all() and (f["w_0_0"].abs() > 10).all()
    assert (f["erank"] < 1.01).all()


def test_result_repr_is_a_summary_not_the_arrays():
    res = simulate(dlnmc.diagonal_2x2(), depth=3, runs=5, lr=0.05, max_steps=20, seed=0,
                   widths=[4, 3])
    text = repr(res)
    assert len(text) < 300 and "\n" not in text
    for part in ("gd", "problem=diagonal_2x2", "depth=3", "runs=5", "factors=4x2 3x4 2x3",
                 "'max_steps': 5"):
        assert part in text
