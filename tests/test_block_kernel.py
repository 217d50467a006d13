"""The fast block kernel (dlnmc/kernels/block.py) against the generic kernel (gd.py), which
runs one trajectory at a time with runtime shapes, and against the NumPy reference; plus the
block kernel's own promise: a trajectory's result does not depend on its lane, its block, the
batch or the thread count.

The block kernel adds products with fused multiply-adds and the generic kernel does not, so
they agree to rounding: every float within 1e-12 of its run's scale over 1000 steps, the same
statuses and stop steps.  The one allowed disagreement is a lane sitting at the tol boundary:
a run may stop as converged one kernel's step earlier when that kernel's loss at its stop step
is within rounding (1e-12 of the run's loss scale) of tol; such a run (at most one per
comparison) is left out of the float comparison.
"""
import importlib
import subprocess
import sys

import numba
import numpy as np
import pytest

from dlnmc import kernels
from dlnmc.init import layer_dims
from dlnmc.kernels import block, gd
from dlnmc.kernels.task import CONVERGED, DIVERGED, MAX_STEPS, Batch, Task
from dlnmc.problems import random_low_rank
from dlnmc.simulate import thread_count

from . import reference as ref

OBS = {2: np.array([1, 2, 3]), 3: np.array([0, 2, 4, 5, 7]), 8: np.arange(0, 64, 3)}
"""Observed entries (flat, row-major sorted as ``simulate`` passes them)."""
CKPT = np.array([0, 1, 7, 50, 300, 999], dtype=np.int64)
LR = 0.05
RTOL = 1e-12


def _problem(d, seed=1):
    obs = OBS[d].astype(np.int64)
    return obs, np.random.default_rng(seed).uniform(-1.0, 1.0, obs.size)


def _theta(d, depth, runs, seed=0, scale=1.0):
    """Factors near orthogonal times ``scale``: a mix of converging and slow trajectories."""
    rng = np.random.default_rng(seed)
    eye = np.tile(np.eye(d).ravel(), depth)
    return scale * (eye + 0.25 * rng.standard_normal((runs, depth * d * d)))


def _run(theta, d, lr=LR, noise_std=0.0, max_steps=1000, tol=1e-10, ckpt=CKPT, generic=False,
         keys=None):
    """Run one kernel on a copy of ``theta``; return every output as a dict."""
    runs, nparam = theta.shape
    depth = nparam // (d * d)
    obs, vals = _problem(d)
    keys = np.arange(1, runs + 1, dtype=np.uint64) * np.uint64(7919) if keys is None else keys
    task = Task((d,) * (depth + 1), obs, vals, lr, noise_std, max_steps, tol, ckpt)
    batch = Batch.allocate(task, theta.copy(), keys)
    (gd if generic else block).run(task, batch)
    return dict(hist_loss=batch.hist_loss, hist_w=batch.hist_w, w_out=batch.w_end,
                steps=batch.steps, loss=batch.loss, status=batch.status, theta=batch.theta)


_SCALES = {"theta": ("theta",), "w_out": ("w_out", "hist_w"), "hist_w": ("w_out", "hist_w"),
           "loss": ("loss", "hist_loss"), "hist_loss": ("loss", "hist_loss")}
"""Each output compared relative to its run's largest magnitude over these outputs (the
generic kernel's): factors, matrices W, losses."""


def _at_tol_boundary(fast, slow, tol):
    """Runs where the kernels stop at different steps because one of them has a loss within
    rounding of ``tol`` at its stop step (see the module docstring); fails on any other
    disagreement of steps or statuses."""
    differ = (fast["steps"] != slow["steps"]) | (fast["status"] != slow["status"])
    assert differ.sum() <= 1, f"runs {np.flatnonzero(differ)} differ"
    for r in np.flatnonzero(differ):
        early = fast if fast["steps"][r] < slow["steps"][r] else slow
        scale = np.nanmax(slow["hist_loss"][r])
        assert fast["status"][r] == slow["status"][r] == CONVERGED, f"run {r}"
        assert abs(fast["steps"][r] - slow["steps"][r]) == 1, f"run {r}"
        assert tol - early["loss"][r] <= RTOL * scale, f"run {r}: not at the tol boundary"
    return differ


def _assert_close(fast, slow, tol=None, rtol=RTOL):
    """Same steps and statuses (but for tol-boundary runs when ``tol`` is given); every float
    within ``rtol`` of its run's scale (:data:`_SCALES`); NaN in the same places."""
    keep = ~_at_tol_boundary(fast, slow, tol) if tol is not None else slice(None)
    np.testing.assert_array_equal(fast["steps"][keep], slow["steps"][keep])
    np.testing.assert_array_equal(fast["status"][keep], slow["status"][keep])
    runs = len(slow["steps"])
    flat = {k: (fast[k].reshape(runs, -1)[keep], slow[k].reshape(runs, -1)[keep])
            for k in _SCALES}
    for name, group in _SCALES.items():
        a, b = flat[name]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        scale = np.max([np.nanmax(np.abs(flat[g][1]), axis=1) for g in group], axis=0)
        err = np.nanmax(np.abs(a - b), axis=1) / (scale + 1e-300)
        assert err.max() <= rtol, f"{name}: {err.max():.2e}"


