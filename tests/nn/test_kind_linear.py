"""Tests specific to the ``linear`` kind; the contract tests in test_attention.py cover the rest.

Those run only the spec's example options (elu, chunk 16), so here: both
feature maps against the twin, chunk sizes, the bidirectional formula,
memory, double backward, and the fla dispatch on a faked GPU.
"""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from glassbox.errors import UserError
from glassbox.nn.attention import attention
from glassbox.nn.blocks import Block
from glassbox.nn.kinds import linear as lin
from glassbox.nn.kinds.linear_naive import EPS as NAIVE_EPS
from glassbox.nn.kinds.linear_naive import naive_feature_map, naive_linear_attention

TIGHT = {"rtol": 1e-9, "atol": 1e-10}


def _qkv(B: int, T: int, H: int, D: int, seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, D, generator=g, dtype=dtype).requires_grad_() for _ in range(3)]


def _start_state(B: int, H: int, D: int, feature_map: str, seed: int = 5) -> dict[str, torch.Tensor]:
    # A reachable state: what a few real tokens leave behind.
    k, v = _qkv(B, 4, H, D, seed=seed)[:2]
    _, state = naive_linear_attention(k, k, v, causal=True, state={}, feature_map=feature_map)
    return {name: t.detach().requires_grad_() for name, t in state.items()}


@pytest.mark.parametrize("d", [1, 4, 16])
def test_taylor_features_reproduce_the_second_order_expansion_of_exp(d: int) -> None:
    q, k = _qkv(3, 5, 2, d)[:2]
    s = (q * k).sum(-1) / math.sqrt(d)
    phi_q, phi_k = lin.feature_map_fn(q, "taylor"), lin.feature_map_fn(k, "taylor")
    assert phi_q.shape[-1] == lin.feature_dim(d, "taylor") == 1 + d + d * (d + 1) // 2
    torch.testing.assert_close((phi_q * phi_k).sum(-1), 1 + s + s**2 / 2, **TIGHT)
    # The twin spells the map out pair by pair; states are compared entry by entry, so same order.
    torch.testing.assert_close(phi_q, naive_feature_map(q, "taylor"), **TIGHT)


def test_both_implementations_use_one_epsilon() -> None:
    assert lin.EPS == NAIVE_EPS


def _assert_matches_twin(T: int, causal: bool, with_state: bool, **kw) -> None:
    """Outputs, states and every gradient (the start state's included) against the twin, in float64."""
    B, H, D = 2, 2, 4
    q, k, v = _qkv(B, T, H, D, seed=T)
    start = _start_state(B, H, D, kw.get("feature_map", "elu")) if with_state else None
    out, state = attention(q, k, v, kind="linear", causal=causal, state=start and dict(start), **kw)
    want, want_state = naive_linear_attention(q, k, v, causal=causal, state=start and dict(start), **kw)
    torch.testing.assert_close(out, want, **TIGHT)
    outs, wants = [out], [want]
    if with_state:
        for name in ("S", "z"):
            torch.testing.assert_close(state[name], want_state[name], **TIGHT)
            outs.append(state[name])
            wants.append(want_state[name])
    leaves = [q, k, v, *(start or {}).values()]
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    got = torch.autograd.grad(outs, leaves, weights)
    expected = torch.autograd.grad(wants, leaves, weights)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("with_state", [False, True], ids=["fresh", "from-state"])
@pytest.mark.parametrize("T", [1, 37, 70])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("feature_map", ["elu", "taylor"])
def test_matches_the_twin_for_each_feature_map(
    feature_map: str, causal: bool, T: int, with_state: bool
) -> None:
    _assert_matches_twin(T, causal, with_state, feature_map=feature_map, chunk_size=16)


