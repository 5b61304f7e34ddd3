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

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from glassbox.registry import Registry

# A kind's decoding memory: tensors (a KV cache, a recurrent matrix) and,
# for ``auto``, the name of the kind it chose.
State = dict[str, Any]


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


@dataclass(frozen=True)
class KindSpec:
    """What the model, the contract tests and the benchmarks need to know about a kind.

    ``reference`` is the naive twin with the kind's own signature: the slow,
    obviously right definition (a loop over time for recurrent kinds) that
    the fast form is held to, outputs, states and gradients alike.
    """

    reference: AttentionKind
    # Recipe options (ModelConfig fields) the kind accepts as keyword arguments.
    options: tuple[str, ...] = ()
    # False for kinds whose recurrence has a direction and no bidirectional form.
    bidirectional: bool = True
    # Builds the module that computes per-step inputs from the block input
    # x (B, T, dim), e.g. gates or write strengths: fn(dim, heads, head_dim)
    # -> nn.Module whose forward(x) returns a dict of keyword arguments.
    extras: Callable[[int, int, int], nn.Module] | None = None
    # Applied to the kind's output y (B, T, H, D) before the output
    # projection, given the block input x: fn(dim, heads, head_dim) ->
    # nn.Module with forward(y, x) -> y (e.g. GLA's per-head norm and output gate).
    post: Callable[[int, int, int], nn.Module] | None = None
    # Random per-step inputs for tests and benchmarks, each shaped (B, T, ...):
    # fn(B, T, H, D, generator, dtype) -> kwargs.
    example_inputs: Callable[..., dict[str, torch.Tensor]] | None = None
    # A random, valid state to start decoding from: fn(B, H, D, generator, dtype) -> State.
    example_state: Callable[..., State] | None = None
    # Options the contract tests use, chosen so short test sequences still
    # cross chunk and window boundaries (e.g. {"window": 17}).
    example_options: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, KindSpec] = {}


def register_kind(name: str, spec: KindSpec) -> Callable[[AttentionKind], AttentionKind]:
    """Register ``fn`` as attention kind ``name``; the contract test then covers it."""

    def deco(fn: AttentionKind) -> AttentionKind:
        KINDS.register(name)(fn)
        SPECS[name] = spec
        return fn

    return deco


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
    fn = SPECS[kind].reference if _REFERENCE.get() and kind in SPECS else KINDS.get(kind)
    return fn(q, k, v, causal=causal, state=state, **kwargs)


_REFERENCE: contextvars.ContextVar[bool] = contextvars.ContextVar("reference_kernels", default=False)


@contextlib.contextmanager
def reference_kernels() -> Iterator[None]:
    """Run every attention call through its kind's naive twin while inside this block.

    The fused kernels (SDPA's CPU flash kernel, the hand-written chunkwise
    backwards) are differentiable once; the twins are plain PyTorch and can
    be differentiated twice, which Hessian-vector products need.

    >>> import torch
    >>> q = torch.randn(1, 3, 1, 4, dtype=torch.float64, requires_grad=True)
    >>> with reference_kernels():
    ...     y, _ = attention(q, q, q)
    ...     (g,) = torch.autograd.grad(y.sum(), q, create_graph=True)
    ...     (h,) = torch.autograd.grad(g.sum(), q)
    >>> h.shape
    torch.Size([1, 3, 1, 4])
    """
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def _chunk_causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """``(1, 1, tq, tk)`` bool, True where query ``i`` (at position ``tk - tq + i``) may look.

    4-D on purpose: SDPA's CPU flash kernel accepts 2-D and 4-D masks but a
    3-D one silently sends it down the slow math path.
    """
    rows = torch.arange(tq, device=device)[:, None] + (tk - tq)
    cols = torch.arange(tk, device=device)[None, :]
    return (cols <= rows)[None, None]


def _naive_softmax(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    key_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State | None]:
    from glassbox.nn.naive import naive_softmax_attention, softmax_weights

    if state is not None:
        if key_bias is not None:
            raise ValueError("key_bias is for full-sequence attention, not for decoding with a state")
        if "k" in state:
            k, v = torch.cat([state["k"], k], 1), torch.cat([state["v"], v], 1)
        state = {"k": k, "v": v}
    if key_bias is None:
        return naive_softmax_attention(q, k, v, causal=causal, scale=scale), state
    # softmax(s + b) is softmax(s) reweighted by exp(b) and renormalised:
    # the definition of a bias that counts a key exp(b) times.
    w = softmax_weights(q, k, causal=causal, scale=scale) * key_bias.exp()[:, None, None, :]  # (B, H, Tq, Tk)
    w = w / w.sum(-1, keepdim=True)
    return torch.einsum("bhqk,bkhd->bqhd", w, v), state


def _example_cache(B: int, H: int, D: int, generator: torch.Generator, dtype: torch.dtype) -> State:
    return {name: torch.randn(B, 3, H, D, generator=generator, dtype=dtype) for name in ("k", "v")}


@register_kind("softmax", KindSpec(reference=_naive_softmax, example_state=_example_cache))
def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    key_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State | None]:
    """Scaled dot-product attention with an optional KV cache ``{"k", "v"}``.

    ``dropout_p > 0`` is allowed but costs the fused CPU kernel (PyTorch only
    fuses dropout-free attention on CPU), which is why the blocks drop out
    after the projection instead.

    ``key_bias`` ``(B, Tk)`` is added to every query's logit for that key;
    token merging passes ``log(size)`` so that a merged token counts as the
    tokens it stands for (proportional attention). It goes to SDPA as a 4-D
    float mask, which keeps the fused CPU kernel, forward and backward, as
    long as the bias itself needs no gradient (one that does runs the math
    path: still right, slower). Not available with a KV cache.
    """
    if key_bias is not None and state is not None:
        raise ValueError("key_bias is for full-sequence attention, not for decoding with a state")
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
    if key_bias is not None:
        bias = key_bias.to(q.dtype)[:, None, None, :]  # (B, 1, 1, Tk): 4-D keeps the fused kernel
        if is_causal:
            mask, is_causal = _chunk_causal_mask(tq, tk, q.device), False  # SDPA takes a mask or is_causal
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
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


# The other kinds live in glassbox.nn.kinds, one module each; importing the
# package registers them. Placed last because they import KINDS from here.
from glassbox.nn import kinds as _kinds  # noqa: E402, F401
