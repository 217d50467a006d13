"""Step-only yardstick: plain batched GD steps on factors padded to d x d, nothing else.

What the hardware gives for the block kernel's arithmetic: the same layout (blocks of
``block.LANES`` trajectories, lanes innermost, one SIMD value per matrix entry, written
with the block kernel's vector intrinsics), the same products and fused multiply-adds, and for
d <= 3 the running product and adjoint in registers, but no loss, no stop test, no
checkpoints, no noise and no per-trajectory outputs: a fixed number of steps for every
trajectory.  :mod:`dlnmc.bench.engine` divides the engine's rate by this one to show what
the bookkeeping and the public call cost.

Compiled lazily per d with :data:`dlnmc._jit.pjit` (no fastmath: the fused multiply-adds are
explicit), the generated source under this file's name so that Numba caches it.
"""
import numpy as np
from numba import prange

from dlnmc._jit import pjit
from dlnmc.kernels import block
from dlnmc.kernels.block import vfma, vload, vmul, vsplat, vstore, vsub

__all__ = ["run"]

_UNROLL = 3
"""Largest d with every matrix entry a named local (in registers); loops over entries above."""


def _sum(pairs):
    """Source of the sum of products ``pairs`` in order, each after the first by a fused
    multiply-add."""
    out = "vmul({}, {})".format(*pairs[0])
    for x, y in pairs[1:]:
        out = f"vfma({x}, {y}, {out})"
    return out


def _source(d):
    """Python source of ``steps_{d}x{d}(theta, mask, goal, lr, steps)``: ``steps`` GD steps
    of every row of ``theta`` (runs x depth d^2, factors W_1 first, row-major), in place."""
    L, DD = block.LANES, d * d
    rng = range(d)

    def ix(i, j):
        return i * d + j

    head = [
        f"def steps_{d}x{d}(theta, mask, goal, lr, steps):",
        f"    depth = theta.shape[1] // {DD}",
        f"    for b in prange((theta.shape[0] + {L - 1}) // {L}):",
        f"        w = np.empty((depth, {DD * L}))",
        f"        pre = np.empty((depth, {DD * L}))",
        f"        adj = np.empty((2, {DD * L}))",
        f"        for l in range({L}):",
        f"            r = min(b * {L} + l, theta.shape[0] - 1)",
        "            for q in range(depth):",
        f"                for e in range({DD}):",
        f"                    w[q, e * {L} + l] = theta[r, q * {DD} + e]",
        f"        rate = vsplat(-lr, {L})",
        f"        ms = np.empty({DD * L})",
        f"        ts = np.empty({DD * L})",
        f"        for e in range({DD}):",
        f"            vstore(ms, e * {L}, vsplat(mask[e], {L}))",
        f"            vstore(ts, e * {L}, vsplat(goal[e], {L}))",
        "        for _ in range(steps):",
    ]
    if d <= _UNROLL:
        E = range(DD)
        body = ["x = w[0]", *(f"p{e} = vload(x, {e * L}, {L})" for e in E),
                "for q in range(1, depth):",
                "    x = w[q]", "    y = pre[q - 1]",
                *(f"    vstore(y, {e * L}, p{e})" for e in E),
                *(f"    a{e} = vload(x, {e * L}, {L})" for e in E),
                *(f"    n{ix(i, j)} = " + _sum([(f"a{ix(i, k)}", f"p{ix(k, j)}") for k in rng])
                  for i in rng for j in rng),
                *(f"    p{e} = n{e}" for e in E),
                *(f"g{e} = vmul(vload(ms, {e * L}, {L}), vsub(p{e}, vload(ts, {e * L}, {L})))"
                  for e in E),
                "for q in range(depth - 1, 0, -1):",
                "    x = w[q]", "    y = pre[q - 1]",
                *(f"    a{e} = vload(x, {e * L}, {L})" for e in E),
                *(f"    n{ix(k, j)} = " + _sum([(f"a{ix(i, k)}", f"g{ix(i, j)}") for i in rng])
                  for k in rng for j in rng),
                *(f"    vstore(x, {ix(i, k) * L}, vfma(rate, "
                  + _sum([(f"g{ix(i, j)}", f"vload(y, {ix(k, j) * L}, {L})") for j in rng])
                  + f", a{ix(i, k)}))" for i in rng for k in rng),
                *(f"    g{e} = n{e}" for e in E),
                "x = w[0]",
                *(f"vstore(x, {e * L}, vfma(rate, g{e}, vload(x, {e * L}, {L})))" for e in E)]
    else:
        def product(out, a, b, a_at, b_at):
            """Loops: ``out[i, j] = sum_k a[a_at(i, k)] b[b_at(k, j)]``."""
            return [f"for i in range({d}):", f"    for j in range({d}):",
                    f"        acc = vmul(vload({a}, ({a_at('i', '0')}) * {L}, {L}), "
                    f"vload({b}, ({b_at('0', 'j')}) * {L}, {L}))",
                    f"        for k in range(1, {d}):",
                    f"            acc = vfma(vload({a}, ({a_at('i', 'k')}) * {L}, {L}), "
                    f"vload({b}, ({b_at('k', 'j')}) * {L}, {L}), acc)",
                    f"        {out}"]

        def row_major(i, j):
            return f"{i} * {d} + {j}"

        def transposed(i, j):
            return f"{j} * {d} + {i}"

        body = ["pre[0, :] = w[0]", "for q in range(1, depth):",
                *("    " + s for s in product(
                    f"vstore(pre[q], (i * {d} + j) * {L}, acc)", "w[q]", "pre[q - 1]",
                    row_major, row_major)),
                "g = adj[0]", f"for e in range({DD}):",
                f"    vstore(g, e * {L}, vmul(vload(ms, e * {L}, {L}), vsub(vload(pre[depth - 1],"
                f" e * {L}, {L}), vload(ts, e * {L}, {L}))))",
                "for q in range(depth - 1, 0, -1):",
                "    x = w[q]", "    h = adj[(depth - q) % 2]",
                *("    " + s for s in product(
                    f"vstore(h, (i * {d} + j) * {L}, acc)", "x", "g", transposed, row_major)),
                *("    " + s for s in product(
                    f"vstore(x, (i * {d} + j) * {L}, vfma(rate, acc, vload(x, (i * {d} + j) * "
                    f"{L}, {L})))", "g", "pre[q - 1]", row_major, transposed)),
                "    g = h",
                "x = w[0]", f"for e in range({DD}):",
                f"    vstore(x, e * {L}, vfma(rate, vload(g, e * {L}, {L}), vload(x, e * {L},"
                f" {L})))"]
    tail = [f"        for l in range({L}):",
            f"            r = b * {L} + l",
            "            if r < theta.shape[0]:",
            "                for q in range(depth):",
            f"                    for e in range({DD}):",
            f"                        theta[r, q * {DD} + e] = w[q, e * {L} + l]"]
    return "\n".join(head + ["            " + s for s in body] + tail) + "\n"


