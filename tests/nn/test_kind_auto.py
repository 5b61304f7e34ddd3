"""``auto`` picks softmax below the crossover and linear above it, and decoding keeps its choice."""

from __future__ import annotations

import torch

from glassbox.nn.attention import SPECS, attention
from glassbox.nn.kinds import auto


def _qkv(T: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, T, 2, 8, generator=g, dtype=torch.float64) for _ in range(3)]


def test_auto_is_softmax_when_short_and_linear_when_long(monkeypatch):
    monkeypatch.setattr(auto, "CROSSOVER", 16)
    for T, kind in [(15, "softmax"), (16, "linear"), (40, "linear")]:
        q, k, v = _qkv(T)
        got, _ = attention(q, k, v, kind="auto", causal=True, chunk_size=8)
        options = {"chunk_size": 8} if kind == "linear" else {}
        want, _ = attention(q, k, v, kind=kind, causal=True, **options)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        ref, _ = SPECS["auto"].reference(q, k, v, causal=True, state=None, chunk_size=8)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)


def test_decoding_keeps_the_first_choice(monkeypatch):
    monkeypatch.setattr(auto, "CROSSOVER", 16)
    q, k, v = _qkv(20)
    _, state = attention(q[:, :20], k[:, :20], v[:, :20], kind="auto", causal=True, state={})
    assert state["kind"] == "linear"
    assert set(state) == {"kind", "S", "z"}
    _, state = attention(q[:, :4], k[:, :4], v[:, :4], kind="auto", causal=True, state={})
    for t in range(4, 20):  # the cache grows past the crossover, the kind stays
        _, state = attention(
            q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], kind="auto", causal=True, state=state
        )
    assert state["kind"] == "softmax" and state["k"].shape[1] == 20


def test_resolve_auto():
    assert auto.resolve_auto(auto.CROSSOVER - 1) == "softmax"
    assert auto.resolve_auto(auto.CROSSOVER) == "linear"


def test_build_model_resolves_auto_once_and_the_spec_keeps_it():
    from glassbox.config import ModelConfig
    from glassbox.data.base import Dataset
    from glassbox.nn import build_model, model_from_spec

    def text(T: int) -> Dataset:
        X = torch.randint(0, 256, (4, T + 1))
        return Dataset("t", "text", "lm", X, torch.zeros(4, dtype=torch.long))

    cfg = ModelConfig(dim=16, heads=2, depth=1, max_len=2048)
    assert cfg.attention == "auto"
    short = build_model(cfg, text(auto.CROSSOVER - 1))
    long = build_model(cfg, text(auto.CROSSOVER))
    assert {b.attn.kind for b in short.blocks} == {"softmax"}
    assert {b.attn.kind for b in long.blocks} == {"linear"}
    assert long.spec_["attention"] == "linear" and long.spec_["model"]["attention"] == "auto"
    assert {b.attn.kind for b in model_from_spec(long.spec_).blocks} == {"linear"}
