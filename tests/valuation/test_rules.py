"""Contract test over every registered per-example gradient rule: a new layer type is tested by being
registered. Reference: per-example gradients from torch.func (vmap of grad) in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from glassbox.valuation.rules import RULES, Call, Rule

RULE_TYPES = sorted(RULES, key=lambda c: c.__name__)


def _case(cls: type, seed: int = 0, captured: bool = True):
    rule = RULES[cls]
    module, make = rule.example()
    module = module.double()
    g = torch.Generator().manual_seed(seed)
    inputs = tuple(a.double() if a.is_floating_point() else a for a in make(g))
    with torch.no_grad():  # some parameters start at constants (norm weights); make every entry matter
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    out = module(*inputs)
    b = torch.randn(out.shape, generator=g, dtype=out.dtype)  # a made-up output gradient
    own = {k: p.detach() for k, p in module.named_parameters(recurse=False)}
    rest = {k: p.detach() for k, p in module.named_parameters() if k not in own}
    buffers = dict(module.named_buffers())

    def f(ps: dict, bi: torch.Tensor, *xi: torch.Tensor) -> torch.Tensor:
        y = functional_call(module, ({**ps, **rest, **buffers}), tuple(a.unsqueeze(0) for a in xi))
        return (y * bi.unsqueeze(0)).sum()  # its gradient is the example's gradient for output grad b

    per_ex = vmap(grad(f), in_dims=(None, 0, *[0] * len(inputs)))(own, b, *inputs)
    # What the forward hook keeps (a norm's saved statistics), or nothing: both paths must agree.
    kept = rule.capture(module, out) if captured else {}
    call = Call(module, tuple(a.detach() for a in inputs), b, cache=kept)
    return rule, call, per_ex, len(b)


@pytest.mark.parametrize("captured", [True, False], ids=["captured", "recomputed"])
@pytest.mark.parametrize("cls", RULE_TYPES, ids=lambda c: c.__name__)
def test_rule_grads_and_dots_match_per_example_gradients(cls: type, captured: bool) -> None:
    rule, call, per_ex, B = _case(cls, captured=captured)
    rows = slice(1, B)  # not starting at 0: the rows argument must be honoured
    got = rule.grads(call, rows)
    assert set(got) == set(per_ex)
    for k, g in per_ex.items():
        assert torch.allclose(got[k], g[rows].sum(0), rtol=1e-10, atol=1e-12), k
    V = {k: torch.randn(g.shape[1:], dtype=g.dtype) for k, g in per_ex.items()}
    expect = sum((per_ex[k][rows] * V[k]).flatten(1).sum(1) for k in per_ex)
    assert torch.allclose(rule.dot(call, rows, V), expect, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [nn.LayerNorm, nn.GroupNorm], ids=lambda c: c.__name__)
def test_norms_keep_their_saved_statistics(cls: type) -> None:
    # The fast path must actually be taken in training, or the test above checks one path twice.
    _, call, _, _ = _case(cls)
    assert "stats" in call.cache


@pytest.mark.parametrize(
    "cls", [c for c in RULE_TYPES if type(RULES[c]).ghost is not Rule.ghost], ids=lambda c: c.__name__
)
def test_ghost_dot_products_match_per_example_gradients(cls: type) -> None:
    rule, call, per_ex, B = _case(cls, seed=1)
    rows, vrows = slice(0, 2), slice(2, B)
    got = rule.ghost(call, rows, vrows)
    for k, g in per_ex.items():
        expect = g[rows].flatten(1) @ g[vrows].flatten(1).sum(0)  # sum_v <g_i, g_v>
        assert torch.allclose(got[k], expect, rtol=1e-10, atol=1e-12), k


def test_ghost_rule_follows_the_paper() -> None:
    """2 T S and S (d_in + d_out) against d_in d_out: long sequences use V a_t, short ones Gram matrices."""
    layer = torch.nn.Linear(64, 64)
    short = Call(layer, (torch.randn(3, 4, 64),), torch.randn(3, 4, 64))
    long = Call(layer, (torch.randn(3, 200, 64),), torch.randn(3, 200, 64))
    rule = RULES[torch.nn.Linear]
    assert rule.ghost_pays(short, slice(0, 2), slice(2, 3))  # 2 * 4 * 4 = 32 < 4096
    assert not rule.ghost_pays(long, slice(0, 2), slice(2, 3))  # 2 * 200 * 200 > 4096
    # Memory alone would allow 3 validation rows of 4 tokens beside 4 training tokens at width 16
    # (2 * 4 * 12 = 96 < 256), but the Gram rows cost 12 * 32 = 384 multiply-adds per token to dot's 256.
    narrow = torch.nn.Linear(16, 16)
    mixed = Call(narrow, (torch.randn(4, 4, 16),), torch.randn(4, 4, 16))
    assert not rule.ghost_pays(mixed, slice(0, 1), slice(1, 4))
    assert rule.ghost_pays(mixed, slice(0, 3), slice(3, 4))  # one validation row: 4 * 32 = 128 < 256