_NAMESPACE = dict(np=np, prange=prange, vfma=vfma, vload=vload, vmul=vmul, vsplat=vsplat,
                  vstore=vstore, vsub=vsub)
_KERNELS = {}


def _kernel(d):
    if d not in _KERNELS:
        namespace = dict(_NAMESPACE, __name__=__name__)
        exec(compile(_source(d), __file__, "exec"), namespace)
        kernel = pjit(namespace[f"steps_{d}x{d}"])
        kernel.compile("void(f8[:, ::1], f8[::1], f8[::1], f8, i8)")
        kernel.disable_compile()
        _KERNELS[d] = kernel
    return _KERNELS[d]


def run(problem, factors, lr, steps):
    """``steps`` plain GD steps of every trajectory, on all Numba threads.

    Parameters
    ----------
    problem : CompletionProblem
    factors : list of ndarray
        W_1, ..., W_N, each ``(B, n_p, n_{p-1})``; padded with zeros to d x d, d the largest
        dimension, and packed into lane blocks inside the call (as the engine packs its own).
    lr : float
    steps : int

    Returns
    -------
    ndarray
        The final padded factors, ``(B, N d^2)``.
    """
    dims = (factors[0].shape[2], *(F.shape[1] for F in factors))
    d = max(dims)
    slots = block.padding(dims)
    real = slots >= 0
    theta = np.zeros((factors[0].shape[0], slots.size))
    theta[:, real] = np.concatenate([F.reshape(len(F), -1) for F in factors], axis=1)[
        :, slots[real]]
    mask, goal = np.zeros((d, d)), np.zeros((d, d))
    mask[:problem.rows, :problem.cols] = problem.mask
    goal[:problem.rows, :problem.cols] = problem.targets * problem.mask
    _kernel(d)(theta, mask.ravel(), goal.ravel(), float(lr), int(steps))
    return theta
