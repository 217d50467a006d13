"""The fast block kernel (dlnmc/kernels/block.py) against the generic kernel (gd.py), which
runs one trajectory at a time with runtime shapes, plus the block kernel's own promise: a
trajectory's result does not depend on its lane, its block, the batch or the thread count."""
import importlib

import numba
import numpy as np
import pytest

from dlnmc.init import layer_dims
from dlnmc.kernels import block, gd
from dlnmc.problems import random_low_rank
from dlnmc.simulate import _block_kernel, thread_count

from . import reference as ref

OBS = {2: np.array([1, 2, 3]), 3: np.array([0, 2, 4, 5, 7]), 8: np.arange(0, 64, 3)}
"""Observed entries (flat, row-major sorted as ``simulate`` passes them)."""
CKPT = np.array([0, 1, 7, 50, 300, 999], dtype=np.int64)
LR = 0.05


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
    theta = theta.copy()
    keys = np.arange(1, runs + 1, dtype=np.uint64) * np.uint64(7919) if keys is None else keys
    out = dict(hist_loss=np.full((runs, ckpt.size), np.nan),
               hist_w=np.full((runs, ckpt.size, d * d), np.nan), w_out=np.empty((runs, d * d)),
               steps=np.empty(runs, np.int64), loss=np.empty(runs),
               status=np.empty(runs, np.int8))
    common = (max_steps, tol, ckpt, *out.values())
    if generic:
        dims = np.full(depth + 1, d, dtype=np.int64)
        off = np.arange(depth, dtype=np.int64) * d * d
        gd.gd_batch(theta, dims, off, obs, vals, lr, noise_std, keys, *common)
    else:
        block.block_kernel(d)(theta, obs, vals, lr, noise_std, keys, np.arange(nparam), nparam,
                              *common)
    out["theta"] = theta
    return out


def _assert_close(fast, slow, rtol=1e-10):
    """Same stop rule and status; every float within ``rtol`` of the trajectory's scale."""
    np.testing.assert_array_equal(fast["steps"], slow["steps"])
    np.testing.assert_array_equal(fast["status"], slow["status"])
    for name in ("theta", "w_out", "loss", "hist_loss", "hist_w"):
        a, b = fast[name].reshape(len(fast["steps"]), -1), slow[name].reshape(len(slow["steps"]), -1)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        scale = np.nanmax(np.abs(b), axis=1, keepdims=True) + 1e-300
        assert np.nanmax(np.abs(a - b) / scale) <= rtol, name


def _assert_same(a, b, rows_a=slice(None), rows_b=slice(None)):
    for name in a:
        np.testing.assert_array_equal(a[name][rows_a], b[name][rows_b], err_msg=name)


@pytest.mark.parametrize("d, depth, noise_std", [
    (d, depth, noise_std) for d in (2, 3) for depth in (1, 2, 5) for noise_std in (0.0, 1e-3)
] + [(8, 3, 0.0)])
def test_matches_generic_kernel(d, depth, noise_std):
    theta = _theta(d, depth, 21, seed=depth)
    full = _run(theta, d, noise_std=noise_std, tol=0.0)  # every trajectory: 1000 steps
    _assert_close(full, _run(theta, d, noise_std=noise_std, tol=0.0, generic=True))
    assert np.all(full["steps"] == 1000) and np.all(full["status"] == gd.MAX_STEPS)
    assert np.abs(full["theta"] - theta).max() > 1e-3
    stopping = _run(theta, d, noise_std=noise_std, tol=1e-6)
    _assert_close(stopping, _run(theta, d, noise_std=noise_std, tol=1e-6, generic=True))
    assert np.any(stopping["status"] == gd.CONVERGED)


@pytest.mark.parametrize("d", [2, 3])
def test_divergence_matches_generic_and_spares_other_lanes(d):
    depth = 3
    theta = _theta(d, depth, 2 * block._lanes(d), seed=5)
    wild = theta.copy()
    wild[3] *= 4.0  # runs away at this step size
    clean = _run(theta, d)
    fast = _run(wild, d)
    slow = _run(wild, d, generic=True)
    assert fast["status"][3] == gd.DIVERGED and fast["steps"][3] < 1000
    _assert_close(fast, slow)
    others = np.arange(len(theta)) != 3
    _assert_same(fast, clean, others, others)


@pytest.mark.parametrize("d", [2, 3])
def test_lane_block_batch_and_thread_invariance(d):
    depth = 4
    lanes = block._lanes(d)
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


def test_dispatch_and_compile_settings():
    before = numba.config.SLP_VECTORIZE
    assert _block_kernel(layer_dims((2, 2), 3)) is block.block_kernel(2)
    assert numba.config.SLP_VECTORIZE == before
    assert _block_kernel(layer_dims((2, 2), 3, widths=[2, 3])) is block.block_kernel(3)
    assert _block_kernel(layer_dims((2, 3), 2)) is block.block_kernel(3)
    assert _block_kernel(layer_dims((10, 2), 2)) is None  # padding would cost 200 / 24 entries
    assert _block_kernel(layer_dims((11, 11), 2)) is None
    assert len(block.block_kernel(2).signatures) == 1


@pytest.mark.parametrize("shape, depth, widths, temperature", [
    ((2, 3), 3, None, 0.0), ((3, 2), 4, [3, 2, 3], 1e-4), ((2, 2), 3, [2, 3], 1e-4),
    ((3, 3), 2, [2], 0.0)])
def test_padded_shapes_match_generic_kernel(monkeypatch, shape, depth, widths, temperature):
    """Rectangular problems and unequal widths run on the block kernel with every factor padded
    with zeros to d x d; the generic kernel on the same trajectories (noise included) gives the
    same numbers."""
    sim = importlib.import_module("dlnmc.simulate")  # the package exports the function

    problem = random_low_rank(*shape, 1, n_observed=shape[0] * shape[1] - 1, seed=3)
    dims = layer_dims(shape, depth, widths)
    assert _block_kernel(dims) is block.block_kernel(max(dims))
    kw = dict(init="balanced", init_scale=0.3, widths=widths, max_steps=400, tol=1e-9,
              temperature=temperature, checkpoints=[0, 5, 100], seed=4)
    fast = sim.simulate(problem, depth, 13, 0.05, **kw)
    monkeypatch.setattr(sim, "_block_kernel", lambda dims: None)
    slow = sim.simulate(problem, depth, 13, 0.05, **kw)
    for a, b in zip(fast.factors, slow.factors):
        np.testing.assert_array_equal(a, b)
    ref.assert_tables_identical(fast.final, slow.final)
    ref.assert_tables_identical(fast.history, slow.history)
    assert (fast.final["steps"] > 5).all()
