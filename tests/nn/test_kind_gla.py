"""GLA beyond the shared contract: what the gates promise, strong decays, chunk sizes, modules, fla dispatch.

The contract in ``test_attention.py`` already holds the kind to its naive
twin (outputs, states, gradients, decoding) with moderate decays, which all
take the fast intra-chunk form; these reach the redo as shorter chunks that
strong decays need, and the parts the contract never reaches.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from glassbox.nn.attention import SPECS, attention
from glassbox.nn.blocks import MultiHeadAttention
from glassbox.nn.kinds import gla
from glassbox.nn.kinds.gla_naive import naive_gla

TIGHT = {"rtol": 1e-9, "atol": 1e-10}


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _qkv(B: int, T: int, H: int, D: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    return [_randn(B, T, H, D, seed=s, dtype=dtype) for s in range(3)]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_no_decay_is_unnormalized_linear_attention(causal: bool) -> None:
    B, T, H, D = 2, 50, 2, 8
    q, k, v = _qkv(B, T, H, D)
    out, _ = attention(q, k, v, kind="gla", causal=causal, g=torch.zeros_like(k), chunk_size=16)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * D**-0.5  # (B, H, T, T)
    # Bidirectional: the mean of the forward scan (j <= i) and the reversed one (j >= i).
    mixed = scores.tril() if causal else (scores.tril() + scores.triu()) / 2
    torch.testing.assert_close(out, torch.einsum("bhij,bjhd->bihd", mixed, v), **TIGHT)


@pytest.mark.parametrize(
    "decay",
    ["near-limit", "strong", "extreme"],
    ids=lambda d: d,
)
def test_strong_decay_float32_stays_finite_and_matches_the_float64_twin(decay: str) -> None:
    B, T, H, D = 2, 130, 2, 8
    q, k, v = (x.float().requires_grad_() for x in _qkv(B, T, H, D))
    u = torch.rand(B, T, H, D, generator=torch.Generator().manual_seed(5))
    g = {
        # A chunk of 64 decays by 109, just inside the fast form's limit of 120 (factors up to e^55).
        "near-limit": torch.full_like(u, -1.7),
        # Down to -5 per step: chunks of 64 are redone as chunks of 16.
        "strong": -5 * u,
        # Down to -300: even chunks of 16 are too strong, down to single steps.
        "extreme": -300 * u,
    }[decay].requires_grad_()
    start = _randn(B, H, D, D, seed=7, dtype=torch.float32).requires_grad_()
    out, state = attention(q, k, v, kind="gla", causal=True, state={"S": start}, g=g, chunk_size=64)
    (out.square().sum() + state["S"].sum()).backward()
    for t in (out, state["S"], q.grad, k.grad, v.grad, g.grad, start.grad):
        assert torch.isfinite(t).all()
    ref, ref_state = naive_gla(
        *(x.detach().double() for x in (q, k, v)),
        causal=True,
        state={"S": start.detach().double()},
        g=g.double(),
    )
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state["S"].double(), ref_state["S"], rtol=1e-4, atol=1e-4)


def test_chunks_with_strong_and_mild_decay_mix_both_forms_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Head 0 decays strongly (redone as shorter chunks), head 1 mildly (fast form): all stays exact."""
    # A low limit makes "strong" a decay whose effect float64 can still see,
    # so the redone chunks' gradients are checked on numbers that matter.
    monkeypatch.setitem(gla.LIMIT, torch.float64, 3.0)
    monkeypatch.setattr(gla, "SUB", 8)
    B, T, H, D = 2, 70, 2, 8
    q, k, v = _qkv(B, T, H, D)
    gen = torch.Generator().manual_seed(5)
    rate = torch.tensor([2.0, 0.01], dtype=torch.float64)[:, None]  # (H, 1): head 0 strong, head 1 mild
    g = -rate * torch.rand(B, T, H, D, generator=gen, dtype=torch.float64)
    start = _randn(B, H, D, D, seed=7)
    leaves = [q, k, v, g, start]
    for t in leaves:
        t.requires_grad_()
    calls = []
    chunked = gla._chunked

    def spy(q, k, v, g, S, chunk_size):
        calls.append((q.shape[0], q.shape[1], chunk_size))  # (batch, length, chunk)
        return chunked(q, k, v, g, S, chunk_size)

    monkeypatch.setattr(gla, "_chunked", spy)
    out, state = attention(q, k, v, kind="gla", causal=True, state={"S": start}, g=g, chunk_size=32)
    ref, ref_state = naive_gla(q, k, v, causal=True, state={"S": start}, g=g)
    # Head 0's 3 chunks per sequence are redone as chunks of 8, and those
    # (4 + 4 + 1 with real steps per sequence) as single steps; head 1 never.
    assert calls == [(B, T, 32), (B * 3, 32, 8), (B * 9, 8, 1)]
    torch.testing.assert_close(out, ref, **TIGHT)
    torch.testing.assert_close(state["S"], ref_state["S"], **TIGHT)
    w = _randn(*out.shape, seed=9)
    got = torch.autograd.grad([out, state["S"]], leaves, [w, torch.ones_like(start)])
    want = torch.autograd.grad([ref, ref_state["S"]], leaves, [w, torch.ones_like(start)])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_chunk_sizes_agree(causal: bool) -> None:
    B, T, H, D = 2, 100, 2, 8
    q, k, v = _qkv(B, T, H, D)
    g = F.logsigmoid(_randn(B, T, H, D, seed=3) * 3)
    state = {"S": _randn(B, H, D, D, seed=4)} if causal else None
    outs = [
        attention(q, k, v, kind="gla", causal=causal, state=state, g=g, chunk_size=c) for c in (1, 7, 64, 300)
    ]
    for out, new in outs[1:]:
        torch.testing.assert_close(out, outs[0][0], **TIGHT)
        if causal:
            torch.testing.assert_close(new["S"], outs[0][1]["S"], **TIGHT)


