"""Every registered GD kernel (dlnmc.kernels.KERNELS) against the slow NumPy reference, on the
test problems it says it fits: a new backend is tested by being registered.  Also the
registry's rule, the optimizers and objectives of ``simulate``, and each kernel's promise that
a trajectory's result does not depend on the thread count or on how runs are split."""
import numpy as np
import pytest

from dlnmc import kernels, random_low_rank, razin_cohen_2x2, simulate
from dlnmc.init import init_factors
from dlnmc.kernels.task import CONVERGED, DIVERGED, MAX_STEPS, Batch, Task

from . import reference as ref

PROBLEMS = {  # name: (problem, depth, hidden widths)
    "2x2 N3": (razin_cohen_2x2(), 3, None),
    "3x5 N3 w4": (random_low_rank(3, 5, 1, n_observed=10, seed=1), 3, [4, 4]),
    "12x12 N2": (random_low_rank(12, 12, 2, n_observed=70, seed=2), 2, None),
    "20x18 N3": (random_low_rank(20, 18, 2, n_observed=200, seed=3), 3, None),
}
STEPS = 40
CKPT = np.array([0, 3, 17, STEPS], dtype=np.int64)


def _setup(name, runs=3, optimizer="gd", lr=0.02, tol=-np.inf, max_steps=STEPS, scale=0.5):
    problem, depth, widths = PROBLEMS[name]
    factors = init_factors(problem.shape, depth, runs, "balanced", scale, widths, 7, 0, None)
    dims = (factors[0].shape[2], *(F.shape[1] for F in factors))
    i, j = problem.indices
    task = Task(dims, (i * problem.cols + j).astype(np.int64), problem.values, lr, 0.0,
                max_steps, tol, CKPT[CKPT <= max_steps], optimizer)
    theta = np.concatenate([F.reshape(runs, -1) for F in factors], axis=1)
    return problem, factors, task, theta


def _run(kernel, task, theta, keys=None):
    batch = Batch.allocate(task, theta.copy(), np.zeros(len(theta), np.uint64)
                           if keys is None else keys)
    kernel.run(task, batch)
    return batch


def _cases(optimizer):
    cases = [(k, name) for k in kernels.KERNELS for name in PROBLEMS
             if k.fits(_setup(name, optimizer=optimizer)[2])]
    return [pytest.param(k, name, id=f"{k.NAME}-{name}") for k, name in cases]


def test_every_kernel_fits_a_test_problem():
    fitted = {k.NAME for k, _ in (p.values for p in _cases("gd"))}
    assert fitted == {k.NAME for k in kernels.KERNELS}, "add a test problem the kernel fits"


@pytest.mark.parametrize("optimizer, kernel, name", [
    pytest.param(optimizer, *case.values, id=f"{optimizer}-{case.id}")
    for optimizer in ("gd", "rmsprop") for case in _cases(optimizer)])
def test_kernel_matches_numpy_reference(optimizer, kernel, name):
    problem, factors, task, theta = _setup(name, optimizer=optimizer)
    batch = _run(kernel, task, theta)
    trajectory = ref.gd_trajectory if optimizer == "gd" else ref.rmsprop_trajectory
    for r in range(len(theta)):
        want, losses = trajectory([F[r] for F in factors], problem.mask, problem.targets,
                                  task.lr, STEPS)
        got = np.split(batch.theta[r], np.cumsum(task.sizes)[:-1])
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.ravel(), rtol=0, atol=1e-12 * np.abs(w).max())
        np.testing.assert_allclose(batch.hist_loss[r], losses[CKPT], rtol=1e-11)
        W = ref.end_to_end(want)
        np.testing.assert_allclose(batch.w_end[r], W.ravel(), rtol=0, atol=1e-12)
    assert np.all(batch.steps == STEPS) and np.all(batch.status == MAX_STEPS)
    assert np.abs(batch.theta - theta).max() > 1e-3  # the factors moved