def test_gradients_through_the_state_alone() -> None:
    q, k, v = _qkv(1, 30, 2, 4, seed=7)
    kw = {"causal": True, "chunk_size": 8}
    _, state = attention(q, k, v, kind="linear", state={}, **kw)
    _, want = naive_linear_attention(q, k, v, state={}, **kw)
    got = torch.autograd.grad(state["S"].sum() + state["z"].sum(), [q, k, v], allow_unused=True)
    expected = torch.autograd.grad(want["S"].sum() + want["z"].sum(), [q, k, v], allow_unused=True)
    assert got[0] is None or not got[0].any()  # queries only read the state
    for a, b in zip(got[1:], expected[1:], strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("block_rows", [16, 48])
@pytest.mark.parametrize("feature_map", ["elu", "taylor"])
def test_work_split_into_blocks_matches_the_twin(
    monkeypatch: pytest.MonkeyPatch, feature_map: str, block_rows: int
) -> None:
    # B * H = 4 rows per token, chunks of 4: blocks of 1 and 3 chunks, the
    # last block ragged, the state carried from block to block both ways.
    monkeypatch.setattr(lin, "_BLOCK_ROWS", block_rows)
    _assert_matches_twin(37, True, True, feature_map=feature_map, chunk_size=4)


@pytest.mark.parametrize("feature_map", ["elu", "taylor"])
def test_chunk_size_changes_nothing_but_speed(feature_map: str) -> None:
    q, k, v = _qkv(1, 70, 2, 4, seed=3)
    start = _start_state(1, 2, 4, feature_map)
    results = []
    for chunk_size in (1, 7, 64, 300):
        out, state = attention(
            q,
            k,
            v,
            kind="linear",
            causal=True,
            state=dict(start),
            chunk_size=chunk_size,
            feature_map=feature_map,
        )
        (grad_q,) = torch.autograd.grad(out.square().sum() + state["S"].sum(), q)
        results.append((out, state["S"], state["z"], grad_q))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, **TIGHT)


def test_bidirectional_is_the_normalized_quadratic_formula() -> None:
    q, k, v = _qkv(2, 50, 3, 8, seed=4)
    out, _ = attention(q, k, v, kind="linear", causal=False)
    phi_q, phi_k = (torch.nn.functional.elu(x) + 1 for x in (q, k))
    scores = torch.einsum("bihf,bjhf->bhij", phi_q, phi_k)  # (B, H, T, T)
    want = torch.einsum("bhij,bjhd->bihd", scores, v) / (scores.sum(-1).transpose(1, 2)[..., None] + lin.EPS)
    torch.testing.assert_close(out, want, **TIGHT)


