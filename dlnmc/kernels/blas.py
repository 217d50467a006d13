"""Batched gradient descent for large matrices: one BLAS call (``dgemm``) per matrix product,
trajectories in parallel over Numba threads.

Same mathematics, stop rule, checkpoints, noise stream and optimizers as the generic kernel
(:mod:`dlnmc.kernels.gd`); the products go to the BLAS that SciPy ships (Numba calls it for ``np.dot``), whose
blocked ``dgemm`` outruns hand-written loops once the factors are a few dozen entries wide.
BLAS is held to one thread per call (``threadpoolctl``) and the trajectories share the cores.  Sums are
in BLAS's order, so results agree with the generic kernel to rounding, not bitwise; a
``dgemm`` sums each entry in an order fixed by the matrix sizes alone, so a trajectory's
result is the same for any thread count and split of the runs.

One step (mathematics.md section 1.2): P_1 = W_1, P_p = W_p P_{p-1}; E = P_Omega(P_N - b),
l = |E|^2 / 2; A_N = E, dl/dW_p = A_p P_{p-1}^T, A_{p-1} = W_p^T A_p, dl/dW_1 = A_1; all
factors stepped from the old ones.
"""
import numba
import numpy as np
from numba import prange
from threadpoolctl import threadpool_limits

from dlnmc._jit import jit, pjit
from dlnmc.kernels.gd import outcome, step_size, update
from dlnmc.kernels.task import DIVERGENCE_FACTOR

NAME = "blas"

MIN_SIZE = 16
"""The BLAS kernel runs problems whose largest layer dimension is at least this (measured:
below it the generic kernel's register tiles win, see ``python -m dlnmc.bench engine``)."""


def fits(task) -> bool:
    """Any optimizer, any shapes with max(dims) >= :data:`MIN_SIZE`."""
    return max(task.dims) >= MIN_SIZE


@jit
def _trajectory(theta, dims, off, obs, vals, lr, rmsprop, eps, noise_std, key, max_steps, tol,
                ckpt, hist_loss, hist_w, w_out):
    """One trajectory; returns ``(steps, loss, status)`` (see ``gd.run_trajectory``)."""
    depth = dims.shape[0] - 1
    n0 = dims[0]
    factors = []
    grads = []
    prefix = []
    for p in range(depth):
        a, b = dims[p + 1], dims[p]
        factors.append(theta[off[p]:off[p] + a * b].reshape((a, b)))
        prefix.append(np.empty((a, n0)))
    grad = np.empty(theta.shape[0])
    for p in range(depth):
        a, b = dims[p + 1], dims[p]
        grads.append(grad[off[p]:off[p] + a * b].reshape((a, b)))
    rows = dims[depth]
    adj = np.zeros((rows, n0))
    back = [np.empty((dims[p + 1], n0)) for p in range(depth)]
    # transposes as C-contiguous copies: Numba's np.dot on a transposed view ran 40x slower
    prefix_t = [np.empty((n0, dims[p + 1])) for p in range(depth)]
    factor_t = [np.empty((dims[p], dims[p + 1])) for p in range(depth)]
    c = 0
    step = 0
    cap = np.inf
    moment, decay_power = 0.0, 1.0
    while True:
        prefix[0][:] = factors[0]
        for p in range(1, depth):
            np.dot(factors[p], prefix[p - 1], prefix[p])
        W = prefix[depth - 1].ravel()
        total = 0.0
        for k in range(W.shape[0]):
            total += abs(W[k])
        loss = 0.0
        flat = adj.ravel()
        for m in range(obs.shape[0]):
            e = W[obs[m]] - vals[m]
            flat[obs[m]] = e
            loss += e * e
        loss *= 0.5
        if c < ckpt.shape[0] and ckpt[c] == step:
            hist_loss[c] = loss
            hist_w[c, :] = W
            c += 1
        if step == 0:
            cap = DIVERGENCE_FACTOR * max(1.0, loss)
        status = outcome(step, loss, np.isfinite(total + loss), cap, tol, max_steps)
        if status >= 0:
            break
        A = adj
        for p in range(depth - 1, 0, -1):
            prefix_t[p - 1][:, :] = prefix[p - 1].T
            factor_t[p][:, :] = factors[p].T
            np.dot(A, prefix_t[p - 1], grads[p])  # dl/dW_p = A_p P_{p-1}^T
            np.dot(factor_t[p], A, back[p - 1])  # A_{p-1} = W_p^T A_p
            A = back[p - 1]
        grads[0][:] = A
        eta, moment, decay_power = step_size(lr, rmsprop, eps, grad, moment, decay_power)
        update(theta, grad, eta, noise_std, key, step)
        step += 1
    w_out[:] = prefix[depth - 1].ravel()
    return step, loss, status


@pjit
def _batch(theta, dims, off, obs, vals, lr, rmsprop, eps, noise_std, keys, max_steps, tol, ckpt,
           hist_loss, hist_w, w_out, steps, loss, status):
    for r in prange(theta.shape[0]):
        s, l, st = _trajectory(theta[r], dims, off, obs, vals, lr, rmsprop, eps, noise_std, keys[r],
                               max_steps, tol, ckpt, hist_loss[r], hist_w[r], w_out[r])
        steps[r] = s
        loss[r] = l
        status[r] = st


def run(task, batch) -> None:
    """Run every trajectory of ``batch``, one ``prange`` slot each and one trajectory at a
    time per thread, each BLAS call on one thread (BLAS's own threads, nested in Numba's, ran
    a 100 x 100 product 10-25x slower on a loaded 2-core machine)."""
    with threadpool_limits(limits=1, user_api="blas"), numba.parallel_chunksize(1):
        _batch(batch.theta, np.asarray(task.dims, dtype=np.int64), task.offsets, task.obs,
               task.values, task.lr, task.optimizer == "rmsprop", task.rmsprop_eps,
               task.noise_std, batch.keys, task.max_steps, task.tol, task.ckpt,
               batch.hist_loss, batch.hist_w, batch.w_end, batch.steps, batch.loss,
               batch.status)
