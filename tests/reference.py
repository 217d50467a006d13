"""Slow, obviously correct NumPy references shared by the tests.

Each section belongs to one module under test; the references use plain matrix products on one
trajectory at a time and nothing from the code they check.
"""
import numpy as np

# ---------------------------------------------------------------------------------------
# engine (dlnmc.simulate): plain GD on W = W_N ... W_1, one trajectory at a time
# ---------------------------------------------------------------------------------------


def end_to_end(factors):
    """W = W_N ... W_1 for one trajectory (factors ordered W_1 first)."""
    W = factors[0]
    for F in factors[1:]:
        W = F @ W
    return W


def loss(W, mask, targets):
    """1/2 sum over observed entries of (W_ij - b_ij)^2."""
    return 0.5 * np.sum((mask * (W - targets)) ** 2)


def factor_gradients(factors, mask, targets):
    """dl/dW_p = (W_N ... W_{p+1})^T G (W_{p-1} ... W_1)^T, G = P_Omega(W - b)."""
    N = len(factors)
    G = mask * (end_to_end(factors) - targets)
    grads = []
    for p in range(N):
        left = end_to_end(factors[p + 1:]) if p + 1 < N else np.eye(G.shape[0])
        right = end_to_end(factors[:p]) if p > 0 else np.eye(G.shape[1])
        grads.append(left.T @ G @ right.T)
    return grads


def gd_trajectory(factors, mask, targets, lr, steps):
    """``steps`` plain GD steps, every factor from the old ones; returns (factors, losses)."""
    factors = [np.array(F, dtype=np.float64) for F in factors]
    losses = []
    for _ in range(steps):
        losses.append(loss(end_to_end(factors), mask, targets))
        grads = factor_gradients(factors, mask, targets)
        factors = [F - lr * g for F, g in zip(factors, grads)]
    losses.append(loss(end_to_end(factors), mask, targets))
    return factors, np.array(losses)
