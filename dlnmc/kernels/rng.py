"""Counter-based Gaussian noise: the n-th normal of stream ``key`` is a pure function of
``(key, n)``, so noisy trajectories do not depend on threads, chunking or lane position.

The hash is two rounds of the SplitMix64 finalizer (Steele, Lea & Flood 2014) around an
xor with the stream key; two uniforms feed one Box-Muller normal.
"""
import numpy as np

from dlnmc._jit import jit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO53 = 1.0 / 9007199254740992.0


@jit
def mix64(x):
    """SplitMix64 finalizer: a bijective avalanche of a uint64."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


@jit
def uniform(key, counter):
    """Uniform on (0, 1], the ``counter``-th of stream ``key`` (both uint64)."""
    h = mix64(mix64(counter * _GOLDEN + _GOLDEN) ^ key)
    return (np.float64(h >> _S11) + 1.0) * _TWO53


@jit
def normal(key, counter):
    """Standard normal, the ``counter``-th of stream ``key``: Box-Muller on uniforms
    ``2 counter`` and ``2 counter + 1``."""
    c = counter + counter
    u1 = uniform(key, c)
    u2 = uniform(key, c + np.uint64(1))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
