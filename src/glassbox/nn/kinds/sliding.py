"""Sliding-window softmax attention: each query sees only the keys near it.

Causal: query ``i`` sees keys ``j`` with ``i - window < j <= i``, exactly
``window`` keys counting itself (fewer at the start). Bidirectional: keys
with ``|i - j| <= window // 2``, a centred band of ``2 * (window // 2) + 1``
keys, so a query costs about ``window`` keys either way. With a decoding
state, bidirectional queries see only the keys given so far.

The fast form never builds a ``(T, T)`` tensor. Queries are cut into blocks
of ``block`` positions; block ``i`` attends to one window of ``span`` keys
(``block + window - 1`` rounded up to whole blocks) holding every key its
queries may see. The windows are overlapping strided views of ``k`` and
``v``, not copies, and go to SDPA as ``(blocks, H, span, D)`` with one
shared 4-D band mask, so PyTorch's fused CPU kernel runs them; memory is
``O(T * span)``. The first ``window`` queries and a ragged last block, whose
windows would run off the sequence, take a dense SDPA over that short
stretch instead of padding. Blocks go to SDPA a few MiB of windows at a
time, and one autograd node (``_Banded``) runs each call's backward and adds
its window gradients back into ``k`` and ``v`` at once, while they are still
in cache (once differentiable: no double backward).

Decoding keeps the last ``window - 1`` keys and values, all that a new query
can reach: ``{"k": (B, <= window - 1, H, D), "v": ...}``.

>>> import torch
>>> from glassbox.nn.attention import attention
>>> q = k = v = torch.randn(1, 10, 2, 8)  # (B, T, H, D)
>>> out, _ = attention(q, k, v, kind="sliding", causal=True, window=4)
>>> _, cache = attention(q[:, :9], k[:, :9], v[:, :9], kind="sliding", causal=True, state={}, window=4)
>>> last, cache = attention(q[:, 9:], k[:, 9:], v[:, 9:], kind="sliding", causal=True, state=cache, window=4)
>>> cache["k"].shape, torch.allclose(last, out[:, 9:], atol=1e-6)
(torch.Size([1, 3, 2, 8]), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from glassbox.errors import UserError
from glassbox.nn.attention import KindSpec, State, register_kind
from glassbox.nn.kinds.sliding_naive import naive_sliding_attention

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def default_block(window: int) -> int:
    """Queries per block; 64 was fastest for causal forward+backward at window 256 on one CPU thread.

    A block's window has ``block + window - 1`` keys, so smaller blocks waste
    less on masked corners, but below 64 the kernel's small tiles and the
    growing windows (``span / block`` times ``k``, in gradient buffers too)
    cost more than they save (32: +10-25 %, 128: +0-10 %, 256: +20 %).
    """
    return max(16, min(64, window))


def _group(span: int, H: int, D: int, itemsize: int) -> int:
    """Blocks per SDPA call: about 2 MiB of key window each (one core's L2 here).

    A call's window gradients are ``span / block`` times its keys; folded
    back while still in cache they cost little. Measured at T = 4k and 16k:
    2-4 MiB fastest, 1 MiB and 8 MiB 5-10 % slower, 512 KiB 25 % (call
    overhead), one call for everything 5-10 %.
    """
    return max(1, (2 << 20) // (span * H * D * itemsize))


@dataclass(frozen=True)
class _Piece:
    """Queries ``[q0, q1)`` of one batch row (``row``; None: all rows) and the keys they attend to.

    Dense (``block == 0``): keys ``[k0, k1)``. Blocked: query block ``i``
    attends to the ``span`` keys from ``k0 + i * block``.
    """

    q0: int
    q1: int
    k0: int
    k1: int
    row: int | None = None
    block: int = 0
    span: int = 0

    @property
    def rows(self) -> slice:
        return slice(None) if self.row is None else slice(self.row, self.row + 1)


class _Band(NamedTuple):
    """Where the queries sit and what they see, shared by every piece."""

    off: int  # query i sits at key position off + i (queries are the last of the keys)
    left: int  # keys a query sees before itself ...
    right: int  # ... and after itself
    block_mask: torch.Tensor | None  # (1, 1, block, span), the same for every block


def _plan(B: int, tq: int, tk: int, left: int, right: int, block: int, span: int, group: int) -> list[_Piece]:
    """Cut ``tq`` queries (the last of ``tk`` keys) into dense ends and groups of blocks."""
    off = tk - tq
    reach = span - block - right  # how far before its block a window starts, >= left
    # Blocks [first, stop) have their whole window inside [0, tk); the ends go dense.
    first = -(-max(reach - off, 0) // block)
    stop = (tq - right) // block
    if stop <= first:
        return [_Piece(0, tq, 0, tk)]
    pieces = []
    if first:
        pieces.append(_Piece(0, first * block, 0, off + first * block + right))
    # A window view cannot span the batch and the blocks in one SDPA batch
    # dim, so blocks go one batch row at a time.
    for row in range(B):
        for a in range(first, stop, group):
            b = min(a + group, stop)
            pieces.append(
                _Piece(
                    a * block, b * block, off + a * block - reach, off + b * block + right, row, block, span
                )
            )
    if stop * block < tq:
        pieces.append(_Piece(stop * block, tq, max(off + stop * block - left, 0), tk))
    return pieces


def _mask(
    q_pos: int, tq: int, k_pos: int, tk: int, left: int, right: int, device: torch.device
) -> torch.Tensor | None:
    """``(1, 1, tq, tk)`` bool band for queries at ``q_pos..`` and keys at ``k_pos..``; None if all True.

    4-D on purpose: a 3-D mask sends SDPA's CPU flash kernel down the slow
    math path. None lets the kernel skip the mask altogether.
    """
    if q_pos + tq - 1 - left <= k_pos and q_pos + right >= k_pos + tk - 1:
        return None
    rows = torch.arange(tq, device=device)[:, None] + q_pos
    cols = torch.arange(tk, device=device)[None, :] + k_pos
    dist = rows - cols  # how far back the key lies
    return ((dist <= left) & (dist >= -right))[None, None]


def _inputs(p: _Piece, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Tensors:
    """Views of the queries and keys a piece needs; no copies."""
    qp = q[p.rows, p.q0 : p.q1]
    if not p.block:
        return qp, k[p.rows, p.k0 : p.k1], v[p.rows, p.k0 : p.k1]
    n, (_, _, H, D) = (p.q1 - p.q0) // p.block, k.shape

    def windows(x: torch.Tensor) -> torch.Tensor:
        # (n, H, span, D) overlapping windows: the kernel reads any strides.
        sB, sT, sH, sD = x.stride()
        start = x.storage_offset() + p.row * sB + p.k0 * sT
        return x.as_strided((n, H, p.span, D), (p.block * sT, sH, sT, sD), start)

    return qp, windows(k), windows(v)


def _attend(p: _Piece, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, band: _Band) -> torch.Tensor:
    """One SDPA call for a piece; ``q`` (rows, q1 - q0, H, D), ``k, v`` from ``_inputs``."""
    if p.block:
        n, H, _, D = k.shape
        qb = q.reshape(n, p.block, H, D).transpose(1, 2)  # (n, H, block, D), a view
        out = F.scaled_dot_product_attention(qb, k, v, attn_mask=band.block_mask)  # (n, H, block, D)
        return out.transpose(1, 2).reshape(1, n * p.block, H, D)
    (tq, tk), (off, left, right, _) = (q.shape[1], k.shape[1]), band
    # Where the band is plain causal, is_causal lets the kernel skip the upper triangle.
    causal = right == 0 and off + p.q0 == p.k0 and tq == tk and left >= tq - 1 and tq > 1
    mask = None if causal else _mask(off + p.q0, tq, p.k0, tk, left, right, q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),  # (B, H, Tq, D), a view: the kernel only needs the last dim contiguous
        k.transpose(1, 2),  # (B, H, Tk, D)
        v.transpose(1, 2),
        attn_mask=mask,
        is_causal=causal,
    )
    return out.transpose(1, 2)  # (B, Tq, H, D)


def _fold(gx: torch.Tensor, p: _Piece, g: torch.Tensor) -> None:
    """Add a piece's key (or value) gradient ``g`` into ``gx`` (B, Tk, H, D) where its keys came from."""
    if not p.block:
        gx[p.rows, p.k0 : p.k1] += g
        return
    n, m = (p.q1 - p.q0) // p.block, p.span // p.block
    # Window i's j-th block of keys is key block i + j: m aligned adds, not a scatter.
    blocks = gx[p.rows, p.k0 : p.k1].unflatten(1, (n + m - 1, p.block))  # (1, n + m - 1, block, H, D)
    g = g.transpose(1, 2).unflatten(1, (m, p.block))  # (n, m, block, H, D)
    for j in range(m):
        blocks[0, j : j + n] += g[:, j]


class _Banded(torch.autograd.Function):
    """All pieces in one autograd node, each piece's gradient folded back as soon as it exists.

    Through plain autograd every window's key and value gradient (``span /
    block`` times ``k``) would stay alive until the last block is done and
    every slice would get its own full-size zero gradient; here each piece
    runs its own small SDPA graph in backward and is summed into one buffer
    while still in cache. No double backward.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pieces: list[_Piece],
        band: _Band,
    ) -> torch.Tensor:
        qd, kd, vd = q.detach(), k.detach(), v.detach()
        out = q.new_empty(q.shape)  # (B, Tq, H, D)
        graphs = []
        with torch.enable_grad():
            for p in pieces:
                ins = tuple(t.requires_grad_() for t in _inputs(p, qd, kd, vd))
                o = _attend(p, *ins, band)
                out[p.rows, p.q0 : p.q1] = o.detach()
                graphs.append((ins, o))
        ctx.graphs, ctx.pieces, ctx.k_shape = graphs, pieces, k.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gq = grad.new_empty(grad.shape)  # the pieces tile the queries
        gk, gv = grad.new_zeros(ctx.k_shape), grad.new_zeros(ctx.k_shape)
        for p, (ins, o) in zip(ctx.pieces, ctx.graphs, strict=True):
            # retain_graph: a caller's retain_graph=True must be able to run this again.
            g_q, g_k, g_v = torch.autograd.grad(o, ins, grad[p.rows, p.q0 : p.q1], retain_graph=True)
            gq[p.rows, p.q0 : p.q1] = g_q
            _fold(gk, p, g_k)
            _fold(gv, p, g_v)
        return gq, gk, gv, None, None


def _example_state(B: int, H: int, D: int, generator: torch.Generator, dtype: torch.dtype) -> State:
    # Fewer positions than the example window (17): the cache is partly full.
    return {name: torch.randn(B, 5, H, D, generator=generator, dtype=dtype) for name in ("k", "v")}


@register_kind(
    "sliding",
    KindSpec(
        reference=naive_sliding_attention,
        options=("window",),
        example_state=_example_state,
        example_options={"window": 17},
    ),
)
def sliding_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    window: int = 256,
    block: int | None = None,
) -> tuple[torch.Tensor, State | None]:
    """Attention over a band of ``window`` keys; ``block`` overrides the query block size (tests, tuning)."""
    if window < 1:
        raise UserError(f"sliding attention needs window >= 1, got {window}")
    if state is not None:
        if "k" in state:
            k = torch.cat([state["k"], k], dim=1)  # (B, Tc + T, H, D)
            v = torch.cat([state["v"], v], dim=1)
        # An explicit start: slicing at -(window - 1) would keep everything for window 1.
        keep = max(k.shape[1] - (window - 1), 0)
        # Copies, so the cache does not pin a long prompt's keys in memory.
        state = {"k": k[:, keep:].clone(), "v": v[:, keep:].clone()}
    left, right = (window - 1, 0) if causal else (window // 2, window // 2)
    (B, tq, H, D), tk = q.shape, k.shape[1]
    block = block or default_block(window)
    # Windows are whole blocks, so their gradients fold back with aligned
    # adds; the few extra keys on the left are masked.
    span = -(-(block + left + right) // block) * block
    pieces = _plan(B, tq, tk, left, right, block, span, _group(span, H, D, q.element_size()))
    if len(pieces) == 1 and not pieces[0].block:  # short or decoding: one dense SDPA, plain autograd
        return _attend(pieces[0], q, k, v, _Band(tk - tq, left, right, None)), state
    # Query i of a block sits at window offset span - block - right + i.
    band = _Band(tk - tq, left, right, _mask(span - block - right, block, 0, span, left, right, q.device))
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _Banded.apply(q, k, v, pieces, band), state
    out = q.new_empty(q.shape)  # (B, Tq, H, D)
    for p in pieces:
        out[p.rows, p.q0 : p.q1] = _attend(p, *_inputs(p, q, k, v), band)
    return out, state
