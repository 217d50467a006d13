"""Generic batched gradient descent on a deep matrix factorization, one trajectory per
``prange`` slot, any shapes and widths.

State layout: ``theta[r]`` holds trajectory r's factors W_1, ..., W_N flattened row-major one
after another (factor p, 1-based, starts at ``off[p - 1]`` and has shape
``(dims[p], dims[p - 1])``).  Observed entries come as flat indices ``obs`` into the
``rows x cols`` product and values ``vals``.

Products accumulate output rows with the inner index innermost (contiguous loads); each entry
still sums its terms in index order, so the block kernel (dlnmc/kernels/block.py) gives
bitwise the same numbers.

One step (REFERENCE.md section 1): forward prefix products P_p = W_p ... W_1, residual
E = P_Omega(W - b), loss l = |E|^2 / 2, then backpropagation A_N = E,
dl/dW_p = A_p P_{p-1}^T, A_{p-1} = W_p^T A_p, every factor updated from the old factors.
"""
import numpy as np
from numba import prange

from dlnmc._jit import jit, pjit
from dlnmc.kernels.rng import normal

CONVERGED, MAX_STEPS, DIVERGED = 0, 1, 2
DIVERGENCE_FACTOR = 1e12
"""A trajectory whose loss exceeds this factor times max(1, initial loss) has diverged."""


@jit
def forward_loss(theta, dims, off, obs, vals, prefix, resid):
    """Fill ``prefix`` with P_1, ..., P_N and ``resid`` with P_Omega(W - b); return
    ``(loss, finite)`` where ``finite`` says every entry of W is finite."""
    depth = dims.shape[0] - 1
    n0 = dims[0]
    for k in range(dims[1] * n0):
        prefix[k] = theta[k]
    src = 0
    for p in range(2, depth + 1):
        a, b, w = dims[p], dims[p - 1], off[p - 1]
        dst = src + b * n0
        for i in range(a):
            row = dst + i * n0
            for j in range(n0):
                prefix[row + j] = 0.0
            for k in range(b):
                x = theta[w + i * b + k]
                for j in range(n0):
                    prefix[row + j] += x * prefix[src + k * n0 + j]
        src = dst
    size = dims[depth] * n0
    total = 0.0
    for k in range(size):
        resid[k] = 0.0
        total += abs(prefix[src + k])
    loss = 0.0
    for m in range(obs.shape[0]):
        e = prefix[src + obs[m]] - vals[m]
        resid[obs[m]] = e
        loss += e * e
    loss *= 0.5
    return loss, np.isfinite(total + loss)


@jit
def backward_step(theta, dims, off, prefix, resid, adj, lr, noise_std, key, step):
    """Backpropagate ``resid`` and take one (noisy) GD step on every factor in place.

    ``adj`` is scratch of size 2 * max(dims) * dims[0].  The noise added to parameter k at
    step s is ``noise_std * normal(key, s * P + k)`` with P the number of parameters.
    """
    depth = dims.shape[0] - 1
    n0 = dims[0]
    half = adj.shape[0] // 2
    cur = 0
    for k in range(dims[depth] * n0):
        adj[k] = resid[k]
    # prefix of layer p - 1 (1-based) starts at pstart; walk it backwards
    pstart = 0
    for p in range(1, depth - 1):
        pstart += dims[p] * n0
    nparam = np.uint64(theta.shape[0])
    for p in range(depth, 0, -1):
        a, b, w = dims[p], dims[p - 1], off[p - 1]
        nxt = half - cur
        if p > 1:
            for k in range(b):
                row = nxt + k * n0
                for j in range(n0):
                    adj[row + j] = 0.0
                for i in range(a):
                    x = theta[w + i * b + k]
                    for j in range(n0):
                        adj[row + j] += x * adj[cur + i * n0 + j]
        for i in range(a):
            for k in range(b):
                if p > 1:
                    g = 0.0
                    for j in range(n0):
                        g += adj[cur + i * n0 + j] * prefix[pstart + k * n0 + j]
                else:
                    g = adj[cur + i * n0 + k]
                idx = w + i * b + k
                theta[idx] -= lr * g
                if noise_std > 0.0:
                    theta[idx] += noise_std * normal(key, np.uint64(step) * nparam + np.uint64(idx))
        if p > 2:
            pstart -= dims[p - 2] * n0
        cur = nxt


@jit
def run_trajectory(theta, dims, off, obs, vals, lr, noise_std, key, max_steps, tol, ckpt,
                   hist_loss, hist_w, w_out):
    """Run one trajectory to convergence (loss <= tol), ``max_steps`` or divergence.

    Records loss and W at the steps listed in ``ckpt`` (sorted) and W at the end in ``w_out``.
    Returns ``(steps, loss, status)``.
    """
    depth = dims.shape[0] - 1
    n0 = dims[0]
    width = 0
    plen = 0
    for p in range(1, depth + 1):
        width = max(width, dims[p])
        plen += dims[p] * n0
    prefix = np.empty(plen)
    size = dims[depth] * n0
    resid = np.empty(size)
    adj = np.empty(2 * max(width, n0) * n0)
    wstart = plen - size
    c = 0
    step = 0
    cap = np.inf
    while True:
        loss, finite = forward_loss(theta, dims, off, obs, vals, prefix, resid)
        if c < ckpt.shape[0] and ckpt[c] == step:
            hist_loss[c] = loss
            for k in range(size):
                hist_w[c, k] = prefix[wstart + k]
            c += 1
        if step == 0:
            cap = DIVERGENCE_FACTOR * max(1.0, loss)
        if not finite or loss > cap:
            status = DIVERGED
            break
        if loss <= tol:
            status = CONVERGED
            break
        if step >= max_steps:
            status = MAX_STEPS
            break
        backward_step(theta, dims, off, prefix, resid, adj, lr, noise_std, key, step)
        step += 1
    for k in range(size):
        w_out[k] = prefix[wstart + k]
    return step, loss, status


@pjit
def gd_batch(theta, dims, off, obs, vals, lr, noise_std, keys, max_steps, tol, ckpt,
             hist_loss, hist_w, w_out, steps, loss, status):
    """Run every trajectory of ``theta`` (runs x parameters) in parallel; one output slot each."""
    for r in prange(theta.shape[0]):
        s, l, st = run_trajectory(theta[r], dims, off, obs, vals, lr, noise_std, keys[r],
                                  max_steps, tol, ckpt, hist_loss[r], hist_w[r], w_out[r])
        steps[r] = s
        loss[r] = l
        status[r] = st
