"""Fast batched gradient descent for small problems: every factor d x d (smaller shapes padded
with zeros, see :func:`padding`), any depth.  Same mathematics, stop rule, checkpoints and
noise stream as :func:`dlnmc.kernels.gd.run_trajectory`; only the memory layout and the shape
of the code differ.

Layout: trajectories run in blocks of ``L`` lanes held in one buffer per block, structure of
arrays with the lane index innermost.  Layer q (0-based, factor W_{q+1}) owns one record:
W_{q+1}, the prefix product P_{q+1} = W_{q+1} ... W_1, the adjoint A_{q+1} = dl/dP_{q+1}
(d*d*L doubles each, entry-major) and the lanes' step sizes (L doubles, 0 once a lane has
stopped, so that stopped lanes freeze).  A tail after the last record holds the targets, the
mask of observed entries and the per-lane loss, l1 norm and divergence cap.  Inside a layer
every access is a compile-time offset from the record start in unsigned arithmetic (no
wrap-around of negative indices), so LLVM can prove that loads and stores do not overlap and
its SLP vectorizer turns the straight-line per-lane code into SIMD across lanes.

One step (mathematics.md section 1.2): P_1 = W_1, P_p = W_p P_{p-1}; E = P_Omega(P_N - b),
l = |E|^2 / 2; A_N = E, A_{p-1} = W_p^T A_p, dl/dW_p = A_p P_{p-1}^T (A_1 for p = 1), all
factors stepped from the old ones.  The residual is mask * (P_N - b) over all d^2 entries and
the loss sums it row-major, which is ``gd``'s order for sorted observations; every other sum
runs in ``gd``'s order and nothing is contracted into FMAs, so both kernels give the same
numbers (up to the sign of exact zeros).  Lanes never
mix: a trajectory's result is bitwise the same in any lane, block and batch (the last block is
padded with copies of its first lane).
"""
import numpy as np
from numba import prange
from numba.extending import register_jitable

from dlnmc._jit import compile_vectorized, pjit
from dlnmc.kernels.gd import CONVERGED, DIVERGED, DIVERGENCE_FACTOR, MAX_STEPS
from dlnmc.kernels.rng import normal

SIZES = tuple(range(2, 11))
"""Matrix sizes d that have a block kernel (each compiled on first use)."""


def _lanes(d):
    """Lanes per block: two AVX2 vectors of doubles for d <= 3 (measured faster than one),
    one above (bigger records)."""
    return 8 if d <= 3 else 4


_U = np.uint64


def _specialised(decorate, D):
    """``decorate`` the closure under a name that carries D.  Numba names compiled code by
    qualified name, argument types and a per-process counter; without D in the name, the d = 2
    and d = 3 kernels compiled in different processes could load from the cache under one
    symbol and run each other's code."""
    def wrap(fn):
        fn.__name__ += f"_{D}x{D}"
        fn.__qualname__ += f"_{D}x{D}"
        return decorate(fn)
    return wrap


