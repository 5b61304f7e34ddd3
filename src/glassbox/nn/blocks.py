"""Multi-head attention and the pre-norm transformer block.

Both take and return ``state`` so that a stack of blocks can be decoded one
token at a time; ``state=None`` is the ordinary full-sequence forward.

>>> import torch
>>> block = Block(dim=16, heads=2, causal=True)
>>> y, state = block(torch.randn(3, 5, 16))  # (B, T, dim)
>>> y.shape, state
(torch.Size([3, 5, 16]), None)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glassbox.nn.attention import KINDS, SPECS, State, attention
from glassbox.nn.merging import bipartite_merge, merge_count
from glassbox.nn.naive import softmax_weights


class MultiHeadAttention(nn.Module):
    """Project to heads, attend with a registered kind, project back.

    ``dropout`` applies to the output projection, not to the attention
    weights: PyTorch only runs its fused CPU attention kernel without
    attention dropout, and residual dropout regularises as well at this size.

    For explanations, set ``record_maps = True``: the forward then computes
    softmax attention explicitly and keeps the map it applied in ``maps``
    ``(B, H, Tq, Tk)``, still attached to the graph so that gradients with
    respect to it can be taken (``maps.retain_grad()`` before backward).

    >>> import torch
    >>> mha = MultiHeadAttention(dim=8, heads=2)
    >>> mha.record_maps = True
    >>> y, _ = mha(torch.randn(1, 4, 8))
    >>> tuple(mha.maps.shape)
    (1, 2, 4, 4)
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        attention: str = "softmax",
        causal: bool = False,
        dropout: float = 0.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        KINDS.get(attention)  # an unknown kind fails here, not at the first forward
        spec = SPECS[attention]
        self.heads = heads
        self.kind = attention
        self.causal = causal
        # Only the options this kind understands, e.g. window for sliding.
        self.options = {k: v for k, v in (options or {}).items() if k in spec.options}
        # Per-step inputs some kinds need (gla's decay gates, deltanet's betas).
        self.extras = spec.extras(dim, heads, dim // heads) if spec.extras is not None else None
        self.post = spec.post(dim, heads, dim // heads) if spec.post is not None else None
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.record_maps = False
        self.maps: torch.Tensor | None = None

    def forward(
        self, x: torch.Tensor, state: State | None = None, key_bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State | None]:
        y, state, _ = self.attend(x, state, key_bias)
        return y, state

    def attend(
        self, x: torch.Tensor, state: State | None = None, key_bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State | None, torch.Tensor]:
        """``forward`` that also returns this call's keys ``(B, T, H, D)``, token merging's metric.

        ``key_bias`` ``(B, T)`` is added to every logit for that key (softmax only).
        """
        B, T, dim = x.shape
        # One matmul for all three; unbind gives views whose last dim is
        # contiguous, which is all the fused attention kernel needs.
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, dim // self.heads).unbind(2)  # (B, T, H, D)
        extra = self.extras(x) if self.extras is not None else {}
        if key_bias is not None:
            extra = {**extra, "key_bias": key_bias}
        y, state = attention(
            q, k, v, kind=self.kind, causal=self.causal, state=state, **self.options, **extra
        )
        if self.record_maps:
            y = self._with_maps(q, k, v, state, key_bias)
        if self.post is not None:
            y = self.post(y, x)  # (B, T, H, D)
        return self.drop(self.out(y.reshape(B, T, dim))), state, k

    def _with_maps(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        state: State | None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.kind != "softmax":
            # Other kinds have no explicit map; better no map than a wrong one.
            raise NotImplementedError(f"attention maps are only recorded for softmax, not '{self.kind}'")
        if state is not None:
            k, v = state["k"], state["v"]  # the whole cache, (B, Tk, H, D)
        self.maps = softmax_weights(q, k, causal=self.causal)  # (B, H, Tq, Tk)
        if key_bias is not None:
            # softmax(s + b) = softmax(s) * exp(b), renormalised: the map proportional attention applied.
            w = self.maps * key_bias.exp()[:, None, None, :]
            self.maps = w / w.sum(-1, keepdim=True)
        return torch.einsum("bhqk,bkhd->bqhd", self.maps, v)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Pre-norm keeps the residual stream un-normalised, which trains stably
    without a careful warm-up even at the small depths glassbox uses.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        attention: str = "softmax",
        causal: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(
            dim, heads, attention=attention, causal=causal, dropout=dropout, options=options
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        a, state = self.attn(self.norm1(x), state)
        x = x + a  # (B, T, dim)
        x = x + self.mlp(self.norm2(x))
        return x, state

    def forward_merging(
        self, x: torch.Tensor, size: torch.Tensor | None, r: int, protect_cls: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ToMe block for encoders: attend, merge ``r`` tokens by their keys, then the MLP.

        ``size`` ``(B, N, 1)`` counts the input tokens each token stands for
        (``None``: one each). Softmax attention is proportional: ``log(size)``
        is added to each key's logit, so a merged token is attended as the
        tokens it replaced. Other kinds attend to merged tokens as to single
        ones. Merging sits between attention and MLP, as in the paper, so the
        MLP already runs on fewer tokens. Returns ``(x (B, N - r', dim), size)``.
        """
        if self.attn.causal:
            raise ValueError("token merging is for non-causal encoders")
        bias = size[..., 0].log() if size is not None and self.attn.kind == "softmax" else None  # (B, N)
        a, _, k = self.attn.attend(self.norm1(x), key_bias=bias)
        x = x + a  # (B, N, dim)
        if merge_count(x.shape[1], r, protect_cls):  # else skip even the metric
            x, size = bipartite_merge(x, k.mean(dim=2), r, size, protect_cls)  # keys averaged over heads
        x = x + self.mlp(self.norm2(x))  # (B, N - r', dim)
        return x, size
