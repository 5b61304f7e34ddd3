"""Naive twin of the ``gla`` kind: the gated recurrence, one step at a time.

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T    S: (Dk, Dv), g_t <= 0 per key channel
    o_t = scale * q_t^T S_t                      scale = Dk^-0.5

Bidirectional is the mean of this scan and the same scan over the
time-reversed sequence (q, k, v and g all reversed), reversed back; it keeps
no state. ``chunk_size`` is accepted, and ignored, so the twin takes the
kind's keyword arguments unchanged.

>>> import torch
>>> q = k = v = torch.randn(1, 3, 2, 4, dtype=torch.float64)  # (B, T, H, D)
>>> g = torch.zeros(1, 3, 2, 4, dtype=torch.float64)  # no decay: plain linear attention
>>> out, state = naive_gla(q, k, v, causal=True, state={}, g=g)
>>> out.shape, state["S"].shape
(torch.Size([1, 3, 2, 4]), torch.Size([1, 2, 4, 4]))
"""

from __future__ import annotations

import torch

from glassbox.nn.attention import State


def _scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    S: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence over (B, T, H, D) inputs from ``S`` (B, H, Dk, Dv); returns (B, T, H, Dv) and S_T."""
    B, T, H, Dk = k.shape
    if S is None:
        S = k.new_zeros(B, H, Dk, v.shape[-1])
    outs = []
    for t in range(T):
        write = k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, Dk, Dv)
        S = g[:, t].exp()[..., None] * S + write
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))  # (B, H, Dv)
    return torch.stack(outs, dim=1), S


def naive_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    g: torch.Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
) -> tuple[torch.Tensor, State | None]:
    """Gated linear attention by the definition; q, k, g (B, T, H, Dk), v (B, T, H, Dv)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not causal:
        if state is not None:
            raise ValueError("gla: the bidirectional form has no decoding state")
        fwd, _ = _scan(q, k, v, g, None, scale)
        bwd, _ = _scan(q.flip(1), k.flip(1), v.flip(1), g.flip(1), None, scale)
        return (fwd + bwd.flip(1)) / 2, None
    out, S = _scan(q, k, v, g, (state or {}).get("S"), scale)
    return out, (None if state is None else {"S": S})
