"""Tokenizers: turn one kind of input into a sequence of ``dim``-wide tokens.

``TOKENIZERS`` maps a data kind (``tabular``, ``image``, ``text``, ``audio``) to a factory
``fn(cfg: ModelConfig, input_shape) -> Tokenizer`` where ``input_shape`` is
``dataset.X.shape[1:]``. Input statistics (means and standard deviations) are
buffers: ``fit(X)`` fills them from the training data once, and afterwards
they travel inside the weights file, so a loaded model standardises exactly
as the trained one did.

>>> import torch
>>> from glassbox.config import ModelConfig
>>> tok = TOKENIZERS.build("tabular", cfg=ModelConfig(dim=8), input_shape=(3,))
>>> tok.fit(torch.randn(50, 3))
>>> tok(torch.randn(4, 3)).shape  # CLS + one token per feature
torch.Size([4, 4, 8])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from glassbox.config import ModelConfig
from glassbox.errors import UserError
from glassbox.registry import Registry

TOKENIZERS: Registry[Callable[..., Tokenizer]] = Registry("tokenizer")


def _safe_std(std: torch.Tensor) -> torch.Tensor:
    # A column that is constant in training has std 0; dividing by 1 instead
    # centres it to 0 rather than blowing up whatever differs at test time.
    return torch.where(std > 1e-6, std, torch.ones_like(std))


class Tokenizer(nn.Module):
    """Base: ``forward(x, offset=0) -> (B, N, dim)``; ``has_cls`` says token 0 is a CLS token."""

    has_cls = False

    def fit(self, X: torch.Tensor) -> None:
        """Set input statistics from training data; a no-op for tokenizers without any."""


class TabularTokenizer(Tokenizer):
    """FT-Transformer feature tokens: ``token_j = z_j * W_j + b_j``, CLS first.

    Each feature gets its own embedding direction, so attention between
    tokens is attention between features, which is what the explanations
    read back.
    """

    has_cls = True

    def __init__(self, n_features: int, dim: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(n_features, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, dim).uniform_(-bound, bound))
        self.cls = nn.Parameter(torch.empty(1, 1, dim).uniform_(-bound, bound))

    def fit(self, X: torch.Tensor) -> None:
        X = X.double()  # sums over many rows lose digits in float32
        self.mean.copy_(X.mean(0))
        self.std.copy_(_safe_std(X.std(0, unbiased=False)))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` with the training statistics: ``(B, F)``."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise UserError(
                f"the model reads rows of {self.n_features} features, got shape {tuple(x.shape)}; "
                "give data with the same columns it was trained on"
            )
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        z = self.standardize(x)  # (B, F)
        tokens = z[..., None] * self.weight + self.bias  # (B, F, dim)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + F, dim)


class ImageTokenizer(Tokenizer):
    """ViT patches: standardise, optional conv stem, ``patch x patch`` patches, CLS first.

    The stem (``conv_stem=True``) gives each patch token a view of local
    edges before attention mixes patches: the convolution-transformer hybrid
    that does better than a plain ViT on small images and little data.
    """

    has_cls = True

    def __init__(self, shape: tuple[int, int, int], dim: int, patch: int, conv_stem: bool = False) -> None:
        super().__init__()
        C, H, W = shape
        if H % patch or W % patch:
            divisors = [p for p in range(1, min(H, W) + 1) if H % p == 0 and W % p == 0]
            raise UserError(
                f"model.patch={patch} does not divide the {H}x{W} images; "
                f"choose one of {', '.join(map(str, divisors))} (or change data.image_size)"
            )
        self.shape = (C, H, W)
        # One global mean/std (not per channel) so grayscale and colour images
        # behave alike; shape (1,) broadcasts over (B, C, H, W).
        self.register_buffer("mean", torch.zeros(1))
        self.register_buffer("std", torch.ones(1))
        if conv_stem:
            width = 8 * max(2, dim // 16)
            # GroupNorm, not BatchNorm: no batch-size dependence, no running
            # statistics to drift between train and eval, and it works under
            # per-sample gradient tools (differential privacy).
            self.stem: nn.Module = nn.Sequential(
                nn.Conv2d(C, width, 3, padding=1, bias=False),
                nn.GroupNorm(8, width),
                nn.GELU(),
                nn.Conv2d(width, width, 3, padding=1),
            )
            C = width
        else:
            self.stem = nn.Identity()
        self.patchify = nn.Conv2d(C, dim, kernel_size=patch, stride=patch)
        n_patches = (H // patch) * (W // patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + n_patches, dim) * 0.02)

    def fit(self, X: torch.Tensor) -> None:
        X = X.double()
        self.mean.fill_(float(X.mean()))
        self.std.copy_(_safe_std(X.std(unbiased=False).reshape(1)))

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            C, H, W = self.shape
            raise UserError(
                f"the model reads {C}x{H}x{W} images, got shape {tuple(x.shape)}; "
                "resize them as in training (data.image_size)"
            )
        z = self.stem((x - self.mean) / self.std)  # (B, C', H, W)
        tokens = self.patchify(z).flatten(2).transpose(1, 2)  # (B, P, dim)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + P, dim)
        return tokens + self.pos


class TextTokenizer(Tokenizer):
    """Byte embedding plus a learned position table of ``max_len`` rows; no CLS.

    ``offset`` is the absolute position of ``x[:, 0]``, for decoding with a
    cache where each call sees only the newest tokens.
    """

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(256, dim)
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        T = x.shape[1]
        if offset + T > self.max_len:
            raise UserError(
                f"a sequence of {offset + T} bytes is longer than model.max_len={self.max_len}; "
                "raise model.max_len or use shorter sequences (data.seq_len)"
            )
        positions = torch.arange(offset, offset + T, device=x.device)  # (T,)
        # Positions indexed per row, not broadcast: the table then gets each
        # example's own gradient, which per-example tools (valuation, DP) read.
        return self.embed(x) + self.pos(positions.expand(x.shape[0], T))  # (B, T, dim)


@TOKENIZERS.register("tabular")
def _tabular(cfg: ModelConfig, input_shape: tuple[int, ...]) -> Tokenizer:
    (n_features,) = input_shape
    return TabularTokenizer(n_features, cfg.dim)


@TOKENIZERS.register("image")
def _image(cfg: ModelConfig, input_shape: tuple[int, ...]) -> Tokenizer:
    C, H, W = input_shape
    return ImageTokenizer((C, H, W), cfg.dim, cfg.patch, conv_stem=cfg.conv_stem)


@TOKENIZERS.register("text")
def _text(cfg: ModelConfig, input_shape: tuple[int, ...]) -> Tokenizer:
    return TextTokenizer(cfg.dim, cfg.max_len)


@TOKENIZERS.register("sequence")
def _sequence(cfg: ModelConfig, input_shape: tuple[int, ...]) -> Tokenizer:
    # Synthetic token tasks (MQAR, parity) use ids below 256, so bytes' table serves.
    return TextTokenizer(cfg.dim, cfg.max_len)


@TOKENIZERS.register("audio")
def _audio(cfg: ModelConfig, input_shape: tuple[int, ...]) -> Tokenizer:
    # Log-mel spectrogram patches (glassbox.nn.audio); imported here so table runs never build a filterbank.
    from glassbox.nn.audio import AudioTokenizer

    (n_samples,) = input_shape
    return AudioTokenizer(n_samples, cfg.dim, cfg.audio)