def test_gates_and_output_modules_have_the_right_shapes_and_signs() -> None:
    dim, H = 32, 4
    spec = SPECS["gla"]
    x = torch.randn(3, 11, dim) * 10  # large inputs push some gates towards strong decay
    g = spec.extras(dim, H, dim // H)(x)["g"]
    assert g.shape == (3, 11, H, dim // H)
    assert (g <= 0).all() and torch.isfinite(g).all()
    y = torch.randn(3, 11, H, dim // H)
    assert spec.post(dim, H, dim // H)(y, x).shape == y.shape
    # In a block, token-by-token decoding reproduces the full causal forward.
    mha = MultiHeadAttention(dim, H, attention="gla", causal=True, options={"chunk_size": 4})
    with torch.no_grad():
        full, _ = mha(x[:, :9] / 10)
        state: dict = {}
        steps = []
        for t in range(9):
            y, state = mha(x[:, t : t + 1] / 10, state)
            steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head_first_flag", [True, False], ids=["fla-with-head_first", "fla-without"])
def test_fla_dispatch_with_a_fake_module(monkeypatch: pytest.MonkeyPatch, head_first_flag: bool) -> None:
    calls: list[dict] = []

    def fake_chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, **kw):
        calls.append({"shapes": (q.shape, g.shape), "scale": scale, "S0": initial_state, "kw": kw})
        calls[-1]["dtype"] = g.dtype
        out, st = naive_gla(q, k, v, causal=True, state={"S": initial_state}, g=g, scale=scale)
        return out, (st["S"] if output_final_state else None)

    if head_first_flag:

        def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, head_first=True):
            return fake_chunk_gla(q, k, v, g, scale, initial_state, output_final_state, head_first=head_first)
    else:
        chunk_gla = fake_chunk_gla
    fla = types.ModuleType("fla")
    fla.ops = types.ModuleType("fla.ops")
    fla.ops.gla = types.ModuleType("fla.ops.gla")
    fla.ops.gla.chunk_gla = chunk_gla
    for name, mod in [("fla", fla), ("fla.ops", fla.ops), ("fla.ops.gla", fla.ops.gla)]:
        monkeypatch.setitem(sys.modules, name, mod)
    assert not gla._use_fla(torch.zeros(1))  # CPU tensors never go to fla, installed or not
    monkeypatch.setattr(gla, "_use_fla", lambda q: True)

    B, T, H, D = 1, 6, 2, 4
    q, k, v = _qkv(B, T, H, D, dtype=torch.float32)
    g = F.logsigmoid(_randn(B, T, H, D, seed=3, dtype=torch.float32))
    start = _randn(B, H, D, D, seed=4, dtype=torch.float32)
    out, state = attention(q, k, v, kind="gla", causal=True, state={"S": start}, g=g)
    (call,) = calls
    assert call["shapes"] == ((B, T, H, D), (B, T, H, D))  # (B, T, H, D), time second
    assert call["scale"] == D**-0.5 and call["S0"].dtype == torch.float32 and call["dtype"] == torch.float32
    assert call["kw"] == ({"head_first": False} if head_first_flag else {})
    ref, ref_state = naive_gla(q, k, v, causal=True, state={"S": start}, g=g)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(state["S"], ref_state["S"])
    # One decoding token stays on the recurrent step; bidirectional runs both directions in one call.
    attention(q[:, :1], k[:, :1], v[:, :1], kind="gla", causal=True, state=state, g=g[:, :1])
    assert len(calls) == 1
    attention(q, k, v, kind="gla", causal=False, g=g)
    assert len(calls) == 2 and calls[-1]["shapes"][0] == (2 * B, T, H, D) and calls[-1]["S0"] is None
