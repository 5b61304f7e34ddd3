"""The sliding kind beyond the shared contract: its edge windows, its cache, its kernel, its memory.

The contract in ``test_attention.py`` checks one window (17) against the
naive twin; here several windows and block sizes do, and the blocked form is
held to the promises that make it worth having: the fused SDPA kernel and
no ``(T, T)`` tensor.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import glassbox.nn.kinds.sliding as sliding
from glassbox.errors import UserError
from glassbox.nn.attention import attention
from glassbox.nn.kinds.sliding_naive import naive_sliding_attention

TIGHT = {"rtol": 1e-9, "atol": 1e-10}  # float64: disagreement here is a bug, not rounding


def _qkv(B: int, T: int, H: int = 2, D: int = 8, seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, D, generator=g, dtype=dtype, requires_grad=True) for _ in range(3)]


def _assert_same_with_grads(got: torch.Tensor, want: torch.Tensor, leaves: list[torch.Tensor]) -> None:
    torch.testing.assert_close(got, want, **TIGHT)
    w = torch.randn(got.shape, generator=torch.Generator().manual_seed(9), dtype=got.dtype)
    for a, b in zip(torch.autograd.grad(got, leaves, w), torch.autograd.grad(want, leaves, w), strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_a_window_covering_the_sequence_is_full_softmax(causal: bool) -> None:
    q, k, v = _qkv(2, 70)
    out, _ = attention(q, k, v, kind="sliding", causal=causal, window=2 * 70 + 1)
    full, _ = attention(q, k, v, kind="softmax", causal=causal)
    _assert_same_with_grads(out, full, [q, k, v])


def test_window_one_causal_returns_v() -> None:
    q, k, v = _qkv(2, 130)
    out, _ = attention(q, k, v, kind="sliding", causal=True, window=1)
    torch.testing.assert_close(out, v, **TIGHT)


@pytest.mark.parametrize("window", [1, 2, 17, 64, 300])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("block", [None, 8], ids=["default-block", "block8"])
def test_windows_agree_with_the_naive_twin(window: int, causal: bool, block: int | None) -> None:
    q, k, v = _qkv(2, 203, seed=window)  # ragged: 203 is no multiple of any block
    out, _ = sliding.sliding_attention(q, k, v, causal=causal, state=None, window=window, block=block)
    want, _ = naive_sliding_attention(q, k, v, causal=causal, state=None, window=window)
    _assert_same_with_grads(out, want, [q, k, v])


def test_many_sdpa_calls_per_sequence_agree_with_the_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    # Long sequences split their blocks over several SDPA calls; test sizes
    # fit in one, so force two blocks a call.
    monkeypatch.setattr(sliding, "_group", lambda *sizes: 2)
    q, k, v = _qkv(2, 150)
    g = torch.Generator().manual_seed(5)
    cache = {n: torch.randn(2, 6, 2, 8, generator=g, dtype=torch.float64, requires_grad=True) for n in "kv"}
    out, state = sliding.sliding_attention(q, k, v, causal=True, state=dict(cache), window=20, block=8)
    want, ref_state = naive_sliding_attention(q, k, v, causal=True, state=dict(cache), window=20)
    _assert_same_with_grads(out, want, [q, k, v, cache["k"], cache["v"]])
    assert torch.equal(state["k"], ref_state["k"]) and torch.equal(state["v"], ref_state["v"])


def test_backward_runs_twice_with_retain_graph() -> None:
    # The blocked form runs each piece's SDPA graph inside its own backward;
    # a caller's retain_graph must still allow a second pass.
    q, k, v = _qkv(1, 120)
    out, _ = attention(q, k, v, kind="sliding", causal=True, window=9)
    first = torch.autograd.grad(out.sum(), [q, k, v], retain_graph=True)
    second = torch.autograd.grad(out.sum(), [q, k, v])
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("window", [1, 5, 40])
def test_the_state_keeps_exactly_the_last_window_minus_one(window: int) -> None:
    q, k, v = (t.detach() for t in _qkv(1, 30))
    _, state = attention(q[:, :3], k[:, :3], v[:, :3], kind="sliding", causal=True, state={}, window=window)
    assert state["k"].shape[1] == min(3, window - 1)
    _, state = attention(
        q[:, 3:], k[:, 3:], v[:, 3:], kind="sliding", causal=True, state=state, window=window
    )
    keep = min(30, window - 1)
    assert state["k"].shape == (1, keep, 2, 8)
    assert torch.equal(state["k"], k[:, 30 - keep :]) and torch.equal(state["v"], v[:, 30 - keep :])


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("case", ["causal", "bidirectional", "decode", "prefill-after-cache", "batch"])
def test_the_fused_cpu_kernel_is_used_forward_and_backward(case: str) -> None:
    B = 2 if case == "batch" else 1
    q, k, v = _qkv(B, 150, dtype=torch.float32)
    state = None
    if case == "decode":
        q, k, v = q[:, :1], k[:, :1], v[:, :1]
    if case in ("decode", "prefill-after-cache"):
        state = {"k": torch.randn(B, 16, 2, 8), "v": torch.randn(B, 16, 2, 8)}

    def run() -> None:
        out, _ = attention(q, k, v, kind="sliding", causal=case != "bidirectional", state=state, window=17)
        out.sum().backward()

    ops = _ops(run)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops, sorted(ops)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in ops, sorted(ops)
    assert "aten::_scaled_dot_product_attention_math" not in ops


def test_memory_stays_linear_in_the_sequence() -> None:
    T = 1024
    q, k, v = _qkv(1, T, H=1, D=4, dtype=torch.float32)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        out, _ = attention(q, k, v, kind="sliding", causal=True, window=8)
        out.sum().backward()
    biggest = max(
        (
            torch.Size(s).numel()
            for e in prof.key_averages(group_by_input_shape=True)
            for s in e.input_shapes
            if s
        ),
        default=0,
    )
    assert biggest < T * T // 16, biggest  # a (T, T) score matrix would be T * T


def test_a_window_below_one_is_a_user_error() -> None:
    q = k = v = torch.randn(1, 4, 1, 2)
    with pytest.raises(UserError, match="window >= 1"):
        attention(q, k, v, kind="sliding", causal=True, window=0)
