"""Naive twin of sliding-window attention: every score, then an explicit band mask.

Builds the full ``(Tq, Tk)`` score matrix on purpose, so it is the plain
definition the blocked form in ``sliding.py`` is checked against, not a fast
path. Queries are the *last* ``Tq`` of the ``Tk`` keys (cache + new).

Causal: query ``i`` sees keys ``j`` with ``i - window < j <= i`` (``window``
keys, itself included). Bidirectional: ``|i - j| <= window // 2``.

>>> import torch
>>> q = k = torch.randn(1, 4, 1, 2)  # (B, T, H, D)
>>> v = torch.arange(4.0).reshape(1, 4, 1, 1)
>>> out, _ = naive_sliding_attention(q, k, v, causal=True, state=None, window=1)
>>> out.flatten().tolist()  # a window of one sees only itself
[0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

import math
from typing import Any

import torch


def band_mask(
    tq: int, tk: int, window: int, causal: bool, device: torch.device | None = None
) -> torch.Tensor:
    """``(tq, tk)`` bool, True where query ``i`` (at absolute position ``tk - tq + i``) sees key ``j``."""
    rows = torch.arange(tq, device=device)[:, None] + (tk - tq)
    cols = torch.arange(tk, device=device)[None, :]
    dist = rows - cols  # how far back the key lies
    if causal:
        return (dist >= 0) & (dist < window)
    return dist.abs() <= window // 2


def naive_sliding_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: dict[str, Any] | None,
    window: int = 256,
) -> tuple[torch.Tensor, dict[str, Any] | None]:
    if state is not None:
        if "k" in state:
            k = torch.cat([state["k"], k], dim=1)  # (B, Tc + T, H, D)
            v = torch.cat([state["v"], v], dim=1)
        keep = max(k.shape[1] - (window - 1), 0)  # slicing at -(window - 1) would keep all for window 1
        state = {"k": k[:, keep:], "v": v[:, keep:]}
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    mask = band_mask(q.shape[1], k.shape[1], window, causal, q.device)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", weights, v), state  # (B, Tq, H, D)
