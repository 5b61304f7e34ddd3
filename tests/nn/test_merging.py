"""Token merging (ToMe): the vectorised matching against its naive twin, proportional attention, the model."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from glassbox.config import ModelConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.nn import build_model, load_model, save_model
from glassbox.nn.attention import SPECS, attention
from glassbox.nn.blocks import Block, MultiHeadAttention
from glassbox.nn.merging import (
    bipartite_merge,
    match_tokens,
    merge_count,
    naive_bipartite_merge,
    naive_match_tokens,
)

TIGHT = {"rtol": 1e-10, "atol": 1e-12}  # float64: disagreement here is a bug, not rounding


def _tokens(B: int, N: int, C: int = 6, seed: int = 0, sizes: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, C, generator=g, dtype=torch.float64, requires_grad=True)
    metric = torch.randn(B, N, 4, generator=g, dtype=torch.float64)
    size = torch.randint(1, 4, (B, N, 1), generator=g).double() if sizes else None
    return x, metric, size


@pytest.mark.parametrize("protect_cls", [True, False], ids=["cls", "no-cls"])
@pytest.mark.parametrize(("N", "r"), [(9, 3), (10, 5), (17, 8), (8, 100), (2, 1), (1, 3), (7, 0)])
def test_vectorised_matches_naive_twin(N: int, r: int, protect_cls: bool) -> None:
    for sizes in (False, True):
        x, metric, size = _tokens(3, N, seed=N + r, sizes=sizes)
        src, dst = match_tokens(metric, r, protect_cls)
        pairs = naive_match_tokens(metric, r, protect_cls)
        for b in range(3):
            assert dict(zip(src[b].tolist(), dst[b].tolist(), strict=True)) == pairs[b]
        got, got_size = bipartite_merge(x, metric, r, size, protect_cls)
        want, want_size = naive_bipartite_merge(x, metric, r, size, protect_cls)
        if got_size is None:  # nothing merged and no sizes given
            got_size = torch.ones_like(want_size)
        torch.testing.assert_close(got, want, **TIGHT)
        torch.testing.assert_close(got_size, want_size, **TIGHT)
        w = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=got.dtype)
        (g_got,) = torch.autograd.grad(got, x, w, allow_unused=True)
        (g_want,) = torch.autograd.grad(want, x, w)
        torch.testing.assert_close(torch.zeros_like(x) if g_got is None else g_got, g_want, **TIGHT)


def test_cls_is_never_merged_even_when_it_has_a_twin() -> None:
    x, metric, _ = _tokens(2, 11, seed=3)
    metric = metric.clone()
    metric[:, 0] = metric[:, 1]  # CLS's best possible partner: cosine 1
    y, size = bipartite_merge(x, metric, r=100)
    assert torch.equal(y[:, 0], x[:, 0]) and (size[:, 0] == 1).all()
    assert 0 not in match_tokens(metric, 100)[0].flatten().tolist()


def test_sizes_sum_to_the_token_count_and_mass_is_kept() -> None:
    x, metric, _ = _tokens(2, 33, seed=4)
    y, size = x, None
    while y.shape[1] > 2:
        y, size = bipartite_merge(y, metric[:, : y.shape[1]], r=5, size=size)
        assert size is not None
        torch.testing.assert_close(size.sum(1), torch.full((2, 1), 33.0, dtype=size.dtype))
        # A size-weighted mean moves no mass: sum of size * token is invariant.
        torch.testing.assert_close((y * size).sum(1), x.sum(1), rtol=1e-10, atol=1e-10)


def test_merging_identical_tokens_leaves_them_unchanged() -> None:
    token = torch.randn(1, 1, 5, dtype=torch.float64)
    x = token.expand(2, 9, 5)
    y, _ = bipartite_merge(x, x, r=3, size=torch.randint(1, 5, (2, 9, 1)).double())
    assert y.shape == (2, 6, 5)
    torch.testing.assert_close(y, token.expand(2, 6, 5), **TIGHT)


def test_r_is_clamped_to_the_a_tokens_available() -> None:
    assert merge_count(9, 100) == 4  # A = 0, 2, 4, 6, 8, less CLS
    assert merge_count(9, 100, protect_cls=False) == 5
    assert merge_count(1, 3) == 0 and merge_count(2, 3, protect_cls=False) == 1 and merge_count(2, 3) == 0
    x, metric, _ = _tokens(2, 9)
    assert bipartite_merge(x, metric, 100)[0].shape == (2, 5, 6)
    same, size = bipartite_merge(x, metric, 0)
    assert same is x and size is None


# -- proportional attention ------------------------------------------------------------


def _qkv(B: int, T: int, seed: int = 0, grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, 2, 4, generator=g, dtype=torch.float64, requires_grad=grad) for _ in range(3)]


def test_a_token_of_size_n_attends_like_n_copies() -> None:
    q, k, v = _qkv(2, 5)
    size = torch.tensor([[1, 2, 3, 1, 4], [2, 1, 1, 5, 1]])
    out, _ = attention(q, k, v, key_bias=size.double().log())
    for b in range(2):
        rep = size[b]
        k_dup = k[b : b + 1].repeat_interleave(rep, dim=1)  # each key as many times as its size
        v_dup = v[b : b + 1].repeat_interleave(rep, dim=1)
        want, _ = attention(q[b : b + 1], k_dup, v_dup)
        torch.testing.assert_close(out[b : b + 1], want, **TIGHT)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_key_bias_matches_the_naive_twin_outputs_and_grads(causal: bool) -> None:
    q, k, v = _qkv(2, 7, seed=1, grad=True)
    bias = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
    out, _ = attention(q, k, v, causal=causal, key_bias=bias)
    want, _ = SPECS["softmax"].reference(q, k, v, causal=causal, state=None, key_bias=bias)
    torch.testing.assert_close(out, want, **TIGHT)
    w = torch.randn(out.shape, dtype=out.dtype)
    for a, b in zip(
        torch.autograd.grad(out, [q, k, v, bias], w),
        torch.autograd.grad(want, [q, k, v, bias], w),
        strict=True,
    ):
        torch.testing.assert_close(a, b, **TIGHT)


def test_key_bias_keeps_the_fused_cpu_kernel_forward_and_backward() -> None:
    q, k, v = (t.float().detach().requires_grad_() for t in _qkv(2, 9))
    bias = torch.rand(2, 9).log1p()  # like log(size): no gradient wanted
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out, _ = attention(q, k, v, key_bias=bias)
        out.sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops, sorted(ops)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in ops, sorted(ops)
    assert "aten::_scaled_dot_product_attention_math" not in ops


def test_key_bias_with_a_cache_is_refused() -> None:
    q, k, v = _qkv(1, 3)
    with pytest.raises(ValueError, match="key_bias"):
        attention(q, k, v, causal=True, state={}, key_bias=torch.zeros(1, 3, dtype=torch.float64))


def test_recorded_maps_include_the_key_bias() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(dim=8, heads=2)
    x, bias = torch.randn(2, 5, 8), torch.rand(2, 5).log1p()
    plain, _ = mha(x, key_bias=bias)
    mha.record_maps = True
    mapped, _ = mha(x, key_bias=bias)
    torch.testing.assert_close(mapped, plain)


# -- blocks and the model --------------------------------------------------------------

CFG = ModelConfig(dim=16, depth=3, heads=2, dropout=0.0, patch=2)


def _data(kind: str) -> Dataset:
    g = torch.Generator().manual_seed(0)
    if kind == "image":
        X, y = torch.rand(6, 1, 8, 8, generator=g), torch.randint(0, 2, (6,), generator=g)
        return Dataset("toy-img", "image", "classification", X, y, classes=["a", "b"])
    if kind == "tabular":
        X, y = torch.randn(6, 9, generator=g), torch.randint(0, 3, (6,), generator=g)
        names = [f"f{i}" for i in range(9)]
        return Dataset(
            "toy-tab", "tabular", "classification", X, y, feature_names=names, classes=["a", "b", "c"]
        )
    X = torch.randint(0, 256, (4, 9), generator=g)
    return Dataset("toy-text", "text", "lm", X, torch.zeros(4, dtype=torch.long))


def test_merge_r_on_a_causal_model_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"model\.merge_r=2"):
        build_model(CFG.model_copy(update={"merge_r": 2}), _data("text"))
    model = build_model(CFG, _data("text"))
    with pytest.raises(UserError, match=r"model\.merge_r=1"):
        model.set_merge(1)


@pytest.mark.parametrize("kind", ["image", "tabular"])
def test_merging_model_shapes_and_gradients(kind: str) -> None:
    torch.manual_seed(0)
    data = _data(kind)
    model = build_model(CFG.model_copy(update={"merge_r": 3}), data)
    h, _ = model.encode(data.X)
    # 17 (image) or 10 (tabular) tokens, 3 merged per block while A tokens last.
    n = 1 + (16 if kind == "image" else 9)
    for _ in range(CFG.depth):
        n -= merge_count(n, 3)
    assert h.shape == (len(data.X), n, CFG.dim)
    logits = model(data.X)
    assert logits.shape == (len(data.X), data.n_classes)
    torch.nn.functional.cross_entropy(logits, data.y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_merge_r_zero_is_the_plain_forward_bit_for_bit(tmp_path) -> None:
    torch.manual_seed(0)
    data = _data("image")
    model = build_model(CFG, data).eval()
    with torch.no_grad():
        h = model.tokenizer(data.X)
        for block in model.blocks:
            h, _ = block(h)
        before = model.head(model.norm(h)[:, 0])  # the pre-merging path, written out
        assert torch.equal(model(data.X), before)
        model.set_merge(4)
        merged = model(data.X)
        assert not torch.equal(merged, before)
        save_model(model, tmp_path)  # the spec follows set_merge
        assert torch.equal(load_model(tmp_path)(data.X), merged)
        assert torch.equal(model.set_merge(0)(data.X), before)


def test_merging_block_with_nothing_to_merge_is_the_plain_block() -> None:
    torch.manual_seed(0)
    block = Block(dim=8, heads=2).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        y, size = block.forward_merging(x, None, r=0)
        assert torch.equal(y, block(x)[0]) and size is None


def test_other_kinds_merge_without_proportional_attention() -> None:
    torch.manual_seed(0)
    block = Block(dim=8, heads=2, attention="sliding", options={"window": 2})
    y, size = block.forward_merging(torch.randn(2, 9, 8), torch.ones(2, 9, 1) * 2, r=2)
    assert y.shape == (2, 7, 8) and size is not None and (size.sum(1) == 18).all()
