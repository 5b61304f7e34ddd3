"""Contract tests for every registered attention kind, against its naive twin.

The parametrisation runs over ``KINDS.names()``, so a newly registered kind is
covered here without editing this file; its ``KindSpec`` names its naive twin.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from glassbox.errors import UserError
from glassbox.nn.attention import KINDS, SPECS, attention

# Lengths around a 64-token chunk, a single token, and one long enough to
# cross a default window or several chunks.
LENGTHS = [1, 63, 64, 65, 300]
B, H, D = 2, 2, 8
TIGHT = {"rtol": 1e-9, "atol": 1e-10}  # float64: disagreement here is a bug, not rounding


def _qkv(shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(3)]


def _floats(tree: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tree.items() if torch.is_tensor(v) and v.is_floating_point()}


def _inputs(kind: str, T: int, seed: int = 0, with_state: bool = False):
    """q, k, v (B, T, H, D), the kind's per-step inputs and options, and optionally a start state."""
    spec = SPECS[kind]
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, generator=g, dtype=torch.float64) for _ in range(3))
    extra = spec.example_inputs(B, T, H, D, g, torch.float64) if spec.example_inputs else {}
    state = None
    if with_state:
        state = spec.example_state(B, H, D, g, torch.float64) if spec.example_state else {}
    for t in [q, k, v, *_floats(extra).values(), *_floats(state or {}).values()]:
        t.requires_grad_()
    return q, k, v, extra, dict(spec.example_options), state


def _assert_same_grads(outputs, expected, leaves: dict[str, torch.Tensor]) -> None:
    g = torch.Generator().manual_seed(99)
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outputs]
    names, tensors = list(leaves), list(leaves.values())
    got = torch.autograd.grad(outputs, tensors, weights, allow_unused=True)
    want = torch.autograd.grad(expected, tensors, weights, allow_unused=True)
    for name, a, b in zip(names, got, want, strict=True):
        if a is None and b is None:
            continue
        assert a is not None and b is not None, f"grad of {name}: one side has none"
        torch.testing.assert_close(a, b, **TIGHT, msg=lambda m, name=name: f"grad of {name}: {m}")


def _state_tensors(state) -> list[torch.Tensor]:
    return [v for _, v in sorted(_floats(state or {}).items())]


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("kind", KINDS.names())
def test_kind_matches_naive_twin_outputs_and_grads(kind: str, causal: bool, T: int) -> None:
    spec = SPECS[kind]
    if not causal and not spec.bidirectional:
        pytest.skip(f"{kind} has no bidirectional form")
    q, k, v, extra, opts, _ = _inputs(kind, T)
    out, state = attention(q, k, v, kind=kind, causal=causal, **opts, **extra)
    expected, _ = spec.reference(q, k, v, causal=causal, state=None, **opts, **extra)
    assert state is None
    assert out.shape == v.shape
    torch.testing.assert_close(out, expected, **TIGHT)
    _assert_same_grads([out], [expected], {"q": q, "k": k, "v": v, **_floats(extra)})


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("kind", KINDS.names())
def test_kind_from_a_state_matches_naive_twin(kind: str, T: int) -> None:
    """Starting from a non-empty state: the new state and all gradients, the start state's included."""
    spec = SPECS[kind]
    q, k, v, extra, opts, start = _inputs(kind, T, seed=2, with_state=True)
    out, state = attention(q, k, v, kind=kind, causal=True, state=dict(start), **opts, **extra)
    expected, ref_state = spec.reference(q, k, v, causal=True, state=dict(start), **opts, **extra)
    torch.testing.assert_close(out, expected, **TIGHT)
    assert sorted(_floats(state)) == sorted(_floats(ref_state))
    for a, b in zip(_state_tensors(state), _state_tensors(ref_state), strict=True):
        torch.testing.assert_close(a, b, **TIGHT)
    leaves = {
        "q": q,
        "k": k,
        "v": v,
        **_floats(extra),
        **{f"state.{n}": t for n, t in _floats(start).items()},
    }
    _assert_same_grads([out, *_state_tensors(state)], [expected, *_state_tensors(ref_state)], leaves)


@pytest.mark.parametrize(
    "chunks",
    [[4, 1, 1, 1, 1, 1, 1], [4, 3, 3], [1] * 10, [10], [63, 1, 1, 65, 1]],
    ids=["prefill-then-tokens", "prefill-then-chunks", "token-by-token", "prefill-only", "across-chunks"],
)
@pytest.mark.parametrize("kind", KINDS.names())
def test_decoding_step_by_step_matches_the_parallel_form(kind: str, chunks: list[int]) -> None:
    q, k, v, extra, opts, _ = _inputs(kind, sum(chunks), seed=1)
    with torch.no_grad():
        full, _ = attention(q, k, v, kind=kind, causal=True, **opts, **extra)
        state: dict = {}  # empty at prefill
        outs, start = [], 0
        for n in chunks:
            sl = slice(start, start + n)
            step_extra = {name: t[:, sl] for name, t in extra.items()}  # per-step inputs are (B, T, ...)
            out, state = attention(
                q[:, sl], k[:, sl], v[:, sl], kind=kind, causal=True, state=state, **opts, **step_extra
            )
            assert out.shape == (B, n, H, D)
            outs.append(out)
            start += n
    torch.testing.assert_close(torch.cat(outs, dim=1), full, **TIGHT)


def test_softmax_cache_holds_every_key_and_value() -> None:
    q, k, v = _qkv((1, 5, 2, 4))
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
    q, k, v = (t.float() for t in _qkv((2, 9, 2, 8)))
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


def test_every_kind_has_a_spec_with_a_naive_twin() -> None:
    assert set(KINDS.names()) == set(SPECS)
    for kind, spec in SPECS.items():
        assert spec.reference is not KINDS.get(kind), f"{kind}: the twin must be a separate implementation"
