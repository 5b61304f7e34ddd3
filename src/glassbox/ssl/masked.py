"""Masked modeling: hide part of each example and train the encoder to fill it in.

One registered method, ``masked``, with the form that suits each data kind:

- tables, VIME (Yoon et al., NeurIPS 2020): a fraction of each row's
  features is replaced by draws from their marginals (as SCARF does), and
  per-feature heads on the feature tokens predict which entries were
  replaced (the mask) and their original standardized values;
- images, MAE (He et al., CVPR 2022): a random subset of patches is
  dropped, the encoder runs on the CLS token and the visible patches only,
  and a one-block decoder with mask tokens predicts the hidden patches'
  standardized pixels; the loss is on hidden patches only. With a
  convolutional stem the hidden patches' pixels are blanked before the
  stem as well, so no visible token's receptive field sees into them;
- text: spans of bytes are replaced by ``MASK_BYTE`` and the byte model
  predicts the original bytes at the masked positions;
- audio, Audio-MAE: MAE on log-mel spectrogram patches (``glassbox.ssl.audio``).

>>> import torch
>>> from glassbox.config import ModelConfig, PretrainConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn import build_model
>>> data = Dataset("toy", "image", "classification", torch.rand(8, 1, 8, 8), torch.randint(0, 2, (8,)),
...                classes=["a", "b"])
>>> model = build_model(ModelConfig(dim=16, depth=1, heads=2, patch=2), data)
>>> mae = Masked(model, PretrainConfig(method="masked"))
>>> loss, terms = mae.loss(model, data.X, torch.Generator().manual_seed(0))
>>> sorted(terms)
['reconstruction']
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glassbox.nn.blocks import Block
from glassbox.ssl.base import METHODS, Method
from glassbox.ssl.views import marginal_corrupt, span_mask

# Default share of each example hidden, by kind (pretrain.mask_ratio overrides):
# VIME's p_m = 0.3; MAE hides 75 % of 196 patches, but digits have 16, and
# hiding 12 of them leaves too little of an 8 x 8 digit to infer the rest;
# BERT masks 15 % of tokens.
MASK_RATIO = {"tabular": 0.3, "image": 0.5, "text": 0.15, "audio": 0.5}
VIME_ALPHA = 2.0  # weight of feature reconstruction beside mask estimation (VIME's alpha)


def patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, P, C*p*p) the non-overlapping ``p x p`` patches of ``x`` (B, C, H, W), row-major.

    The same order as the tokenizer's strided ``patchify`` convolution.
    """
    return F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)