def _assert_same(a, b, rows_a=slice(None), rows_b=slice(None)):
    for name in a:
        np.testing.assert_array_equal(a[name][rows_a], b[name][rows_b], err_msg=name)


@pytest.mark.parametrize("d, depth, noise_std", [
    (d, depth, noise_std) for d in (2, 3) for depth in (1, 2, 5) for noise_std in (0.0, 1e-3)
] + [(8, 3, 0.0), (8, 2, 1e-5)])
def test_matches_generic_kernel(d, depth, noise_std):
    """d = 2, 3: entries in registers; d = 8: entries in scratch arrays (both code shapes)."""
    theta = _theta(d, depth, 21, seed=depth)
    full = _run(theta, d, noise_std=noise_std, tol=0.0)  # every trajectory: 1000 steps
    _assert_close(full, _run(theta, d, noise_std=noise_std, tol=0.0, generic=True))
    assert np.all(full["steps"] == 1000) and np.all(full["status"] == MAX_STEPS)
    assert np.abs(full["theta"] - theta).max() > 1e-3
    stopping = _run(theta, d, noise_std=noise_std, tol=1e-6)
    _assert_close(stopping, _run(theta, d, noise_std=noise_std, tol=1e-6, generic=True), 1e-6)
    assert np.any(stopping["status"] == CONVERGED)


def test_tol_boundary_rule_names_only_boundary_runs():
    """The boundary rule of :func:`_at_tol_boundary`: a run one step apart at a loss within
    rounding of tol passes; any other difference fails."""
    out = _run(_theta(2, 2, 3, seed=2), 2, tol=1e-6)
    assert np.all(out["status"] == CONVERGED)
    nudged = {k: v.copy() for k, v in out.items()}
    nudged["steps"][1] += 1
    assert list(_at_tol_boundary(out, nudged, out["loss"][1] + 1e-20)) == [False, True, False]
    with pytest.raises(AssertionError, match="not at the tol boundary"):
        _at_tol_boundary(out, nudged, 1e-6)
    nudged["steps"][1] += 1
    with pytest.raises(AssertionError, match="run 1"):
        _at_tol_boundary(out, nudged, out["loss"][1])


@pytest.mark.parametrize("d, depth", [(2, 1), (2, 4), (3, 3), (8, 2)])
def test_matches_numpy_reference(d, depth):
    """Factors, W and the loss history against :func:`reference.gd_trajectory` (plain matrix
    products, one trajectory at a time) over 300 steps."""
    steps, ckpt = 300, np.array([0, 10, 299, 300], dtype=np.int64)
    theta = _theta(d, depth, 5, seed=3)
    out = _run(theta, d, tol=-np.inf, max_steps=steps, ckpt=ckpt)
    obs, vals = _problem(d)
    mask, targets = np.zeros(d * d), np.zeros(d * d)
    mask[obs], targets[obs] = 1.0, vals
    mask, targets = mask.reshape(d, d), targets.reshape(d, d)
    for r in range(len(theta)):
        start = list(theta[r].reshape(depth, d, d))
        want, losses = ref.gd_trajectory(start, mask, targets, LR, steps)
        scale = np.abs(np.concatenate([theta[r], *(F.ravel() for F in want)])).max()
        assert np.abs(out["theta"][r] - np.concatenate([F.ravel() for F in want])).max() \
            <= RTOL * scale
        W = ref.end_to_end(want)
        assert np.abs(out["w_out"][r] - W.ravel()).max() <= RTOL * np.abs(W).max()
        assert np.abs(out["hist_loss"][r] - losses[ckpt]).max() <= RTOL * losses.max()
    assert np.all(out["steps"] == steps) and np.all(out["status"] == MAX_STEPS)


@pytest.mark.parametrize("d", [2, 3])
def test_divergence_matches_generic_and_spares_other_lanes(d):
    depth = 3
    theta = _theta(d, depth, 2 * block.LANES, seed=5)
    wild = theta.copy()
    wild[3] *= 4.0  # runs away at this step size
    clean = _run(theta, d)
    fast = _run(wild, d)
    slow = _run(wild, d, generic=True)
    assert fast["status"][3] == DIVERGED and fast["steps"][3] < 1000
    _assert_close(fast, slow)
    others = np.arange(len(theta)) != 3
    _assert_same(fast, clean, others, others)


def test_zero_step_size_runs_to_max_steps():
    """Lanes are told stopped by their run index, not their step size: lr = 0 keeps every
    factor and ends at max_steps, checkpoints recorded."""
    theta = _theta(2, 3, 5, seed=6)
    out = _run(theta, 2, lr=0.0, max_steps=60, ckpt=np.array([0, 50], dtype=np.int64))
    assert np.all(out["status"] == MAX_STEPS) and np.all(out["steps"] == 60)
    np.testing.assert_array_equal(out["theta"], theta)
    np.testing.assert_array_equal(out["hist_loss"][:, 0], out["hist_loss"][:, 1])


