"""The Transformer on tiny fake datasets of every kind: shapes, saving, decoding, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from glassbox.config import ModelConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.nn import Transformer, build_model, load_model, model_from_spec, save_model
from glassbox.nn.blocks import Block, MultiHeadAttention

CFG = ModelConfig(dim=16, depth=2, heads=2, mlp_ratio=2.0, dropout=0.1, patch=2, max_len=32)


def _data(kind: str, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    if kind == "tabular":
        X = torch.randn(40, 5, generator=g) * 10 + 3
        X[:, 2] = 7.0  # a constant column: its std is 0
        y = torch.randint(0, 3, (40,), generator=g)
        names = [f"f{i}" for i in range(5)]
        return Dataset(
            "toy-tab", "tabular", "classification", X, y, feature_names=names, classes=["a", "b", "c"]
        )
    if kind == "image":
        X = torch.rand(12, 3, 8, 8, generator=g)
        y = torch.randint(0, 2, (12,), generator=g)
        return Dataset("toy-img", "image", "classification", X, y, classes=["cat", "dog"])
    X = torch.randint(0, 256, (6, 17), generator=g)  # (N, T + 1)
    return Dataset("toy-text", "text", "lm", X, torch.zeros(6, dtype=torch.long))


def _inputs(data: Dataset) -> torch.Tensor:
    return data.X[:, :-1] if data.kind == "text" else data.X


def _build(kind: str, **overrides) -> tuple[Transformer, Dataset]:
    torch.manual_seed(0)
    data = _data(kind)
    return build_model(CFG.model_copy(update=overrides), data), data


CASES = [("tabular", {}), ("tabular", {"linear_path": True}), ("image", {}), ("image", {"conv_stem": True}),
         ("text", {})]  # fmt: skip
CASE_IDS = ["tabular", "tabular-linear-path", "image", "image-conv-stem", "text"]


@pytest.mark.parametrize(("kind", "overrides"), CASES, ids=CASE_IDS)
def test_forward_shapes_and_backward(kind: str, overrides: dict) -> None:
    model, data = _build(kind, **overrides)
    x = _inputs(data)
    logits = model(x)
    if kind == "text":
        assert logits.shape == (len(x), x.shape[1], 256)
        loss = F.cross_entropy(logits.flatten(0, 1), data.X[:, 1:].flatten())
    else:
        assert logits.shape == (len(x), data.n_classes)
        loss = F.cross_entropy(logits, data.y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    has_stem = any(n.startswith("tokenizer.stem.") for n, _ in model.named_parameters())
    assert has_stem == bool(overrides.get("conv_stem"))


@pytest.mark.parametrize(("kind", "overrides"), CASES, ids=CASE_IDS)
def test_save_load_round_trip_gives_identical_outputs(kind: str, overrides: dict, tmp_path) -> None:
    model, data = _build(kind, **overrides)
    model.eval()
    save_model(model, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(tmp_path / "run")
    assert not loaded.training
    x = _inputs(data)[:4]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # The statistics are buffers, so they come back from the weights file.
    for name, buf in model.named_buffers():
        assert torch.equal(buf, dict(loaded.named_buffers())[name]), name


@pytest.mark.parametrize("kind", ["tabular", "image", "text"])
def test_spec_is_json_and_rebuilds_the_same_architecture(kind: str) -> None:
    model, data = _build(kind)
    spec = json.loads(json.dumps(model.spec_))
    assert spec["kind"] == kind and spec["task"] == data.task
    assert spec["classes"] == data.classes and spec["feature_names"] == data.feature_names
    assert spec["model"]["dim"] == CFG.dim
    if kind == "tabular":
        assert spec["n_features"] == 5
    if kind == "image":
        assert spec["image_shape"] == [3, 8, 8]
    rebuilt = model_from_spec(spec)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_tabular_standardises_with_training_statistics() -> None:
    model, data = _build("tabular")
    tok = model.tokenizer
    torch.testing.assert_close(tok.mean, data.X.mean(0))
    assert tok.std[2] == 1.0  # the constant column is not divided by zero
    torch.testing.assert_close(tok.std[0], data.X[:, 0].std(unbiased=False))
    odd = data.X[:2].clone()
    odd[:, 2] = 1e6  # far from the constant seen in training
    assert torch.isfinite(model(odd)).all()


def test_linear_path_adds_logistic_regression_on_the_standardized_features() -> None:
    model, data = _build("tabular", linear_path=True)
    plain, _ = _build("tabular")
    model.eval(), plain.eval()
    start = model(data.X)
    torch.testing.assert_close(start, plain(data.X))  # zero-initialized: training starts from the transformer
    with torch.no_grad():
        model.linear.weight.normal_()
        model.linear.bias.normal_()
    z = (data.X - model.tokenizer.mean) / model.tokenizer.std  # (B, F)
    torch.testing.assert_close(model(data.X) - start, z @ model.linear.weight.T + model.linear.bias)
    with pytest.raises(UserError, match="linear_path"):
        _build("image", linear_path=True)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_deep_penalty_is_the_transformer_logits_squared_in_the_training_loss(accumulate: int) -> None:
    import copy

    from glassbox.config import TrainConfig
    from glassbox.train import Trainer
    from glassbox.train.callbacks import MicroBatch

    lam = 0.7
    model, data = _build("tabular", linear_path=True, deep_penalty=lam, dropout=0.0)
    with torch.no_grad():
        model.linear.weight.normal_()  # both paths carry logits
    x, y = data.X[:8], data.y[:8]
    # The reference: CE plus lam * mean over classes of the head's logits squared, by hand.
    deep = model.head(model.encode(x)[0][:, 0])  # (B, K), the transformer path alone
    ref = (F.cross_entropy(model(x), y, reduction="none") + lam * deep.pow(2).mean(-1)).mean()
    want = torch.autograd.grad(ref, list(model.parameters()))
    trainer = Trainer(model, TrainConfig(accumulate=accumulate))
    trainer.class_weights_, trainer.task_, trainer._ddp = None, "classification", None
    model.zero_grad()
    for j, rows in enumerate(torch.arange(8).tensor_split(accumulate)):
        micro = MicroBatch(j, accumulate, rows, rows, x[rows], y[rows], 1 / 8)
        trainer.forward_backward(micro)
    for p, g in zip(model.parameters(), want, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert model.penalty_ is None  # read once: no graph is kept on the model
    model.eval()
    model(x)
    assert model.penalty_ is None  # evaluation adds no penalty
    copy.deepcopy(model)
    plain, _ = _build("tabular", deep_penalty=1.0, dropout=0.0)  # no linear path: nothing to penalize
    plain(x)
    assert plain.penalty_ is None


@pytest.mark.parametrize("chunk", [1, 3])
def test_lm_incremental_decoding_matches_full_forward(chunk: int) -> None:
    model, data = _build("text")
    model.eval()
    x = data.X[:2, :-1]  # (2, 16)
    with torch.no_grad():
        full = model(x)
        logits, states = model.decode_step(x[:, :4])
        steps, offset = [logits], 4
        while offset < x.shape[1]:
            piece = x[:, offset : offset + chunk]
            logits, states = model.decode_step(piece, states, offset)
            steps.append(logits)
            offset += piece.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


def test_generate_length_and_determinism() -> None:
    model, _ = _build("text")
    model.train()

    def run(seed: int, **kw) -> torch.Tensor:
        return model.generate(b"hello", 12, generator=torch.Generator().manual_seed(seed), **kw)

    out = run(0)
    assert out.shape == (17,) and out.dtype == torch.long
    assert out[:5].tolist() == list(b"hello")
    assert torch.equal(out, run(0))
    assert torch.equal(run(1, top_k=1), run(2, top_k=1))  # top-1 sampling is greedy
    assert torch.equal(run(1, temperature=0), run(3, top_k=1))
    assert model.training  # put back as it was
    batch = model.generate(torch.tensor([[1, 2], [3, 4]]), 3, top_k=5)
    assert batch.shape == (2, 5)


def test_generate_runs_past_max_len() -> None:
    model, _ = _build("text", max_len=16)
    out = model.generate(b"abc", 40, generator=torch.Generator().manual_seed(0))
    assert out.shape == (43,)


def test_bad_patch_is_a_user_error_naming_the_key() -> None:
    with pytest.raises(UserError, match=r"model\.patch=3.*8x8.*1, 2, 4, 8"):
        _build("image", patch=3)


def test_dim_not_divisible_by_heads_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"model\.dim=18 .*model\.heads=4"):
        _build("tabular", dim=18, heads=4)


def test_unknown_attention_is_a_user_error_naming_the_key() -> None:
    with pytest.raises(UserError, match=r"model\.attention: .*did you mean 'softmax'"):
        _build("tabular", attention="softmx")


def test_text_longer_than_max_len_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"model\.max_len=8"):
        _build("text", max_len=8)  # windows are 16 bytes
    model, _ = _build("text")
    with pytest.raises(UserError, match=r"model\.max_len=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_load_model_from_an_empty_folder_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="no model.json"):
        load_model(tmp_path)


def test_recorded_maps_are_the_applied_attention() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(dim=8, heads=2, causal=True)
    x = torch.randn(2, 5, 8)
    plain, _ = mha(x)
    mha.record_maps = True
    mapped, _ = mha(x)
    torch.testing.assert_close(mapped, plain)
    maps = mha.maps  # (B, H, T, T)
    assert maps.shape == (2, 2, 5, 5)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 5))
    assert (maps.triu(1) == 0).all()  # causal: nothing from the future
    maps.retain_grad()
    mapped.sum().backward()
    assert maps.grad is not None


def test_block_threads_state_through() -> None:
    block = Block(dim=8, heads=2, causal=True).eval()
    x = torch.randn(1, 6, 8)
    full, none = block(x)
    head, state = block(x[:, :4], {})
    tail, state = block(x[:, 4:], state)
    assert none is None and state["k"].shape == (1, 6, 2, 4)
    torch.testing.assert_close(torch.cat([head, tail], dim=1), full)
