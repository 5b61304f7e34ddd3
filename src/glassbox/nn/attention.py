"""Attention kinds behind one function: ``attention(q, k, v, kind=...)``.

Every kind is a function registered in ``KINDS`` with the signature
``fn(q, k, v, *, causal, state, **kwargs) -> (out, state)`` on tensors shaped
``(B, T, H, D)``. ``state`` is whatever the kind needs to continue a sequence
one chunk at a time (a KV cache for softmax, a running summary for linear
kinds); ``None`` means "no decoding, keep nothing". The contract test in
``tests/nn/test_attention.py`` runs over ``KINDS.names()``, so a new kind is
checked against its naive twin in ``glassbox.nn.naive`` as soon as it is
registered.

>>> import torch
>>> q = k = v = torch.randn(2, 5, 4, 8)  # (B, T, H, D)
>>> out, state = attention(q, k, v, causal=True)
>>> out.shape, state
(torch.Size([2, 5, 4, 8]), None)
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F

from glassbox.registry import Registry

State = dict[str, torch.Tensor]


class AttentionKind(Protocol):
    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        state: State | None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, State | None]: ...


KINDS: Registry[AttentionKind] = Registry("attention kind")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kind: str = "softmax",
    causal: bool = False,
    state: State | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, State | None]:
    """Attend ``q`` over ``k, v`` with a registered kind; all ``(B, T, H, D)``.

    With ``state`` (a dict, empty at the first call) the new keys and values
    are appended to it and the queries are taken to be the *last* positions of
    the sequence so far, so a prompt can be fed at once and then one token at
    a time. Returns ``(out, state)``; ``state`` is ``None`` when none was given.

    >>> import torch
    >>> q = k = v = torch.randn(1, 4, 2, 8)
    >>> full, _ = attention(q, k, v, causal=True)
    >>> head, cache = attention(q[:, :3], k[:, :3], v[:, :3], causal=True, state={})
    >>> last, cache = attention(q[:, 3:], k[:, 3:], v[:, 3:], causal=True, state=cache)
    >>> cache["k"].shape, torch.allclose(last, full[:, 3:], atol=1e-6)
    (torch.Size([1, 4, 2, 8]), True)
    """
    fn = KINDS.get(kind)
    return fn(q, k, v, causal=causal, state=state, **kwargs)


def _chunk_causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """``(1, 1, tq, tk)`` bool, True where query ``i`` (at position ``tk - tq + i``) may look.

    4-D on purpose: SDPA's CPU flash kernel accepts 2-D and 4-D masks but a
    3-D one silently sends it down the slow math path.
    """
    rows = torch.arange(tq, device=device)[:, None] + (tk - tq)
    cols = torch.arange(tk, device=device)[None, :]
    return (cols <= rows)[None, None]


@KINDS.register("softmax")
def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[torch.Tensor, State | None]:
    """Scaled dot-product attention with an optional KV cache ``{"k", "v"}``.

    ``dropout_p > 0`` is allowed but costs the fused CPU kernel (PyTorch only
    fuses dropout-free attention on CPU), which is why the blocks drop out
    after the projection instead.
    """
    if state is not None:
        if "k" in state:
            k = torch.cat([state["k"], k], dim=1)  # (B, Tc + T, H, D)
            v = torch.cat([state["v"], v], dim=1)
        state = {"k": k, "v": v}
    tq, tk = q.shape[1], k.shape[1]
    mask = None
    is_causal = False
    if causal and tq > 1:
        # SDPA's is_causal aligns queries to the *first* keys, which is only
        # right without a cache. A single new token sees every cached key, so
        # it needs no mask at all.
        if tq == tk:
            is_causal = True
        else:
            mask = _chunk_causal_mask(tq, tk, q.device)
    # Transposed views, not copies: the fused kernel takes any strides as
    # long as the last dimension is contiguous.
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),  # (B, H, Tq, D)
        k.transpose(1, 2),  # (B, H, Tk, D)
        v.transpose(1, 2),
        attn_mask=mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
    )
    return out.transpose(1, 2), state  # (B, Tq, H, D)