@pytest.mark.parametrize("d", [2, 3])
def test_lane_block_batch_and_thread_invariance(d):
    depth = 4
    lanes = block.LANES
    probe = _theta(d, depth, 1, seed=11)
    big = _theta(d, depth, 10_000, seed=12, scale=0.5)
    big[7777] = probe[0]
    keys = np.arange(1, 10_001, dtype=np.uint64) * np.uint64(7919)
    short = dict(noise_std=1e-3, max_steps=60, ckpt=np.array([0, 3, 40], dtype=np.int64))
    ref = _run(big, d, keys=keys, **short)
    for position in (0, lanes - 1, lanes + 2):
        batch = np.concatenate([big[:position], probe, big[-3:]])
        batch_keys = np.concatenate([keys[:position], keys[7777:7778], keys[-3:]])
        for threads in (1, 2):
            with thread_count(min(threads, numba.config.NUMBA_NUM_THREADS)):
                out = _run(batch, d, keys=batch_keys, **short)
            _assert_same(out, ref, position, 7777)
    alone = _run(probe, d, keys=keys[7777:7778], **short)  # a padded block of one
    _assert_same(alone, ref, 0, 7777)


def _chosen(shape, depth, widths=None, optimizer="gd"):
    dims = tuple(layer_dims(shape, depth, widths))
    task = Task(dims, np.zeros(1, np.int64), np.zeros(1), 0.1, 0.0, 1, 0.0, CKPT, optimizer)
    return kernels.choose(task).NAME


def test_dispatch_and_signatures():
    assert _chosen((2, 2), 3) == "block"
    assert _chosen((2, 2), 3, widths=[2, 3]) == "block"
    assert _chosen((2, 3), 2) == "block"
    assert _chosen((2, 2), 3, optimizer="rmsprop") == "generic"
    assert _chosen((10, 2), 2) == "generic"  # padding would cost 200 / 24 entries
    assert _chosen((11, 11), 2) == "generic"
    assert _chosen((40, 40), 2) == "blas"
    for d in (2, 3):
        assert len(block.block_kernel(d).signatures) == 1


def test_kernels_load_from_cache():
    """The generated kernels are cached (compiled under block.py's file name): a fresh process
    loads d = 2 and 3 instead of compiling them."""
    for d in (2, 3):
        block.block_kernel(d)  # compiled and saved here if not cached yet
    code = ("from dlnmc.kernels import block\n"
            "print(sum(sum(block.block_kernel(d).stats.cache_hits.values()) for d in (2, 3)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "2", out.stderr


@pytest.mark.parametrize("shape, depth, widths, temperature", [
    ((2, 3), 3, None, 0.0), ((3, 2), 4, [3, 2, 3], 1e-4), ((2, 2), 3, [2, 3], 1e-4),
    ((3, 3), 2, [2], 0.0)])
def test_padded_shapes_match_generic_kernel(monkeypatch, shape, depth, widths, temperature):
    """Rectangular problems and unequal widths run on the block kernel with every factor padded
    with zeros to d x d; the generic kernel on the same trajectories (noise included) gives the
    same numbers to rounding."""
    sim = importlib.import_module("dlnmc.simulate")  # the package exports the function

    problem = random_low_rank(*shape, 1, n_observed=shape[0] * shape[1] - 1, seed=3)
    assert _chosen(shape, depth, widths) == "block"
    kw = dict(init="balanced", init_scale=0.3, widths=widths, max_steps=400, tol=1e-9,
              temperature=temperature, checkpoints=[0, 5, 100], seed=4)
    fast = sim.simulate(problem, depth, 13, 0.05, **kw)
    monkeypatch.setattr(block, "fits", lambda task: False)
    slow = sim.simulate(problem, depth, 13, 0.05, **kw)
    assert fast.final.attrs["dlnmc"]["params"]["kernel"] == "block"
    assert slow.final.attrs["dlnmc"]["params"]["kernel"] == "generic"
    for a, b in zip(fast.factors, slow.factors):
        assert np.abs(a - b).max() <= RTOL * np.abs(b).max()
    w_scale = np.abs(slow.final.filter(like="w_").to_numpy()).max()
    for table in ("final", "history"):
        a, b = getattr(fast, table), getattr(slow, table)
        assert list(a.columns) == list(b.columns)
        for col in a.columns:
            if a[col].dtype != np.float64:
                assert a[col].equals(b[col]), (table, col)
                continue
            # W's entries, singular values (Weyl) and determinant move with W's scale
            power = shape[0] if col.startswith("det") else 1
            scale = max(np.nanmax(np.abs(b[col])), w_scale ** power)
            assert np.nanmax(np.abs(a[col] - b[col])) <= 1e-12 * scale, (table, col)
    assert (fast.final["steps"] > 5).all()
