"""DeltaNet beyond the shared contract: what the delta rule promises, the WY form, fla dispatch.

The contract in ``test_attention.py`` already holds the kind to its naive
twin (outputs, states, gradients, decoding); these check properties the twin
shares and so could not catch, and the parts the contract never reaches.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

from glassbox.nn.attention import SPECS, attention
from glassbox.nn.blocks import MultiHeadAttention
from glassbox.nn.kinds import deltanet
from glassbox.nn.kinds.deltanet_naive import naive_deltanet

F64 = {"dtype": torch.float64}


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _orthonormal(D: int, seed: int = 0) -> torch.Tensor:
    return torch.linalg.qr(_randn(D, D, seed=seed))[0]  # rows are orthonormal


def test_orthogonal_keys_with_beta_one_store_and_overwrite_exact_pairs() -> None:
    D = 8
    keys, values = _orthonormal(D), _randn(D, D, seed=1)
    # Write every pair, then write key 0 again with a new value: the delta
    # rule replaces the old association instead of adding to it.
    new = _randn(D, seed=2)
    k = torch.cat([keys, keys[:1]])[None, :, None]  # (1, T, 1, D)
    v = torch.cat([values, new[None]])[None, :, None]
    beta = torch.ones(1, D + 1, 1, **F64)
    out, state = attention(k, k, v, kind="deltanet", causal=True, state={}, beta=beta, chunk_size=4)
    stored = values.clone()
    stored[0] = new
    close = {"rtol": 0, "atol": 1e-5}  # the l2norm's eps keeps |k| a hair under 1
    torch.testing.assert_close(state["S"][0, 0], keys.T @ stored, **close)  # S = sum_i k_i v_i^T
    # Each query k_t reads back its own value (scaled by D^-0.5), untouched by the others.
    torch.testing.assert_close(out[0, :, 0] * D**0.5, torch.cat([values, new[None]]), **close)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_chunk_sizes_agree(causal: bool) -> None:
    B, T, H, D = 2, 70, 2, 8  # 70: one full 64-chunk and a ragged one
    q, k, v = (_randn(B, T, H, D, seed=s) for s in range(3))
    beta = torch.sigmoid(_randn(B, T, H, seed=3))
    state = {"S": _randn(B, H, D, D, seed=4)} if causal else None
    outs = [
        attention(q, k, v, kind="deltanet", causal=causal, state=state, beta=beta, chunk_size=c)
        for c in (1, 7, 64, 300)
    ]
    for out, new in outs[1:]:
        torch.testing.assert_close(out, outs[0][0], rtol=1e-10, atol=1e-10)
        if causal:
            torch.testing.assert_close(new["S"], outs[0][1]["S"], rtol=1e-10, atol=1e-10)


def test_ut_transform_is_the_product_of_the_rank_one_updates() -> None:
    C, Dk, Dv = 5, 4, 3
    k = deltanet._l2norm(_randn(C, Dk))
    v, S0 = _randn(C, Dv, seed=1), _randn(Dk, Dv, seed=2)
    beta = torch.sigmoid(_randn(C, 1, seed=3))
    w, u = deltanet._wy(k, v, beta)
    # Step by step: S_t = (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T.
    decay, S = torch.eye(Dk, **F64), S0
    for t in range(C):
        step = torch.eye(Dk, **F64) - beta[t] * torch.outer(k[t], k[t])
        decay = step @ decay
        S = step @ S + beta[t] * torch.outer(k[t], v[t])
    torch.testing.assert_close(torch.eye(Dk, **F64) - k.T @ w, decay)
    torch.testing.assert_close(S0 + k.T @ (u - w @ S0), S)


def test_float32_stays_finite_and_close_over_a_long_sequence() -> None:
    B, T, H, D = 1, 2048, 2, 16
    q, k, v = (_randn(B, T, H, D, seed=s, dtype=torch.float32).requires_grad_() for s in range(3))
    # Writes near full strength on few distinct keys are the hard case for the solve.
    k = k.detach()[:, torch.arange(T) % 5].requires_grad_()
    beta = torch.sigmoid(_randn(B, T, H, seed=3, dtype=torch.float32) + 4).requires_grad_()
    out, _ = attention(q, k, v, kind="deltanet", causal=True, beta=beta)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, beta))
    ref, _ = attention(q.double(), k.double(), v.double(), kind="deltanet", causal=True, beta=beta.double())
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-4)


def test_half_precision_in_half_precision_out_with_a_float32_state() -> None:
    q, k, v = (_randn(1, 9, 2, 4, seed=s, dtype=torch.bfloat16) for s in range(3))
    beta = torch.sigmoid(_randn(1, 9, 2, seed=3, dtype=torch.bfloat16))
    out, state = attention(q, k, v, kind="deltanet", causal=True, state={}, beta=beta, chunk_size=4)
    ref, _ = naive_deltanet(q.double(), k.double(), v.double(), causal=True, state=None, beta=beta.double())
    assert out.dtype == torch.bfloat16 and state["S"].dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-2)


def test_bidirectional_is_the_mean_of_both_directions_and_has_no_state() -> None:
    q, k, v = (_randn(1, 9, 2, 4, seed=s) for s in range(3))
    beta = torch.sigmoid(_randn(1, 9, 2, seed=3))
    out, state = attention(q, k, v, kind="deltanet", beta=beta, chunk_size=4)
    fwd, _ = naive_deltanet(q, k, v, causal=True, state=None, beta=beta)
    bwd, _ = naive_deltanet(q.flip(1), k.flip(1), v.flip(1), causal=True, state=None, beta=beta.flip(1))
    torch.testing.assert_close(out, (fwd + bwd.flip(1)) / 2)
    assert state is None
    with pytest.raises(ValueError, match="no decoding state"):
        attention(q, k, v, kind="deltanet", state={}, beta=beta)


def test_extras_and_post_in_a_block() -> None:
    torch.manual_seed(0)  # float32 with a per-head RMSNorm after: keep the inputs fixed
    spec = SPECS["deltanet"]
    betas = spec.extras(16, 2, 8)(torch.randn(3, 5, 16) * 10)["beta"]
    assert betas.shape == (3, 5, 2) and ((betas > 0) & (betas < 1)).all()
    mha = MultiHeadAttention(16, 2, attention="deltanet", causal=True, options={"chunk_size": 4, "window": 3})
    assert mha.options == {"chunk_size": 4}
    x = torch.randn(2, 7, 16)
    y, _ = mha(x)
    y.sum().backward()
    assert y.shape == x.shape and mha.extras.proj.weight.grad is not None
    # Decoding through the block, one token after a prompt, matches the full pass.
    with torch.no_grad():
        head, state = mha(x[:, :6], state={})
        last, _ = mha(x[:, 6:], state=state)
        torch.testing.assert_close(torch.cat([head, last], 1), mha(x)[0], rtol=1e-4, atol=1e-5)


def test_cuda_inputs_dispatch_to_fla_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, **kw):
        calls.append({"shape": tuple(q.shape), "beta": tuple(beta.shape), "scale": scale, **kw})
        calls[-1].update(initial_state=initial_state, output_final_state=output_final_state)
        return torch.zeros_like(v), (torch.ones(q.shape[0], q.shape[2], 4, 4) if output_final_state else None)

    fake = types.ModuleType("fla.ops.delta_rule")
    fake.chunk_delta_rule = chunk_delta_rule
    for name in ("fla", "fla.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "fla.ops.delta_rule", fake)
    monkeypatch.setattr(deltanet, "_use_fla", lambda q: True)

    q = k = v = torch.randn(2, 6, 3, 4)  # (B, T, H, D), fla's layout as is
    beta, S0 = torch.rand(2, 6, 3), torch.randn(2, 3, 4, 4)
    out, state = attention(q, k, v, kind="deltanet", causal=True, state={"S": S0}, beta=beta)
    assert torch.equal(out, torch.zeros_like(v)) and torch.equal(state["S"], torch.ones(2, 3, 4, 4))
    call = calls.pop()
    assert call["shape"] == (2, 6, 3, 4) and call["beta"] == (2, 6, 3) and call["scale"] == 0.5
    assert call["initial_state"] is S0 and call["output_final_state"] is True
    assert call["use_qk_l2norm_in_kernel"] is True  # raw q, k go in; fla normalises
    attention(q, k, v, kind="deltanet", causal=False, beta=beta)
    assert calls.pop()["shape"] == (4, 6, 3, 4)  # both directions in one doubled batch
    # A single decoding token stays on the plain recurrence.
    attention(q[:, :1], k[:, :1], v[:, :1], kind="deltanet", causal=True, state={"S": S0}, beta=beta[:, :1])
    assert not calls


def test_cpu_inputs_never_reach_fla() -> None:
    assert not deltanet._use_fla(torch.zeros(1))
