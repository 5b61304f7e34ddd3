"""Contract tests for every registered attention kind, against its naive twin.

The parametrisation runs over ``KINDS.names()``, so a newly registered kind is
covered here without editing this file; it only needs a twin in
``glassbox.nn.naive.REFERENCES``.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from glassbox.errors import UserError
from glassbox.nn.attention import KINDS, attention
from glassbox.nn.naive import REFERENCES

# (B, T, H, D): a single token, odd lengths, and one past a power of two.
SHAPES = [(2, 1, 2, 8), (1, 7, 3, 5), (2, 64, 4, 16), (1, 130, 2, 8)]
TIGHT = {"rtol": 1e-9, "atol": 1e-10}  # float64: disagreement here is a bug, not rounding


def _qkv(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=dtype).requires_grad_() for _ in range(3)]


def _reference(kind: str):
    if kind not in REFERENCES:
        pytest.fail(f"attention kind '{kind}' has no naive twin in glassbox.nn.naive.REFERENCES")
    return REFERENCES[kind]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("kind", KINDS.names())
def test_kind_matches_naive_twin_outputs_and_grads(kind: str, causal: bool, shape: tuple[int, ...]) -> None:
    q, k, v = _qkv(shape)
    out, state = attention(q, k, v, kind=kind, causal=causal)
    expected = _reference(kind)(q, k, v, causal=causal)
    assert state is None
    assert out.shape == q.shape
    torch.testing.assert_close(out, expected, **TIGHT)

    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad_out)
    want = torch.autograd.grad(expected, (q, k, v), grad_out)
    for name, g, w in zip("qkv", got, want, strict=True):
        torch.testing.assert_close(g, w, **TIGHT, msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.mark.parametrize(
    "chunks",
    [[4, 1, 1, 1, 1, 1, 1], [4, 3, 3], [1] * 10, [10]],
    ids=["prefill-then-tokens", "prefill-then-chunks", "token-by-token", "prefill-only"],
)
@pytest.mark.parametrize("kind", KINDS.names())
def test_cached_decoding_matches_full_causal_forward(kind: str, chunks: list[int]) -> None:
    q, k, v = (t.detach() for t in _qkv((2, sum(chunks), 3, 8), seed=1))
    full, _ = attention(q, k, v, kind=kind, causal=True)
    state: dict = {}  # empty at prefill
    outs, start = [], 0
    for n in chunks:
        sl = slice(start, start + n)
        out, state = attention(q[:, sl], k[:, sl], v[:, sl], kind=kind, causal=True, state=state)
        assert out.shape == (2, n, 3, 8)
        outs.append(out)
        start += n
    torch.testing.assert_close(torch.cat(outs, dim=1), full, **TIGHT)


def test_softmax_cache_holds_every_key_and_value() -> None:
    q, k, v = (t.detach() for t in _qkv((1, 5, 2, 4)))
    _, state = attention(q[:, :3], k[:, :3], v[:, :3], causal=True, state={})
    _, state = attention(q[:, 3:], k[:, 3:], v[:, 3:], causal=True, state=state)
    assert torch.equal(state["k"], k) and torch.equal(state["v"], v)


def _sdpa_ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("case", ["full", "causal", "one-token-decode", "chunk-decode"], ids=lambda c: c)
def test_softmax_keeps_the_fused_cpu_kernel(case: str) -> None:
    # A 3-D mask or attention dropout silently sends SDPA to its slow math
    # path; this catches a change that does either.
    q, k, v = (t.detach().float() for t in _qkv((2, 9, 2, 8)))
    if case == "full":
        run = lambda: attention(q, k, v)  # noqa: E731
    elif case == "causal":
        run = lambda: attention(q, k, v, causal=True)  # noqa: E731
    else:
        n = 1 if case == "one-token-decode" else 3
        state = {"k": k[:, :-n], "v": v[:, :-n]}
        run = lambda: attention(q[:, -n:], k[:, -n:], v[:, -n:], causal=True, state=state)  # noqa: E731
    ops = _sdpa_ops(run)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops, sorted(ops)
    assert "aten::_scaled_dot_product_attention_math" not in ops


def test_unknown_kind_is_a_user_error_with_a_suggestion() -> None:
    q = k = v = torch.randn(1, 2, 1, 4)
    with pytest.raises(UserError, match="unknown attention kind 'sofmax'.*did you mean 'softmax'"):
        attention(q, k, v, kind="sofmax")


def test_every_kind_has_a_naive_twin() -> None:
    assert set(KINDS.names()) <= set(REFERENCES)
