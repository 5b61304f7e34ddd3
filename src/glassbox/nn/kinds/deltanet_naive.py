"""DeltaNet's naive twin: the delta rule written as a loop over time.

This is the definition ``deltanet.py`` is held to. Keys and queries are
L2-normalised over ``D`` (``x / sqrt(|x|^2 + 1e-6)``, fla's l2norm), then for
each step

    S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T    S: (Dk, Dv)
    o_t = D^-0.5 q_t^T S_t

The bidirectional form is the mean of this scan and the same scan run over
the time-reversed sequence (then reversed back); it keeps no state.

>>> import torch
>>> q = k = v = torch.randn(1, 3, 2, 4, dtype=torch.float64)  # (B, T, H, D)
>>> out, state = naive_deltanet(q, k, v, causal=True, state={}, beta=torch.full((1, 3, 2), 0.5))
>>> out.shape, state["S"].shape
(torch.Size([1, 3, 2, 4]), torch.Size([1, 2, 4, 4]))
"""

from __future__ import annotations

import torch

EPS = 1e-6  # as fla's l2norm, so the CPU and GPU paths compute the same function


def _scan(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, S: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One causal pass; q, k, v (B, T, H, D), beta (B, T, H), S (B, H, Dk, Dv) or None."""
    B, T, H, Dk = k.shape
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + EPS) * Dk**-0.5
    k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + EPS)
    if S is None:
        S = q.new_zeros(B, H, Dk, v.shape[-1])
    outs = []
    for t in range(T):
        kt, vt, qt, bt = k[:, t], v[:, t], q[:, t], beta[:, t, :, None, None]  # (B, H, D)
        read = torch.einsum("bhk,bhkv->bhv", kt, S)  # k_t^T S_{t-1}
        S = S - bt * kt[..., :, None] * read[..., None, :] + bt * kt[..., :, None] * vt[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", qt, S))
    return torch.stack(outs, dim=1), S  # (B, T, H, Dv)


def naive_deltanet(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: dict | None,
    beta: torch.Tensor,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, dict | None]:
    """The delta rule step by step; ``chunk_size`` is accepted and ignored (there are no chunks)."""
    if not causal:
        fwd, _ = _scan(q, k, v, beta, None)
        bwd, _ = _scan(q.flip(1), k.flip(1), v.flip(1), beta.flip(1), None)
        return (fwd + bwd.flip(1)) / 2, None
    out, S = _scan(q, k, v, beta, (state or {}).get("S"))
    return out, (None if state is None else {"S": S})
