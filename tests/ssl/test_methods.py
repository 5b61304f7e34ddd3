"""Every registered pretraining method, on every data kind it claims, and what is specific to each."""

import pytest
import torch

from glassbox.config import ModelConfig, PretrainConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.nn import build_model
from glassbox.ssl import METHODS, pretrain
from glassbox.ssl.base import check_kind, embed
from glassbox.ssl.masked import Masked, encode_visible, hidden_mse, patches, random_keep


def tiny(kind: str, conv_stem: bool = False) -> tuple[torch.nn.Module, Dataset]:
    g = torch.Generator().manual_seed(0)
    cfg = ModelConfig(dim=16, depth=1, heads=2, patch=2, conv_stem=conv_stem, max_len=32, dropout=0.0)
    if kind == "tabular":
        y = torch.randint(0, 2, (24,), generator=g)
        data = Dataset("t", "tabular", "classification", torch.randn(24, 5, generator=g), y,
                       feature_names=list("abcde"), classes=["n", "y"])  # fmt: skip
    elif kind == "image":
        data = Dataset("i", "image", "classification", torch.rand(24, 1, 8, 8, generator=g),
                       torch.randint(0, 2, (24,), generator=g), classes=["a", "b"])  # fmt: skip
    elif kind == "audio":  # 0.2 s clips: 21 frames, 4 x 2 patches of the default 32-band spectrogram
        data = Dataset("s", "audio", "classification", 0.1 * torch.randn(24, 3200, generator=g),
                       torch.randint(0, 2, (24,), generator=g), classes=["a", "b"])  # fmt: skip
    else:
        data = Dataset("x", "text", "lm", torch.randint(1, 256, (24, 17), generator=g), torch.zeros(24))
    return build_model(cfg, data), data


CASES = [(m, k) for m in METHODS.names() for k in METHODS.get(m).kinds]


@pytest.mark.parametrize(("method", "kind"), CASES)
def test_contract(method, kind):
    """Finite seeded loss, gradients into the encoder, and a short pretraining run that moves it."""
    model, data = tiny(kind)
    cfg = PretrainConfig(method=method, epochs=2, batch_size=8)
    X = data.X[:, :-1] if kind == "text" else data.X
    obj = METHODS.build(method, model=model, cfg=cfg, pool=X if kind == "tabular" else None)
    model.train()
    loss, terms = obj.loss(model, X[:8], torch.Generator().manual_seed(0))
    again, _ = obj.loss(model, X[:8], torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and terms
    assert float(loss.detach()) == pytest.approx(float(again.detach()), rel=1e-6)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("blocks.") and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)

    model2, _ = tiny(kind)
    before = embed(model2, X).clone()
    history = pretrain(model2, data.X, cfg, seed=0)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["pretrain_loss"])) for h in history)
    assert not torch.allclose(embed(model2, X), before)
    assert not model2.training


def test_pretraining_is_reproducible():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model, data = tiny("image")
        pretrain(model, data.X, PretrainConfig(epochs=2, batch_size=8), seed=3)
        runs.append(embed(model, data.X))
    assert torch.equal(runs[0], runs[1])


def test_mae_encoder_never_sees_hidden_pixels():
    """With a conv stem, changing hidden patches' pixels leaves the visible encoding unchanged."""
    model, data = tiny("image", conv_stem=True)
    model.eval()
    x = data.X[:4]
    keep = random_keep(4, 16, 8, torch.Generator().manual_seed(0))  # (4, 8) of 16 patches
    hidden = torch.ones(4, 16, dtype=torch.bool)
    hidden[torch.arange(4)[:, None], keep] = False
    pix = hidden.view(4, 1, 4, 1, 4, 1).expand(4, 1, 4, 2, 4, 2).reshape(4, 1, 8, 8)
    other = torch.where(pix, torch.rand_like(x) * 50, x)
    with torch.no_grad():
        a, b = encode_visible(model, x, keep), encode_visible(model, other, keep)
    assert a.shape == (4, 9, 16)
    assert torch.allclose(a, b, atol=1e-6)
    # ... and the visible pixels do matter.
    vis = torch.where(pix, x, x + 1.0)
    with torch.no_grad():
        assert not torch.allclose(encode_visible(model, vis, keep), a)


def test_patches_follow_the_tokenizer_order():
    """Patch p of ``patches`` is what the strided patchify convolution reads for token p."""
    model, data = tiny("image")
    conv = model.tokenizer.patchify
    x = data.X[:2]
    direct = conv(x).flatten(2).transpose(1, 2)  # (B, P, dim)
    via = patches(x, 2) @ conv.weight.flatten(1).T + conv.bias  # (B, P, dim)
    assert torch.allclose(direct, via, atol=1e-5)


def test_mae_loss_is_on_hidden_patches_only():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 16, 4, generator=g)
    hidden = torch.rand(3, 16, generator=g) < 0.5
    pred = torch.where(hidden[..., None], target, target + 100.0)  # exact where hidden, wild where visible
    assert float(hidden_mse(pred, target, hidden)) == 0.0
    pred = torch.where(hidden[..., None], target + 2.0, target)
    assert float(hidden_mse(pred, target, hidden)) == pytest.approx(4.0)


def test_vime_predicts_the_mask_and_values():
    model, data = tiny("tabular")
    vime = Masked(model, PretrainConfig(method="masked"), pool=data.X)
    loss, terms = vime.loss(model, data.X[:8], torch.Generator().manual_seed(0))
    assert set(terms) == {"mask_bce", "reconstruction"}
    assert float(loss.detach()) == pytest.approx(terms["mask_bce"] + 2.0 * terms["reconstruction"], rel=1e-5)


def test_methods_refuse_kinds_they_cannot_do():
    with pytest.raises(UserError, match="does not apply to sequence data; choose one of"):
        check_kind("contrastive", "sequence")
