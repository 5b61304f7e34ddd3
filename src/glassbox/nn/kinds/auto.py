"""``auto``: softmax for short sequences, linear attention for long ones.

Below the crossover length exact softmax attention is both better and, on a
CPU, faster (one fused kernel against a chunked scan); above it linear
attention's O(T) cost wins. The crossover is measured by
``glassbox bench attention`` (docs/BENCHMARKS.md) on this project's
reference machine, forward and backward, 1 thread.

A model never sees ``auto`` in its blocks: ``build_model`` resolves it once
from the model's longest sequence (``resolve_auto``), so training, decoding
and a reloaded model all use one kind. Called directly, ``auto`` decides by
the length of the keys at hand; when decoding, the first call's choice is
kept in the state so that later tokens keep using it.

>>> import torch
>>> from glassbox.nn.attention import attention
>>> q = k = v = torch.randn(1, 8, 2, 4)
>>> out, state = attention(q, k, v, kind="auto", causal=True, state={})
>>> state["kind"]
'softmax'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from glassbox.nn.attention import KINDS, SPECS, AttentionKind, KindSpec, State, register_kind

# Measured with `glassbox bench attention` (causal, B=1 H=4 D=64, float32,
# 1 thread; docs/BENCHMARKS.md): linear overtakes softmax at 348 tokens for
# forward + backward and at 433 for forward only. Models train, so the
# training crossover decides, rounded.
CROSSOVER = 350
SHORT, LONG = "softmax", "linear"


def resolve_auto(length: int) -> str:
    """The concrete kind ``auto`` stands for at sequences of ``length`` tokens."""
    return SHORT if length < CROSSOVER else LONG


def _pick(k: torch.Tensor, state: State | None) -> str:
    if state is not None and "kind" in state:
        return str(state["kind"])
    cached = 0 if state is None or "k" not in state else state["k"].shape[1]
    return resolve_auto(k.shape[1] + cached)


def _options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in options.items() if name in SPECS[kind].options}


def _inner_state(state: State | None) -> State | None:
    return None if state is None else {k: v for k, v in state.items() if k != "kind"}


def _run(
    fn_of: Callable[[str], AttentionKind],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    state: State | None,
    options: dict[str, Any],
) -> tuple[torch.Tensor, State | None]:
    kind = _pick(k, state)
    out, new = fn_of(kind)(q, k, v, causal=causal, state=_inner_state(state), **_options(kind, options))
    return out, (None if new is None else {**new, "kind": kind})


def _naive_auto(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, state: State | None, **options: Any
) -> tuple[torch.Tensor, State | None]:
    return _run(lambda kind: SPECS[kind].reference, q, k, v, causal, state, options)


@register_kind("auto", KindSpec(reference=_naive_auto, options=("chunk_size", "feature_map")))
def auto_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    state: State | None,
    **options: Any,
) -> tuple[torch.Tensor, State | None]:
    """Softmax or linear attention by length; see the module docstring."""
    return _run(KINDS.get, q, k, v, causal, state, options)