class _LargestTensor(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_no_tensor_grows_with_the_square_of_the_length(causal: bool) -> None:
    T, C = 1024, 32
    q, k, v = (x.detach().float().requires_grad_() for x in _qkv(1, T, 1, 8))
    with _LargestTensor() as mode:
        out, _ = attention(q, k, v, kind="linear", causal=causal, chunk_size=C)
        out.sum().backward()
    # Largest expected: the (T / C) chunks' (C, C) scores, T * C elements.
    assert mode.numel <= T * C < T * T // 16


def test_double_backward_goes_through_a_differentiable_replay() -> None:
    q, k, v = (x.detach()[:, :6].requires_grad_() for x in _qkv(1, 8, 1, 2, seed=6))
    start = _start_state(1, 1, 2, "elu")

    def fn(q, k, v, S, z):
        out, state = lin.linear_attention(q, k, v, causal=True, state={"S": S, "z": z}, chunk_size=4)
        return out, state["S"], state["z"]

    assert torch.autograd.gradgradcheck(fn, (q, k, v, start["S"], start["z"]), fast_mode=True)


def test_unknown_feature_map_is_a_user_error() -> None:
    q = torch.randn(1, 3, 1, 4)
    with pytest.raises(UserError, match="did you mean 'taylor'"):
        attention(q, q, q, kind="linear", feature_map="tailor")


def test_low_precision_inputs_keep_a_float32_state() -> None:
    q, k, v = (x.detach().bfloat16() for x in _qkv(1, 20, 2, 8))
    out, state = attention(q, k, v, kind="linear", causal=True, state={}, chunk_size=8)
    assert out.dtype == torch.bfloat16 and state["S"].dtype == state["z"].dtype == torch.float32


def test_block_passes_its_options_through() -> None:
    block = Block(
        dim=16, heads=2, attention="linear", causal=True, options={"chunk_size": 4, "feature_map": "taylor"}
    )
    assert block.attn.options == {"chunk_size": 4, "feature_map": "taylor"}
    y, _ = block(torch.randn(2, 9, 16))
    y.sum().backward()  # q, k, v reach the kind as strided views of one projection
    assert y.shape == (2, 9, 16) and block.attn.qkv.weight.grad.isfinite().all()


# --- the GPU path, with a fake fla on CPU tensors --------------------------------


def _fake_fla(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Install a fake ``fla.ops.linear_attn`` whose chunk kernel is a plain cumulative sum."""
    calls: list[dict] = []

    def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False, normalize=True):
        calls.append({"scale": scale, "normalize": normalize, "initial_state": initial_state})
        kv = torch.einsum("bthf,bthd->bthfd", k, v).cumsum(1)  # (B, T, H, F, Dv)
        if initial_state is not None:
            kv = kv + initial_state[:, None]
        o = torch.einsum("bthf,bthfd->bthd", q * scale, kv)
        return o, kv[:, -1].float() if output_final_state else None

    module = types.ModuleType("fla.ops.linear_attn")
    module.chunk_linear_attn = chunk_linear_attn
    monkeypatch.setitem(sys.modules, "fla", types.ModuleType("fla"))
    monkeypatch.setitem(sys.modules, "fla.ops", types.ModuleType("fla.ops"))
    monkeypatch.setitem(sys.modules, "fla.ops.linear_attn", module)
    monkeypatch.setattr(lin, "_use_fla", lambda q: True)  # pretend q is on CUDA
    return calls


def test_fla_is_only_used_on_cuda() -> None:
    assert not lin._use_fla(torch.randn(1, 2, 1, 4))


@pytest.mark.parametrize("with_state", [False, True], ids=["fresh", "from-state"])
def test_gpu_path_hands_the_numerator_to_fla_and_normalizes_itself(
    monkeypatch: pytest.MonkeyPatch, with_state: bool
) -> None:
    q, k, v = (x.detach().float().requires_grad_() for x in _qkv(2, 20, 2, 4))
    start = {n: t.detach().float() for n, t in _start_state(2, 2, 4, "elu").items()} if with_state else {}
    want, want_state = attention(q, k, v, kind="linear", causal=True, state=dict(start))
    calls = _fake_fla(monkeypatch)
    out, state = attention(q, k, v, kind="linear", causal=True, state=dict(start))
    assert len(calls) == 1 and calls[0]["scale"] == 1.0 and calls[0]["normalize"] is False
    assert (calls[0]["initial_state"] is not None) == with_state
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    for name in ("S", "z"):
        torch.testing.assert_close(state[name], want_state[name], rtol=1e-5, atol=1e-5)
    out.sum().backward()  # differentiable end to end
    assert q.grad is not None


@pytest.mark.parametrize(
    ("T", "causal", "feature_map", "dtype"),
    [
        (20, False, "elu", torch.float32),
        (1, True, "elu", torch.float32),
        (20, True, "taylor", torch.float32),
        (20, True, "elu", torch.float64),
    ],
    ids=["bidirectional", "one-token", "too-many-features", "float64"],
)
def test_gpu_path_falls_back_where_fla_does_not_fit(
    monkeypatch: pytest.MonkeyPatch, T: int, causal: bool, feature_map: str, dtype: torch.dtype
) -> None:
    q, k, v = (x.detach().to(dtype) for x in _qkv(1, T, 2, 32))  # taylor on 32 dims: 561 features
    calls = _fake_fla(monkeypatch)
    attention(q, k, v, kind="linear", causal=causal, feature_map=feature_map)
    assert calls == []
