"""Initialization laws for the factors W_1, ..., W_N, seeded per trajectory.

Every trajectory draws from its own NumPy generator keyed by ``(seed, run id)`` (NumPy's
recipe for parallel streams: ``SeedSequence([seed, run, stream])``), so a run's initial state
does not depend on how many runs are drawn with it, on threads, or on chunking.
"""
from __future__ import annotations

import numpy as np

__all__ = ["layer_dims", "init_factors", "run_generator", "noise_keys", "product"]

_INIT_STREAM, _NOISE_STREAM = 0, 1


def layer_dims(shape, depth, widths=None) -> tuple[int, ...]:
    """Dimensions ``(n_0, n_1, ..., n_N)`` with n_0 = cols, n_N = rows; W_p is n_p x n_{p-1}.

    ``widths`` are the N - 1 hidden widths (default ``min(rows, cols)`` each, which does not
    restrict the rank of the product).
    """
    rows, cols = shape
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth}")
    if widths is None:
        widths = [min(rows, cols)] * (depth - 1)
    elif np.isscalar(widths):
        widths = [int(widths)] * (depth - 1)
    widths = [int(w) for w in widths]
    if len(widths) != depth - 1:
        raise ValueError(f"depth {depth} needs {depth - 1} hidden widths, got {len(widths)}")
    if any(w < 1 for w in widths):
        raise ValueError(f"hidden widths must be positive, got {widths}")
    return (int(cols), *widths, int(rows))


def run_generator(seed, run, stream=_INIT_STREAM) -> np.random.Generator:
    """The generator of trajectory ``run`` of a study seeded ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(run), stream]))


def noise_keys(seed, runs) -> np.ndarray:
    """One 64-bit key per run id for the counter-based noise stream of noisy GD."""
    return np.array(
        [np.random.SeedSequence([int(seed), int(r), _NOISE_STREAM]).generate_state(1, np.uint64)[0]
         for r in runs],
        dtype=np.uint64,
    )


def product(factors) -> np.ndarray:
    """End-to-end matrix W = W_N ... W_1 of batched factors (each ``(..., n_p, n_{p-1})``)."""
    W = factors[0]
    for F in factors[1:]:
        W = F @ W
    return W


def _haar(rng, n, k):
    """n x k matrix with orthonormal columns, Haar distributed (QR with sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def _draw_gaussian(rng, dims, scale):
    # Product entries have variance sigma^(2N) * prod(hidden widths) = scale^2.
    depth = len(dims) - 1
    inner = float(np.prod(dims[1:-1])) if depth > 1 else 1.0
    sigma = (scale**2 / inner) ** (1.0 / (2 * depth))
    return [sigma * rng.standard_normal((dims[p + 1], dims[p])) for p in range(depth)]


def _draw_balanced(rng, dims, scale):
    # Arora, Cohen, Golowich & Hu (2019): P0 ~ N(0, scale^2) entries, P0 = U S V^T,
    # W_p = Q_p S^(1/N) Q_{p-1}^T with Q_0 = V, Q_N = U and Haar Q_p between.  With a hidden
    # width below min(rows, cols) the SVD is truncated to the narrowest layer.
    depth = len(dims) - 1
    P0 = scale * rng.standard_normal((dims[-1], dims[0]))
    U, s, Vt = np.linalg.svd(P0, full_matrices=False)
    k = min(dims)
    root = s[:k] ** (1.0 / depth)
    Q = [Vt[:k].T] + [_haar(rng, n, k) for n in dims[1:-1]] + [U[:, :k]]
    return [(Q[p + 1] * root) @ Q[p].T for p in range(depth)]


_LAWS = {"gaussian": _draw_gaussian, "balanced": _draw_balanced}


def init_factors(shape, depth, runs, init="balanced", init_scale=1e-3, widths=None, seed=0,
                 first_run=0, det_sign=None) -> list[np.ndarray]:
    """Initial factors for runs ``first_run, ..., first_run + runs - 1``.

    Parameters
    ----------
    shape : (rows, cols)
    depth : int
    runs : int
    init : {"balanced", "gaussian"} or sequence of arrays
        ``"gaussian"``: i.i.d. N(0, sigma^2) factor entries with sigma chosen so that the
        product's entries have standard deviation ``init_scale`` (Razin & Cohen 2020's "init").
        ``"balanced"``: the product has i.i.d. N(0, init_scale^2) entries and is split by its
        SVD with Haar-random orthogonal matrices between layers (mathematics.md section 1.4);
        W_{p+1}^T W_{p+1} = W_p W_p^T holds exactly.  Explicit factors: ``depth`` arrays, the
        p-th of shape ``(runs, n_p, n_{p-1})``, used as given.
    init_scale : float
        Positive standard deviation of the product's entries (random laws only).
    det_sign : {None, 1, -1}
        Square problems only: redraw each run's init (from its own generator) until
        ``sign(det W(0)) == det_sign``, as Razin & Cohen do for unbalanced inits.

    Returns
    -------
    list of ndarray
        ``depth`` C-contiguous float64 arrays, W_1 first, the p-th of shape ``(runs, n_p, n_{p-1})``.
    """
    dims = layer_dims(shape, depth, widths)
    runs = int(runs)
    if runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs}")
    if det_sign not in (None, 1, -1):
        raise ValueError(f"det_sign must be None, 1 or -1, got {det_sign!r}")
    if det_sign is not None and shape[0] != shape[1]:
        raise ValueError("det_sign needs a square problem")
    if not isinstance(init, str):
        return _explicit(init, dims, runs, det_sign)
    if init not in _LAWS:
        raise ValueError(f"init must be one of {sorted(_LAWS)} or explicit factors, got {init!r}")
    init_scale = float(init_scale)
    if not (np.isfinite(init_scale) and init_scale > 0):
        raise ValueError(f"init_scale must be positive and finite, got {init_scale}")
    draw = _LAWS[init]
    out = [np.empty((runs, dims[p + 1], dims[p])) for p in range(depth)]
    for r in range(runs):
        rng = run_generator(seed, first_run + r)
        for _attempt in range(1000):
            factors = draw(rng, dims, init_scale)
            if det_sign is None or np.sign(np.linalg.det(product(factors))) == det_sign:
                break
        else:
            raise ValueError(f"could not draw an init with det sign {det_sign} in 1000 tries")
        for p, F in enumerate(factors):
            out[p][r] = F
    return out


def _explicit(init, dims, runs, det_sign):
    depth = len(dims) - 1
    init = list(init)
    if len(init) != depth:
        raise ValueError(f"explicit init needs {depth} factor arrays, got {len(init)}")
    out = []
    for p, F in enumerate(init):
        F = np.array(F, dtype=np.float64, order="C")
        want = (runs, dims[p + 1], dims[p])
        if F.shape != want:
            raise ValueError(f"explicit factor W_{p + 1} has shape {F.shape}, expected {want}")
        if not np.all(np.isfinite(F)):
            raise ValueError(f"explicit factor W_{p + 1} has non-finite entries")
        out.append(F)
    if det_sign is not None:
        signs = np.sign(np.linalg.det(product(out)))
        if np.any(signs != det_sign):
            raise ValueError(f"explicit init has runs whose det sign is not {det_sign}")
    return out
