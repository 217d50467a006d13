"""The one place where dlnmc's Numba options are fixed.

Every kernel is compiled with ``cache=True`` (cold compiles cost seconds), numpy's error
model (division by zero gives inf/nan, which the kernels detect, instead of raising) and
no ``fastmath`` (it would delete the ``isfinite`` checks the divergence detection relies on).
"""
import functools

import numba
from numba.extending import register_jitable

jit = functools.partial(numba.njit, cache=True, error_model="numpy", nogil=True)
"""Serial kernel decorator."""

pjit = functools.partial(numba.njit, cache=True, error_model="numpy", nogil=True, parallel=True)
"""Kernel decorator for loops over trajectories (``numba.prange``)."""


helper = functools.partial(register_jitable, error_model="numpy")
"""Helper compiled into each kernel that calls it, as a separate function."""


def compile_vectorized(kernel, signature):
    """Compile (or load from cache) ``kernel`` for ``signature`` with LLVM's SLP vectorizer
    switched on (numba ships with it off), then close it to further signatures."""
    before = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        kernel.compile(signature)
    finally:
        numba.config.SLP_VECTORIZE = before
    kernel.disable_compile()
    return kernel
