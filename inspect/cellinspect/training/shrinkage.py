"""Covariance shrinkage weights estimated from the good parts themselves (OAS, Ledoit-Wolf).

A fixed weight is wrong at one end: strong enough for 25 parts in 96 dimensions, it blurs the
covariance of a thousand (few-good-parts.md: a fixed 0.5 helped at 25-50 parts and hurt at
100+). The closed forms below give a weight that falls as parts are added, with the same
target as `fit_position_gaussians` (the position's mean variance times the identity).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cellinspect.errors import ModelError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SHRINKAGE_RULES = ("fixed", "oas", "ledoit-wolf")
# fit_position_gaussians takes weights in [0, 1): a weight of 1 would drop all correlation
MAX_WEIGHT = 0.99


def _position_weights(x: F64, rule: str) -> F64:
    """(P, N, D) centred features -> (P,) weights, as sklearn's `oas` / `ledoit_wolf`."""
    _, n, dim = x.shape
    # sum(S**2) with S = X'X / n: through the smaller of the (D, D) and (N, N) products
    gram = x.transpose(0, 2, 1) @ x if dim <= n else x @ x.transpose(0, 2, 1)
    sum_s2 = np.einsum("pij,pij->p", gram, gram) / n**2
    norms = np.einsum("pnd,pnd->pn", x, x)  # |x_k|^2 per position
    trace = norms.sum(axis=1) / n
    mu = trace / dim
    if rule == "oas":
        alpha = sum_s2 / dim**2
        den = (n + 1) * (alpha - mu**2 / dim)
        return np.where(den > 0, (alpha + mu**2) / np.where(den > 0, den, 1.0), 1.0)
    beta = ((norms**2).sum(axis=1) / n - sum_s2) / (dim * n)
    delta = (sum_s2 - trace**2 / dim) / dim
    beta = np.minimum(beta, delta)
    return np.where(delta > 0, beta / np.where(delta > 0, delta, 1.0), 0.0)


def estimate_shrinkage(features: F32, rule: str, chunk: int = 64) -> float:
    """One weight for (N, P, D) good features: the mean over positions of each position's
    OAS or Ledoit-Wolf weight, capped below 1. Strong for few parts, weak for many."""
    if rule not in SHRINKAGE_RULES[1:]:
        raise ModelError(f"shrinkage rule must be one of {SHRINKAGE_RULES[1:]}, got {rule!r}")
    n, positions, _ = features.shape
    if n < 2:
        raise ModelError(f"estimating a shrinkage weight needs at least 2 good images, got {n}")
    weights = np.empty(positions, np.float64)
    for start in range(0, positions, chunk):  # bounded float64 copies
        x = features[:, start : start + chunk].astype(np.float64).transpose(1, 0, 2)
        x = x - x.mean(axis=1, keepdims=True)
        weights[start : start + chunk] = _position_weights(x, rule)
    return float(np.clip(np.mean(np.clip(weights, 0.0, 1.0)), 0.0, MAX_WEIGHT))