def _make_kernel(D, L):
    """Compile-time specialisation to d = D and L lanes (closure constants)."""
    DD = D * D
    inline = _specialised(register_jitable(error_model="numpy", inline="always"), D)
    # Helpers are plain closures compiled into the kernel: a jitted closure captured by the
    # kernel would put a fresh per-process id into the kernel's cache key (never a hit).
    # They are inlined in Numba's IR: left to LLVM they stay separate functions called through
    # a pointer once per step, which cost d = 3, N = 2 a third of its speed.
    W_, P_, A_, LR_ = 0, DD * L, 2 * DD * L, 3 * DD * L
    REC = 3 * DD * L + L
    TB_, MK_, LOSS_, TOT_, CAP_ = 0, DD * L, 2 * DD * L, 2 * DD * L + L, 2 * DD * L + 2 * L
    TAIL = 2 * DD * L + 3 * L

    @inline
    def forward(buf, depth):
        """P_1, ..., P_N; then A_N = E, the loss and the l1 norm of W, lane by lane."""
        for x in range(DD * L):
            buf[_U(P_ + x)] = buf[_U(W_ + x)]
        for q in range(1, depth):
            r = _U(q) * _U(REC)
            s = r - _U(REC)
            for i in range(D):
                for j in range(D):
                    for l in range(L):
                        acc = buf[r + _U(W_ + i * D * L + l)] * buf[s + _U(P_ + j * L + l)]
                        for k in range(1, D):
                            acc += (buf[r + _U(W_ + (i * D + k) * L + l)]
                                    * buf[s + _U(P_ + (k * D + j) * L + l)])
                        buf[r + _U(P_ + (i * D + j) * L + l)] = acc
        r = _U(depth - 1) * _U(REC)
        t = r + _U(REC)
        for l in range(L):
            total = 0.0
            loss = 0.0
            for e in range(DD):
                w = buf[r + _U(P_ + e * L + l)]
                res = buf[t + _U(MK_ + e * L + l)] * (w - buf[t + _U(TB_ + e * L + l)])
                buf[r + _U(A_ + e * L + l)] = res
                total += abs(w)
                loss += res * res
            buf[t + _U(LOSS_ + l)] = 0.5 * loss
            buf[t + _U(TOT_ + l)] = total

    @inline
    def stopping(buf, depth, tol):
        """Number of running lanes whose loss, l1 norm or cap says stop."""
        r = _U(depth - 1) * _U(REC)
        t = r + _U(REC)
        n = 0
        for l in range(L):
            loss = buf[t + _U(LOSS_ + l)]
            go = ((buf[t + _U(TOT_ + l)] + loss < np.inf) & (loss > tol)
                  & (loss <= buf[t + _U(CAP_ + l)]))
            n += (buf[r + _U(LR_ + l)] != 0.0) & ~go
        return n

    @inline
    def backward(buf, depth):
        """Backpropagate A_N and step every factor by its lane's step size."""
        for q in range(depth - 1, 0, -1):
            r = _U(q) * _U(REC)
            s = r - _U(REC)
            for k in range(D):
                for j in range(D):
                    for l in range(L):
                        acc = buf[r + _U(W_ + k * L + l)] * buf[r + _U(A_ + j * L + l)]
                        for i in range(1, D):
                            acc += (buf[r + _U(W_ + (i * D + k) * L + l)]
                                    * buf[r + _U(A_ + (i * D + j) * L + l)])
                        buf[s + _U(A_ + (k * D + j) * L + l)] = acc
            for i in range(D):
                for k in range(D):
                    for l in range(L):
                        g = buf[r + _U(A_ + i * D * L + l)] * buf[s + _U(P_ + k * D * L + l)]
                        for j in range(1, D):
                            g += (buf[r + _U(A_ + (i * D + j) * L + l)]
                                  * buf[s + _U(P_ + (k * D + j) * L + l)])
                        w = buf[r + _U(W_ + (i * D + k) * L + l)]
                        buf[r + _U(W_ + (i * D + k) * L + l)] = w - buf[r + _U(LR_ + l)] * g
        for e in range(DD):
            for l in range(L):
                w = buf[_U(W_ + e * L + l)]
                buf[_U(W_ + e * L + l)] = w - buf[_U(LR_ + l)] * buf[_U(A_ + e * L + l)]

    @_specialised(register_jitable(error_model="numpy"), D)
    def add_noise(buf, depth, noise_std, keys, run, slots, base):
        """Noisy GD: the generic kernel's noise on every running lane's real entries.  Out of
        line: inlined, it slowed the noise-free steps by about a tenth (d = 3, N = 2)."""
        for l in range(L):
            if buf[LR_ + l] != 0.0:
                for q in range(depth):
                    for e in range(DD):
                        k = slots[q * DD + e]
                        if k >= 0:
                            buf[q * REC + W_ + e * L + l] += noise_std * normal(
                                keys[run[l]], base + np.uint64(k))

    @_specialised(pjit, D)
    def kernel(theta, obs, vals, lr, noise_std, keys, slots, nparam, max_steps, tol, ckpt,
               hist_loss, hist_w, w_out, steps, loss, status):
        """Blocks of L trajectories in parallel; each block steps until all its lanes stop."""
        runs = theta.shape[0]
        depth = theta.shape[1] // DD
        last = (depth - 1) * REC
        t = last + REC
        for b in prange((runs + L - 1) // L):
            buf = np.zeros(depth * REC + TAIL)
            run = np.empty(L, dtype=np.int64)
            for l in range(L):
                run[l] = b * L + l if b * L + l < runs else b * L
                for q in range(depth):
                    for e in range(DD):
                        buf[q * REC + W_ + e * L + l] = theta[run[l], q * DD + e]
                    buf[q * REC + LR_ + l] = lr
                for m in range(obs.shape[0]):
                    buf[t + TB_ + obs[m] * L + l] = vals[m]
                    buf[t + MK_ + obs[m] * L + l] = 1.0
            active = L
            c = 0
            step = 0
            while True:
                forward(buf, depth)
                at_ckpt = c < ckpt.shape[0] and ckpt[c] == step
                if step == 0 or at_ckpt or step >= max_steps or stopping(buf, depth, tol) > 0:
                    for l in range(L):
                        s = buf[t + LOSS_ + l]
                        if step == 0:
                            buf[t + CAP_ + l] = DIVERGENCE_FACTOR * max(1.0, s)
                        if buf[last + LR_ + l] == 0.0:
                            continue
                        r = run[l]
                        own = r == b * L + l
                        if own and at_ckpt:
                            hist_loss[r, c] = s
                            for e in range(DD):
                                hist_w[r, c, e] = buf[last + P_ + e * L + l]
                        if not np.isfinite(buf[t + TOT_ + l] + s) or s > buf[t + CAP_ + l]:
                            st = DIVERGED
                        elif s <= tol:
                            st = CONVERGED
                        elif step >= max_steps:
                            st = MAX_STEPS
                        else:
                            continue
                        active -= 1
                        for q in range(depth):
                            buf[q * REC + LR_ + l] = 0.0
                        if own:
                            steps[r] = step
                            loss[r] = s
                            status[r] = st
                            for e in range(DD):
                                w_out[r, e] = buf[last + P_ + e * L + l]
                            for q in range(depth):
                                for e in range(DD):
                                    theta[r, q * DD + e] = buf[q * REC + W_ + e * L + l]
                    c += at_ckpt
                    if active == 0:
                        break
                backward(buf, depth)
                if noise_std > 0.0:
                    add_noise(buf, depth, noise_std, keys, run, slots,
                              np.uint64(step) * np.uint64(nparam))
                step += 1

    return kernel


_SIGNATURE = ("void(f8[:, ::1], i8[::1], f8[::1], f8, f8, u8[::1], i8[::1], i8, i8, f8, i8[::1],"
              " f8[:, ::1], f8[:, :, ::1], f8[:, ::1], i8[::1], f8[::1], i1[::1])")
_KERNELS = {}


def block_kernel(d):
    """The block kernel for d x d problems, compiled (or loaded from cache) on first use with
    LLVM's SLP vectorizer switched on, and closed to further signatures.

    Call it as ``kernel(theta, obs, vals, lr, noise_std, keys, slots, nparam, max_steps, tol,
    ckpt, hist_loss, hist_w, w_out, steps, loss, status)``: the arguments of
    :func:`dlnmc.kernels.gd.gd_batch` less ``dims`` and ``off``, for factors padded with zeros
    to d x d (see :func:`padding`).  ``theta`` has N d^2 columns, ``obs`` indexes the d x d
    matrix and must be sorted (as ``simulate`` passes it) for the loss to be summed in ``gd``'s
    order; ``slots`` (N d^2) gives each padded entry's index among the ``nparam`` entries of
    the unpadded factors, -1 for padding, which draws no noise: the noise stream is ``gd``'s.
    """
    if d not in _KERNELS:
        _KERNELS[d] = compile_vectorized(_make_kernel(d, _lanes(d)), _SIGNATURE)
    return _KERNELS[d]


def padding(dims) -> np.ndarray:
    """Where the entries of factors with layer dimensions ``dims`` (n_0, ..., n_N) go when each
    factor is padded with zeros to d x d, d = max(dims): for every padded entry (layer-major,
    then row-major) its index in the unpadded parameter vector (the layers' row-major entries,
    W_1 first), -1 for padding.

    Zero padding is invariant under GD: the gradient A_p P_(p-1)^T of W_p vanishes exactly on
    a padded row, which meets a zero column of W_(p+1) (for p = N, an unobserved and hence zero
    residual row), and on a padded column, which meets a zero row of W_(p-1) (for p = 1, a zero
    residual column).  The padded zeros add exact zeros after the real terms of every sum, so
    the real entries get the unpadded kernel's numbers.
    """
    d = max(dims)
    slots = np.full((len(dims) - 1, d, d), -1, dtype=np.int64)
    start = 0
    for p, (n, m) in enumerate(zip(dims[1:], dims[:-1])):
        slots[p, :n, :m] = start + np.arange(n * m).reshape(n, m)
        start += n * m
    return slots.ravel()
