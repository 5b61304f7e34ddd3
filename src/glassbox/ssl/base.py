"""The pretraining-method registry and what every method shares: views and embeddings.

A method is an ``nn.Module`` holding only its own heads (projection head,
decoder, ...); the encoder is the glassbox ``Transformer`` it is given at each
call, so after pretraining the encoder is simply the model, ready for
``train`` to fine-tune or probe. ``METHODS.build(name, model=..., cfg=...,
pool=...)`` makes one; ``method.loss(model, x, g)`` returns the loss and
its named terms for the log.

>>> import torch
>>> from glassbox.config import ModelConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn import build_model
>>> data = Dataset("toy", "tabular", "classification", torch.randn(32, 5), torch.randint(0, 2, (32,)),
...                feature_names=list("abcde"), classes=["no", "yes"])
>>> model = build_model(ModelConfig(dim=16, depth=1, heads=2), data)
>>> embed(model, data.X).shape
torch.Size([32, 16])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from glassbox.registry import Registry

METHODS: Registry[Callable[..., Method]] = Registry("pretraining method")

EMBED_BATCH = 512  # rows per forward when embedding a whole split without gradients


class Method(nn.Module):
    """Base of a pretraining objective; subclasses implement ``loss``."""

    kinds: tuple[str, ...] = ("tabular", "image", "text", "audio")

    def loss(
        self, model: nn.Module, x: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


def pooled(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """(B, dim) one vector per example from token features ``h`` (B, N, dim).

    Encoders with a CLS token (tables, images) use it, as the classifier
    head does; byte models, which have none, average their positions. A
    tokenizer with ``pool = "mean"`` (audio) averages its patch tokens, CLS
    left out: masked-patch pretraining never trains the CLS token, and
    mean-pooled patches are what audio encoders are probed with (SSAST, Audio-MAE).
    """
    if getattr(model.tokenizer, "pool", "cls") == "mean":
        return h[:, 1:].mean(dim=1)
    return h[:, 0] if model.tokenizer.has_cls else h.mean(dim=1)


def represent(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, dim) the pooled final-normed features of ``x``, with gradients (for pretraining)."""
    h, _ = model.encode(x)
    return pooled(model, h)


@contextlib.contextmanager
def seeded_augment(model: nn.Module, g: torch.Generator) -> Iterator[None]:
    """Within the block, a tokenizer that augments while training (audio's SpecAugment) draws from ``g``."""
    tok = model.tokenizer
    if not hasattr(tok, "generator"):
        yield
        return
    before, tok.generator = tok.generator, g
    try:
        yield
    finally:
        tok.generator = before


@torch.no_grad()
def embed(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """(N, dim) embeddings of ``X`` in eval mode, in batches; the model's mode is restored after."""
    was = model.training
    model.eval()
    try:
        out = [represent(model, X[i : i + EMBED_BATCH]) for i in range(0, len(X), EMBED_BATCH)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, model.norm.normalized_shape[0])


def make_view(
    kind: str, x: torch.Tensor, g: torch.Generator, pool: torch.Tensor | None, cfg: Any
) -> torch.Tensor:
    """One random view of a batch ``x`` of data kind ``kind`` (see ``glassbox.ssl.views``)."""
    from glassbox.ssl import views

    if kind == "tabular":
        assert pool is not None, "SCARF draws from the training rows; pass pool"
        return views.scarf_view(x, pool, cfg.corruption, g)
    if kind == "image":
        return views.image_view(
            x, g, scale=(cfg.crop_scale, 1.0), degrees=cfg.rotation, translate=cfg.translate, noise=cfg.noise
        )
    if kind == "text":
        return views.text_view(x, g, crop=cfg.text_crop, ratio=cfg.mask_ratio or 0.15)
    if kind == "audio":
        from glassbox.ssl.audio import audio_view

        return audio_view(x, g, speed=cfg.speed, shift=cfg.shift, snr=cfg.view_snr)
    raise ValueError(f"no views for data kind '{kind}'")


def check_kind(method: str, kind: str) -> None:
    """Refuse a method on a data kind it has no views or masking for, with the alternatives."""
    from glassbox.errors import UserError

    allowed = METHODS.get(method).kinds  # type: ignore[attr-defined]
    if kind not in allowed:
        fits = [m for m in METHODS.names() if kind in METHODS.get(m).kinds]  # type: ignore[attr-defined]
        raise UserError(
            f"pretrain.method={method} does not apply to {kind} data; choose one of {', '.join(fits)}"
        )
