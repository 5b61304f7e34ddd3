"""Attention rollout (Abnar & Zuidema 2020) and gradient-weighted rollout (Chefer, Gur, Wolf 2021).

Both read the attention maps that ``MultiHeadAttention`` keeps when
``record_maps`` is on (softmax attention only) and give one score per token;
``tokens_to_inputs`` spreads those scores back over the input so they are
attributions of the same shape as the input (tables: token ``j + 1`` is
feature ``j``; images: a patch's score is shared equally by its pixels).

- ``rollout``: per layer average the heads, add the identity (the residual
  path), renormalise each row, multiply through the layers; the CLS row says
  how much each token flowed into the classification token.
- ``grad_rollout`` (the generic, LRP-free version of Chefer et al.): per layer
  ``A_bar = mean_heads((dy/dA * A)^+)`` with ``y`` the target-class logit, and
  ``R <- R + A_bar R`` from ``R = I``; again the CLS row, CLS itself excluded.

>>> import torch
>>> maps = [torch.softmax(torch.randn(2, 3, 4, 4), -1) for _ in range(2)]  # (B, H, T, T) per layer
>>> r = rollout(maps)
>>> tuple(r.shape), bool(torch.allclose(r.sum(-1), torch.ones(2, 4)))
((2, 4, 4), True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from glassbox.nn.blocks import MultiHeadAttention


def attention_modules(model: nn.Module) -> list[MultiHeadAttention]:
    """The model's attention layers in forward order."""
    return [m for m in model.modules() if isinstance(m, MultiHeadAttention)]


def unsupported(model: nn.Module) -> str | None:
    """Why rollout cannot run on ``model``, or None when it can."""
    layers = attention_modules(model)
    if not layers:
        return "the model has no attention layers"
    kinds = sorted({m.kind for m in layers if m.kind != "softmax"})
    if kinds:
        return (
            f"attention rollout needs explicit attention maps, which only softmax attention has; "
            f"this model uses {', '.join(kinds)}"
        )
    if getattr(model, "merge_r", 0):
        return "token merging (merge_r > 0) changes the tokens between layers, so maps cannot be chained"
    return None


@contextmanager
def recording(model: nn.Module) -> Iterator[list[MultiHeadAttention]]:
    """Turn ``record_maps`` on for every attention layer; restore each layer's setting and maps after."""
    layers = attention_modules(model)
    saved = [(m.record_maps, m.maps) for m in layers]
    try:
        for m in layers:
            m.record_maps = True
        yield layers
    finally:
        for m, (flag, maps) in zip(layers, saved, strict=True):
            m.record_maps, m.maps = flag, maps


def rollout(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout ``(B, T, T)`` from per-layer maps ``(B, H, T, T)`` in forward order.

    Row ``i`` of the result is how token ``i`` of the last layer draws on the
    input tokens; rows sum to 1.
    """
    result: torch.Tensor | None = None
    for a in maps:
        a = a.mean(1)  # (B, T, T)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("rollout needs at least one attention map")
    return result


def grad_rollout(maps: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance ``R`` ``(B, T, T)``: ``R <- R + mean_h((grad * A)^+) R`` from ``R = I``."""
    if len(maps) != len(grads) or not maps:
        raise ValueError("grad_rollout needs one gradient per attention map, and at least one map")
    B, _, T, _ = maps[0].shape
    r = torch.eye(T, dtype=maps[0].dtype, device=maps[0].device).expand(B, T, T)
    for a, g in zip(maps, grads, strict=True):
        a_bar = (g * a).clamp(min=0).mean(1)  # (B, T, T)
        r = r + a_bar @ r
    return r


def maps_and_grads(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, grads: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The maps of one forward of ``x`` (eval mode assumed), and their gradients of the target logits.

    The target-class logits of the rows are summed before the backward: each
    row's map only affects its own logit, so every row gets its own gradient.
    """
    with recording(model) as layers, torch.set_grad_enabled(grads):
        logits = model(x)
        maps = [m.maps for m in layers]
        if any(a is None for a in maps):
            raise RuntimeError("an attention layer recorded no map")
        if not grads:
            return [a.detach() for a in maps], None  # type: ignore[union-attr]
        y = logits.gather(1, targets[:, None]).sum()
        g = torch.autograd.grad(y, maps)  # type: ignore[arg-type]
        return [a.detach() for a in maps], [t.detach() for t in g]  # type: ignore[union-attr]


def tokens_to_inputs(model: nn.Module, scores: torch.Tensor, input_shape: Sequence[int]) -> torch.Tensor:
    """Per-token scores ``(B, T - 1)`` (CLS excluded) as attributions ``(B, *input_shape)``.

    Tables: token ``j`` is feature ``j``. Images: patch ``p`` (row-major over
    the patch grid, as the tokenizer flattens it) shares its score equally
    among its ``C * patch * patch`` input values, so sums are kept.
    """
    kind = getattr(model, "kind", "tabular")
    if kind == "tabular":
        return scores
    if kind != "image":
        raise ValueError(f"no token-to-input map for {kind} models")
    C, H, W = (int(s) for s in input_shape)
    patch = int(model.tokenizer.patchify.kernel_size[0])  # type: ignore[union-attr, index]
    gh, gw = H // patch, W // patch
    grid = scores.reshape(-1, 1, gh, gw) / (C * patch * patch)
    grid = grid.repeat_interleave(patch, 2).repeat_interleave(patch, 3)  # (B, 1, H, W)
    return grid.expand(-1, C, -1, -1).contiguous()


def rollout_attributions(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, gradient: bool, batch_size: int = 256
) -> torch.Tensor:
    """``rollout`` (``gradient=False``) or ``grad_rollout`` CLS-row scores mapped onto ``x``'s shape."""
    out = []
    for start in range(0, len(x), batch_size):
        xb, tb = x[start : start + batch_size], targets[start : start + batch_size]
        maps, grads = maps_and_grads(model, xb, tb, grads=gradient)
        r = grad_rollout(maps, grads) if grads is not None else rollout(maps)  # type: ignore[arg-type]
        out.append(tokens_to_inputs(model, r[:, 0, 1:], x.shape[1:]))
    return torch.cat(out)
