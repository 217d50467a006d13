"""Generic batched gradient descent on a deep matrix factorization, one trajectory per
``prange`` slot, any shapes, widths and optimizer (the registry's fallback, see
:mod:`dlnmc.kernels`).

State layout: ``theta[r]`` holds trajectory r's factors W_1, ..., W_N flattened row-major one
after another (factor p, 1-based, starts at ``off[p - 1]`` and has shape
``(dims[p], dims[p - 1])``).  Observed entries come as flat indices ``obs`` into the
``rows x cols`` product and values ``vals``.

Every product is written as rows of sums of scaled source rows (:func:`product_rows`): the
prefix products and adjoints directly, the gradients against a transposed copy of the prefix.
Tiles of two rows by 8 output entries are summed in registers, each entry over its
terms in ascending index order from 0.0, and nothing is contracted into FMAs (the block kernel,
dlnmc/kernels/block.py, uses FMAs and agrees to rounding).  Index arithmetic is unsigned
(Numba then adds no wrap-around fix-ups of negative indices) and the kernel is compiled with
LLVM's SLP vectorizer on, which turns each tile's rows into SIMD registers.

One step (mathematics.md section 1.2): forward prefix products P_p = W_p ... W_1, residual
E = P_Omega(W - b), loss l = |E|^2 / 2, then backpropagation A_N = E,
dl/dW_p = A_p P_{p-1}^T, A_{p-1} = W_p^T A_p, every factor updated from the old factors by
the step of the optimizer (plain GD, or the global RMSprop of mathematics.md section 1.6,
whose step needs every factor's gradient first).  :func:`step_size` and :func:`update` are
shared with the BLAS kernel.
"""
import numba
import numpy as np
from numba import prange

from dlnmc._jit import compile_vectorized, jit, pjit
from dlnmc.kernels.rng import normal
from dlnmc.kernels.task import CONVERGED, DIVERGED, DIVERGENCE_FACTOR, MAX_STEPS, RMSPROP_DECAY


_U = np.uint64
_1, _2, _3, _4, _5, _6, _7, _8 = (_U(k) for k in range(1, 9))