@pytest.mark.parametrize("kernel, name", _cases("gd"))
def test_kernel_stops_like_the_reference(kernel, name):
    """Converged at the first step whose loss is <= tol; a runaway run is marked diverged and
    leaves the others untouched."""
    problem, factors, task, theta = _setup(name, runs=4, max_steps=400)
    losses = ref.gd_trajectory([F[1] for F in factors], problem.mask, problem.targets, task.lr,
                               400)[1]
    assert losses[24] > losses[25] * (1 + 1e-6)  # a tol between them leaves no rounding doubt
    tol = 0.5 * (losses[24] + losses[25])
    task = Task(**{**task.__dict__, "tol": tol})
    wild = theta.copy()
    wild[2] *= 30.0
    batch = _run(kernel, task, wild)
    first = int(np.argmax(losses <= tol))
    assert batch.status[1] == CONVERGED and batch.steps[1] == first
    assert batch.status[2] == DIVERGED
    clean = _run(kernel, task, theta)
    for r in (0, 1, 3):
        np.testing.assert_array_equal(batch.theta[r], clean.theta[r])


@pytest.mark.parametrize("kernel, name", _cases("gd"))
def test_kernel_result_independent_of_split_and_threads(kernel, name):
    from dlnmc.simulate import thread_count
    problem, factors, task, theta = _setup(name, runs=9)
    keys = np.arange(1, 10, dtype=np.uint64) * np.uint64(7919)
    task = Task(**{**task.__dict__, "noise_std": 1e-3})
    with thread_count(1):
        whole = _run(kernel, task, theta, keys)
    with thread_count(2):
        parts = [_run(kernel, task, theta[s], keys[s]) for s in (slice(0, 4), slice(4, 9))]
    for field in ("theta", "hist_loss", "hist_w", "w_end", "steps", "loss", "status"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(b, field) for b in parts]), getattr(whole, field))


def test_registry_rule():
    def chosen(name, optimizer="gd"):
        return kernels.choose(_setup(name, optimizer=optimizer)[2]).NAME
    assert chosen("2x2 N3") == "block"
    assert chosen("2x2 N3", "rmsprop") == "generic"
    assert chosen("12x12 N2") == "generic"
    assert chosen("20x18 N3") == "blas"


def test_simulate_objective_mse_is_arora_et_al_loss():
    """objective='mse' descends (1/m) sum (W - b)^2; for RMSprop that is their optimizer on
    their loss, for GD the step size scaled by 2/m."""
    problem = PROBLEMS["12x12 N2"][0]
    kw = dict(init_scale=0.3, max_steps=30, tol=0.0, seed=2, checkpoints=None)
    factors = init_factors(problem.shape, 2, 2, "balanced", 0.3, None, 2, 0, None)
    m = len(problem.values)
    for optimizer in ("gd", "rmsprop"):
        res = simulate(problem, 2, 2, 1e-2, optimizer=optimizer, objective="mse", **kw)
        for r in range(2):
            start = [F[r] for F in factors]
            if optimizer == "gd":
                want = ref.gd_trajectory(start, problem.mask, problem.targets, 1e-2 * 2 / m, 30)
            else:
                want = ref.rmsprop_trajectory(start, problem.mask, problem.targets, 1e-2, 30,
                                              scale=2 / m)
            np.testing.assert_allclose(res.factors[1][r], want[0][1], rtol=1e-11, atol=1e-14)
        assert res.final.attrs["dlnmc"]["params"]["objective"] == "mse"


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="adam"), "optimizer must be one of"),
    (dict(objective="l1"), "objective must be one of"),
    (dict(optimizer="rmsprop", temperature=1e-3), "temperature > 0"),
    (dict(objective="mse", temperature=1e-3), "temperature > 0"),
])
def test_simulate_rejects_bad_optimizer_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(razin_cohen_2x2(), 2, 2, 1e-2, max_steps=2, **kwargs)
