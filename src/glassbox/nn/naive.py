"""Naive twins: each attention kind written out plainly, for tests and explanations.

These are the definitions the fast kinds in ``glassbox.nn.attention`` are
checked against, so they favour being obviously right over being quick: one
einsum for the scores, an explicit mask, an explicit softmax. Each kind's
``KindSpec.reference`` names its twin; the other kinds' twins live beside
them in ``glassbox.nn.kinds``.

Queries are always the *last* ``Tq`` positions of the ``Tk`` keys, so the same
functions describe a full forward (``Tq == Tk``) and a decoding chunk.

>>> import torch
>>> q = k = v = torch.randn(1, 3, 2, 4)  # (B, T, H, D)
>>> w = softmax_weights(q, k, causal=True)  # (B, H, Tq, Tk)
>>> w[0, 0, 0].tolist()[1:], round(float(w[0, 0, 2].sum()), 5)
([0.0, 0.0], 1.0)
"""

from __future__ import annotations

import math

import torch


def causal_mask(tq: int, tk: int, device: torch.device | None = None) -> torch.Tensor:
    """``(tq, tk)`` bool, True where query ``i`` (at absolute position ``tk - tq + i``) sees key ``j``."""
    rows = torch.arange(tq, device=device)[:, None] + (tk - tq)
    cols = torch.arange(tk, device=device)[None, :]
    return cols <= rows


def softmax_weights(
    q: torch.Tensor, k: torch.Tensor, causal: bool = False, scale: float | None = None
) -> torch.Tensor:
    """The attention map ``softmax(q k^T / sqrt(D))``, shaped ``(B, H, Tq, Tk)``."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale  # (B, H, Tq, Tk)
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[1], k.shape[1], q.device), float("-inf"))
    return scores.softmax(dim=-1)


def naive_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention by the textbook: ``(B, Tq, H, D)`` from ``(B, T, H, D)`` inputs."""
    weights = softmax_weights(q, k, causal=causal, scale=scale)  # (B, H, Tq, Tk)
    return torch.einsum("bhqk,bkhd->bqhd", weights, v)