@jit
def _tile(out, o, p, coef, c, d, col_step, src, s, inner, cols):
    """``out[o + j] = sum_k coef[c + k col_step] src[s + k cols + j]`` for j < 8, and the
    same for ``out[p + j]`` with coefficients from ``d``: each sum from 0.0 in ascending k,
    all sixteen in registers (four SIMD vectors, two rows sharing the loads of ``src``)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0.0
    for _ in range(inner):
        x = coef[c]
        y = coef[d]
        s0, s1, s2, s3 = src[s], src[s + _1], src[s + _2], src[s + _3]
        s4, s5, s6, s7 = src[s + _4], src[s + _5], src[s + _6], src[s + _7]
        a0 += x * s0
        a1 += x * s1
        a2 += x * s2
        a3 += x * s3
        a4 += x * s4
        a5 += x * s5
        a6 += x * s6
        a7 += x * s7
        b0 += y * s0
        b1 += y * s1
        b2 += y * s2
        b3 += y * s3
        b4 += y * s4
        b5 += y * s5
        b6 += y * s6
        b7 += y * s7
        c += col_step
        d += col_step
        s += cols
    out[o], out[o + _1], out[o + _2], out[o + _3] = a0, a1, a2, a3
    out[o + _4], out[o + _5], out[o + _6], out[o + _7] = a4, a5, a6, a7
    out[p], out[p + _1], out[p + _2], out[p + _3] = b0, b1, b2, b3
    out[p + _4], out[p + _5], out[p + _6], out[p + _7] = b4, b5, b6, b7


@jit
def product_rows(out, o, coef, c, row_step, col_step, src, s, rows, inner, cols):
    """``out[o + r cols + j] = sum_k coef[c + r row_step + k col_step] src[s + k cols + j]``
    for r < ``rows``, j < ``cols``, k < ``inner``; every sum starts from 0.0 and adds its terms
    in ascending k.  All offsets and sizes are uint64; ``out`` must not overlap the inputs.

    Register tiles of two rows by 8 columns (:func:`_tile`; rows of fewer than 8 columns go
    one column at a time); a tile that would run past the last column is moved back to end
    there, and an odd last row pairs with itself, recomputing a few entries to the same
    values.
    """
    for r in range(_U(0), rows, _2):
        q = min(r + _1, rows - _1)
        cr, cq = c + r * row_step, c + q * row_step
        orow, oq = o + r * cols, o + q * cols
        if cols < _8:
            for j in range(cols):
                a0 = b0 = 0.0
                ck, dk = cr, cq
                sk = s + j
                for _ in range(inner):
                    a0 += coef[ck] * src[sk]
                    b0 += coef[dk] * src[sk]
                    ck += col_step
                    dk += col_step
                    sk += cols
                out[orow + j] = a0
                out[oq + j] = b0
            continue
        for j in range(_U(0), cols, _8):
            j = min(j, cols - _8)
            _tile(out, orow + j, oq + j, coef, cr, cq, col_step, src, s + j, inner, cols)


@jit
def forward_loss(theta, dims, off, obs, vals, prefix, resid):
    """Fill ``prefix`` with P_1, ..., P_N and ``resid`` with P_Omega(W - b); return
    ``(loss, finite)`` where ``finite`` says every entry of W is finite."""
    depth = dims.shape[0] - 1
    n0 = _U(dims[0])
    for k in range(_U(dims[1]) * n0):
        prefix[k] = theta[k]
    src = _U(0)
    for p in range(2, depth + 1):
        a, b = _U(dims[p]), _U(dims[p - 1])
        dst = src + b * n0
        product_rows(prefix, dst, theta, _U(off[p - 1]), b, _1, prefix, src, a, b, n0)
        src = dst
    size = _U(dims[depth]) * n0
    total = 0.0
    for k in range(size):
        resid[k] = 0.0
        total += abs(prefix[src + k])
    loss = 0.0
    for m in range(obs.shape[0]):
        e = prefix[src + _U(obs[m])] - vals[m]
        resid[obs[m]] = e
        loss += e * e
    loss *= 0.5
    return loss, np.isfinite(total + loss)


@jit
def backward(theta, dims, off, prefix, resid, adj, pt, grad):
    """Backpropagate ``resid`` into ``grad`` (the layout of ``theta``): dl/dW_p for every p.

    Scratch: ``adj`` of size 2 * max(dims) * dims[0], ``pt`` (transposed prefix) of size
    max(dims) * dims[0].
    """
    depth = dims.shape[0] - 1
    n0 = _U(dims[0])
    half = _U(adj.shape[0] // 2)
    cur = _U(0)
    for k in range(_U(dims[depth]) * n0):
        adj[k] = resid[k]
    # prefix of layer p - 1 (1-based) starts at pstart; walk it backwards
    pstart = _U(0)
    for p in range(1, depth - 1):
        pstart += _U(dims[p]) * n0
    for p in range(depth, 1, -1):
        a, b, w = _U(dims[p]), _U(dims[p - 1]), _U(off[p - 1])
        nxt = half - cur
        for k in range(b):
            for j in range(n0):
                pt[j * b + k] = prefix[pstart + k * n0 + j]
        product_rows(adj, nxt, theta, w, _1, b, adj, cur, b, a, n0)  # A_{p-1} = W_p^T A_p
        product_rows(grad, w, adj, cur, n0, _1, pt, _U(0), a, n0, b)  # A_p P_{p-1}^T
        if p > 2:
            pstart -= _U(dims[p - 2]) * n0
        cur = nxt
    for e in range(_U(dims[1]) * n0):  # dl/dW_1 = A_1
        grad[e] = adj[cur + e]


@jit
def step_size(lr, rmsprop, eps, grad, moment, decay_power):
    """The step of this iteration and the updated (moment, decay_power): ``lr`` for GD; for
    RMSprop ``lr / (sqrt(v_hat) + eps)``, v the exponential average of |grad|^2 and v_hat its
    bias correction (mathematics.md section 1.6)."""
    if not rmsprop:
        return lr, moment, decay_power
    square = 0.0
    for k in range(grad.shape[0]):
        square += grad[k] * grad[k]
    moment = RMSPROP_DECAY * moment + (1.0 - RMSPROP_DECAY) * square
    decay_power *= RMSPROP_DECAY
    return lr / (np.sqrt(moment / (1.0 - decay_power)) + eps), moment, decay_power


@jit
def update(theta, grad, step, noise_std, key, n):
    """theta -= step * grad, then the noise of iteration ``n``: parameter k gets
    ``noise_std * normal(key, n * P + k)``, P the number of parameters."""
    for k in range(theta.shape[0]):
        theta[k] -= step * grad[k]
    if noise_std > 0.0:
        base = _U(n) * _U(theta.shape[0])
        for k in range(_U(theta.shape[0])):
            theta[k] += noise_std * normal(key, base + k)


@jit
def outcome(step, loss, finite, cap, tol, max_steps):
    """How a trajectory stops at this step (mathematics.md section 6.2): ``DIVERGED`` (W not
    finite or loss above ``cap``), ``CONVERGED`` (loss <= tol), ``MAX_STEPS``; -1: it goes on."""
    if not finite or loss > cap:
        return DIVERGED
    if loss <= tol:
        return CONVERGED
    if step >= max_steps:
        return MAX_STEPS
    return -1


@jit
def run_trajectory(theta, dims, off, obs, vals, lr, rmsprop, eps, noise_std, key, max_steps, tol,
                   ckpt, hist_loss, hist_w, w_out):
    """Run one trajectory to convergence (loss <= tol), ``max_steps`` or divergence.

    Records loss and W at the steps listed in ``ckpt`` (sorted) and W at the end in ``w_out``.
    Returns ``(steps, loss, status)``.
    """
    depth = dims.shape[0] - 1
    n0 = dims[0]
    width = n0
    plen = 0
    for p in range(1, depth + 1):
        width = max(width, dims[p])
        plen += dims[p] * n0
    prefix = np.empty(plen)
    size = dims[depth] * n0
    resid = np.empty(size)
    adj = np.empty(2 * width * n0)
    pt = np.empty(width * n0)
    grad = np.empty(theta.shape[0])
    wstart = plen - size
    c = 0
    step = 0
    cap = np.inf
    moment, decay_power = 0.0, 1.0
    while True:
        loss, finite = forward_loss(theta, dims, off, obs, vals, prefix, resid)
        if c < ckpt.shape[0] and ckpt[c] == step:
            hist_loss[c] = loss
            for k in range(size):
                hist_w[c, k] = prefix[wstart + k]
            c += 1
        if step == 0:
            cap = DIVERGENCE_FACTOR * max(1.0, loss)
        status = outcome(step, loss, finite, cap, tol, max_steps)
        if status >= 0:
            break
        backward(theta, dims, off, prefix, resid, adj, pt, grad)
        eta, moment, decay_power = step_size(lr, rmsprop, eps, grad, moment, decay_power)
        update(theta, grad, eta, noise_std, key, step)
        step += 1
    for k in range(size):
        w_out[k] = prefix[wstart + k]
    return step, loss, status


@pjit
def _gd_batch(theta, dims, off, obs, vals, lr, rmsprop, eps, noise_std, keys, max_steps, tol, ckpt,
              hist_loss, hist_w, w_out, steps, loss, status):
    for r in prange(theta.shape[0]):
        s, l, st = run_trajectory(theta[r], dims, off, obs, vals, lr, rmsprop, eps, noise_std,
                                  keys[r],
                                  max_steps, tol, ckpt, hist_loss[r], hist_w[r], w_out[r])
        steps[r] = s
        loss[r] = l
        status[r] = st


_SIGNATURE = ("void(f8[:, ::1], i8[::1], i8[::1], i8[::1], f8[::1], f8, b1, f8, f8, u8[::1],"
              " i8, f8, i8[::1], f8[:, ::1], f8[:, :, ::1], f8[:, ::1], i8[::1], f8[::1], i1[::1])")

NAME = "generic"


def fits(task) -> bool:
    """Any shapes, widths and optimizer."""
    return True


def run(task, batch) -> None:
    """Run every trajectory of ``batch`` in parallel, one ``prange`` slot each (compiled on
    first use, :func:`dlnmc._jit.compile_vectorized`); threads take four trajectories at a
    time as they free up (lengths vary, other jobs may hold a core)."""
    if not _gd_batch.signatures:
        compile_vectorized(_gd_batch, _SIGNATURE)
    with numba.parallel_chunksize(4):
        _gd_batch(batch.theta, np.asarray(task.dims, dtype=np.int64), task.offsets, task.obs,
                  task.values, task.lr, task.optimizer == "rmsprop", task.rmsprop_eps,
                  task.noise_std, batch.keys, task.max_steps, task.tol, task.ckpt,
                  batch.hist_loss, batch.hist_w, batch.w_end, batch.steps, batch.loss,
                  batch.status)