def hidden_mse(pred: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """MAE's loss: squared error per patch (B, P, D), averaged over the ``hidden`` (B, P) patches only."""
    err = (pred - target).pow(2).mean(dim=-1)  # (B, P)
    return (err * hidden).sum() / hidden.sum().clamp(min=1)


def random_keep(B: int, P: int, n_keep: int, g: torch.Generator) -> torch.Tensor:
    """(B, n_keep) sorted indices of the patches each example keeps visible (MAE's random shuffle)."""
    noise = torch.rand(B, P, generator=g)
    return noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values


def encode_visible(model: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, 1 + K, dim) the encoder blocks run on CLS and the visible patches ``keep`` (B, K) only.

    Hidden patches are blanked to the input mean (0 after standardizing)
    before the tokenizer, so a conv stem cannot carry their pixels into
    visible tokens: nothing here depends on a hidden pixel.
    """
    tok = model.tokenizer
    B, _, H, W = x.shape
    p = tok.patchify.kernel_size[0]
    gh, gw = H // p, W // p
    hidden = torch.ones(B, gh * gw, dtype=torch.bool)
    hidden[torch.arange(B)[:, None], keep] = False  # (B, P)
    pixel_hidden = hidden.view(B, 1, gh, 1, gw, 1).expand(B, 1, gh, p, gw, p).reshape(B, 1, H, W)
    blanked = torch.where(pixel_hidden, tok.mean.to(x.dtype), x)
    tokens = model.drop(tok(blanked))  # (B, 1 + P, dim), CLS first, positions added
    idx = torch.cat([torch.zeros(B, 1, dtype=torch.long), keep + 1], dim=1)  # (B, 1 + K)
    h = torch.gather(tokens, 1, idx[..., None].expand(-1, -1, tokens.shape[-1]))  # (B, 1 + K, dim)
    for block in model.blocks:
        h, _ = block(h)
    return h


@METHODS.register("masked")
class Masked(Method):
    """VIME for tables, MAE for images, masked bytes for text (see the module docstring)."""

    def __init__(self, model: nn.Module, cfg: Any, pool: torch.Tensor | None = None) -> None:
        super().__init__()
        self.kind = model.kind
        self.cfg = cfg
        self.pool = pool
        self.ratio = cfg.mask_ratio if cfg.mask_ratio is not None else MASK_RATIO[self.kind]
        dim = model.norm.normalized_shape[0]
        if self.kind == "tabular":
            n_feat = model.tokenizer.n_features
            bound = 1 / math.sqrt(dim)
            # One linear read-out per feature token: (F, dim) weights and (F,) biases,
            # for the value and for "was this entry replaced".
            self.value_w = nn.Parameter(torch.empty(n_feat, dim).uniform_(-bound, bound))
            self.value_b = nn.Parameter(torch.zeros(n_feat))
            self.mask_w = nn.Parameter(torch.empty(n_feat, dim).uniform_(-bound, bound))
            self.mask_b = nn.Parameter(torch.zeros(n_feat))
        elif self.kind == "image":
            tok = model.tokenizer
            C, H, W = tok.shape
            self.patch = tok.patchify.kernel_size[0]
            n_patches = (H // self.patch) * (W // self.patch)
            self._mae_decoder(dim, model.blocks[0].attn.heads, n_patches, C * self.patch * self.patch)
        elif self.kind == "audio":
            tok = model.tokenizer
            n_patches = tok.grid[0] * tok.grid[1]
            self._mae_decoder(
                dim, model.blocks[0].attn.heads, n_patches, tok.cfg.patch_mels * tok.cfg.patch_frames
            )
        elif self.kind != "text":
            raise ValueError(f"no masked modeling for data kind '{self.kind}'")

    def loss(
        self, model: nn.Module, x: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.kind == "tabular":
            return self._vime(model, x, g)
        if self.kind == "image":
            return self._mae(model, x, g)
        if self.kind == "audio":
            from glassbox.ssl.audio import audio_mae_loss

            return audio_mae_loss(self, model, x, g)
        return self._bytes(model, x, g)

    def _mae_decoder(self, dim: int, heads: int, n_patches: int, out: int) -> None:
        """MAE's light decoder (one block) over CLS + every patch, predicting ``out`` values per patch."""
        self.dec_in = nn.Linear(dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dec_pos = nn.Parameter(torch.randn(1, 1 + n_patches, dim) * 0.02)
        self.decoder = Block(dim, heads, mlp_ratio=2.0)
        self.dec_norm = nn.LayerNorm(dim)
        self.dec_out = nn.Linear(dim, out)

    def _vime(self, model: nn.Module, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, dict]:
        assert self.pool is not None, "VIME draws replacements from the training rows; pass pool"
        corrupted, mask = marginal_corrupt(x, self.pool, self.ratio, g)  # (B, F) each
        h, _ = model.encode(corrupted)
        feats = h[:, 1:]  # (B, F, dim): the feature tokens, CLS dropped
        tok = model.tokenizer
        target = (x - tok.mean) / tok.std  # (B, F), the scale the tokenizer reads
        value = torch.einsum("bfd,fd->bf", feats, self.value_w) + self.value_b  # (B, F)
        mask_logit = torch.einsum("bfd,fd->bf", feats, self.mask_w) + self.mask_b  # (B, F)
        rec = F.mse_loss(value, target)
        est = F.binary_cross_entropy_with_logits(mask_logit, mask.to(mask_logit.dtype))
        return est + VIME_ALPHA * rec, {
            "mask_bce": float(est.detach()),
            "reconstruction": float(rec.detach()),
        }

    def _mae(self, model: nn.Module, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, dict]:
        tok = model.tokenizer
        B, _, H, W = x.shape
        p = self.patch
        gh, gw = H // p, W // p
        P = gh * gw
        n_keep = max(1, round(P * (1 - self.ratio)))
        keep = random_keep(B, P, n_keep, g)  # (B, K)
        hidden = torch.ones(B, P, dtype=torch.bool)
        hidden[torch.arange(B)[:, None], keep] = False  # (B, P) True: hidden
        h = encode_visible(model, x, keep)  # (B, 1 + K, dim), final norm not yet applied
        idx = torch.cat([torch.zeros(B, 1, dtype=torch.long), keep + 1], dim=1)  # (B, 1 + K)
        h = self.dec_in(model.norm(h))  # (B, 1 + K, dim)
        full = self.mask_token.expand(B, 1 + P, -1).clone()  # (B, 1 + P, dim)
        full.scatter_(1, idx[..., None].expand(-1, -1, h.shape[-1]), h)
        d, _ = self.decoder(full + self.dec_pos)
        pred = self.dec_out(self.dec_norm(d[:, 1:]))  # (B, P, C*p*p)
        target = patches((x - tok.mean) / tok.std, p)  # (B, P, C*p*p), the scale the tokenizer reads
        rec = hidden_mse(pred, target, hidden)
        return rec, {"reconstruction": float(rec.detach())}

    def _bytes(self, model: nn.Module, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, dict]:
        masked, where = span_mask(x, g, self.ratio)  # (B, T) each
        logits = model(masked)  # (B, T, 256)
        if not where.any():
            zero = logits.sum() * 0
            return zero, {"masked_ce": 0.0}
        ce = F.cross_entropy(logits[where], x[where])
        return ce, {"masked_ce": float(ce.detach())}
