"""Naive twin of the ``linear`` kind: normalized kernelized attention by its definition.

Causal: a loop over time that adds ``phi(k_t) v_t^T`` to ``S`` and ``phi(k_t)``
to ``z``, then reads ``phi(q_t)^T S / (phi(q_t)^T z + EPS)``. Bidirectional:
the O(T^2) score matrix ``phi(Q) phi(K)^T``, normalized by its row sums.
Slow and obviously right; the fast forms in ``linear.py`` are held to it.

>>> import torch
>>> q = k = v = torch.randn(1, 3, 2, 4, dtype=torch.float64)  # (B, T, H, D)
>>> out, state = naive_linear_attention(q, k, v, causal=True, state={})
>>> out.shape, state["S"].shape, state["z"].shape
(torch.Size([1, 3, 2, 4]), torch.Size([1, 2, 4, 4]), torch.Size([1, 2, 4]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from glassbox.nn.attention import State

# Keeps 0/0 away without moving real outputs: every denominator is a sum of
# positive numbers (elu + 1 > 0) or of numbers >= 1/2 (taylor), one per key.
EPS = 1e-6


def naive_feature_map(x: torch.Tensor, kind: str) -> torch.Tensor:
    """``phi(x)`` for ``x`` (..., D): elu + 1, or Based's 2nd-order Taylor features of exp.

    Taylor, written out pair by pair: ``[1, x_i / d^(1/4), x_i x_j c_ij]`` over
    ``i <= j`` in row-major order, with ``c_ii = 1 / sqrt(2 d)`` and
    ``c_ij = 1 / sqrt(d)`` off the diagonal (each off-diagonal pair stands for
    both ``(i, j)`` and ``(j, i)`` of ``vec(x x^T)``), so that
    ``phi(q) . phi(k) = 1 + q.k / sqrt(d) + (q.k)^2 / (2 d)``.
    """
    if kind == "elu":
        return F.elu(x) + 1
    d = x.shape[-1]
    pairs = []
    for i in range(d):
        for j in range(i, d):
            c = 1 / math.sqrt(2 * d) if i == j else 1 / math.sqrt(d)
            pairs.append(x[..., i] * x[..., j] * c)
    return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, torch.stack(pairs, -1)], -1)


def naive_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    chunk_size: int = 64,
    feature_map: str = "elu",
) -> tuple[torch.Tensor, State | None]:
    """Same contract as ``linear_attention``; ``chunk_size`` is accepted and ignored."""
    del chunk_size  # the definition has no chunks
    B, T, H, _ = q.shape
    qf = naive_feature_map(q, feature_map)  # (B, T, H, F)
    kf = naive_feature_map(k, feature_map)
    Fd, Dv = qf.shape[-1], v.shape[-1]
    S = torch.zeros(B, H, Fd, Dv, dtype=q.dtype, device=q.device)
    z = torch.zeros(B, H, Fd, dtype=q.dtype, device=q.device)
    if state:
        S, z = state["S"], state["z"]
    if causal:
        outs = []
        for t in range(T):
            S = S + torch.einsum("bhf,bhd->bhfd", kf[:, t], v[:, t])
            z = z + kf[:, t]
            num = torch.einsum("bhf,bhfd->bhd", qf[:, t], S)
            den = torch.einsum("bhf,bhf->bh", qf[:, t], z)
            outs.append(num / (den[..., None] + EPS))
        out = torch.stack(outs, 1)  # (B, T, H, Dv)
    else:
        # Every query sees every key, the ones summarized in a start state included.
        scores = torch.einsum("bihf,bjhf->bhij", qf, kf)  # (B, H, T, T)
        num = torch.einsum("bhij,bjhd->bihd", scores, v) + torch.einsum("bihf,bhfd->bihd", qf, S)
        den = scores.sum(-1).transpose(1, 2) + torch.einsum("bihf,bhf->bih", qf, z)  # (B, T, H)
        out = num / (den[..., None] + EPS)
        S = S + torch.einsum("bjhf,bjhd->bhfd", kf, v)
        z = z + kf.sum(1)  # (B, H, F)
    return out, ({"S": S, "z": z} if state is not None else None)
