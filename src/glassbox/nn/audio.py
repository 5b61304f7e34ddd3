"""The audio tokenizer: waveform -> log-mel spectrogram -> patches as tokens, SpecAugment while training.

Written in plain PyTorch because torchaudio does not load beside the CPU build
of torch these machines use. The model reads waveforms (``(B, S)`` at 16 kHz),
so its features can never drift from what it was trained on, and a saved
model is a model of sound, not of a preprocessing step somewhere else.

- ``mel_filterbank``: triangular filters equally spaced on the HTK mel scale
  ``mel(f) = 2595 log10(1 + f / 700)``, weights on the FFT bins' frequencies
  (no area normalization: torchaudio's ``norm=None``, ``mel_scale="htk"``);
- ``log_mel``: Hann-windowed STFT, power, the filterbank, ``log(. + 1e-6)``;
- ``spec_augment``: Park et al. (Interspeech 2019), frequency and time masks
  of random width and position per example, set to 0 (the standardized mean);
- ``AudioTokenizer``: standardizes each mel band with training statistics,
  cuts the spectrogram into ``patch_mels x patch_frames`` patches (AST's
  patch tokens, without overlap) and puts a CLS token first.

>>> import torch
>>> from glassbox.config import ModelConfig
>>> tok = AudioTokenizer(12800, 16, ModelConfig().audio)
>>> tok.grid  # mel patches x time patches
(4, 10)
>>> tok(torch.randn(2, 12800) * 0.1).shape  # CLS + 40 patch tokens
torch.Size([2, 41, 16])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glassbox.data.base import AUDIO_RATE
from glassbox.errors import UserError
from glassbox.nn.tokenizers import Tokenizer

LOG_FLOOR = 1e-6  # added before the log: silence becomes log(1e-6), not -inf


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor | float) -> torch.Tensor:
    """The inverse of ``hz_to_mel``."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int = AUDIO_RATE, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) weights: column m is a triangle over the FFT bins' frequencies.

    Its corners are points m, m+1, m+2 of ``n_mels + 2`` points equally
    spaced in mel from ``f_min`` to ``f_max``; it rises linearly from 0 to 1
    and falls back to 0, in Hz.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise UserError(
            f"model.audio: need 0 <= f_min < f_max <= {sample_rate / 2:g} Hz, got {f_min} and {f_max}"
        )
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    corners = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2))
    lo, mid, hi = corners[:-2], corners[1:-1], corners[2:]  # (M,) each
    rise = (freqs[:, None] - lo) / (mid - lo)  # (F, M)
    fall = (hi - freqs[:, None]) / (hi - mid)  # (F, M)
    return torch.clamp(torch.minimum(rise, fall), min=0.0).float()


def log_mel(x: torch.Tensor, fbank: torch.Tensor, window: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(B, n_mels, 1 + S // hop) log-mel power spectrogram of waveforms ``x`` (B, S)."""
    spec = torch.stft(x, n_fft, hop_length=hop, window=window, center=True, return_complex=True)  # (B, F, T)
    power = spec.real.pow(2) + spec.imag.pow(2)
    mel = torch.einsum("bft,fm->bmt", power, fbank)  # (B, M, T)
    return torch.log(mel + LOG_FLOOR)


def _band_mask(B: int, size: int, masks: int, width: int, g: torch.Generator | None) -> torch.Tensor:
    """(B, size) bool: the union of ``masks`` bands per row, each of width uniform in 0..width."""
    if masks == 0 or width == 0:
        return torch.zeros(B, size, dtype=torch.bool)
    w = torch.randint(0, min(width, size) + 1, (B, masks), generator=g)  # (B, K)
    start = (torch.rand(B, masks, generator=g) * (size - w + 1)).floor().long()  # (B, K)
    pos = torch.arange(size)[None, None, :]  # (1, 1, size)
    return ((pos >= start[..., None]) & (pos < (start + w)[..., None])).any(dim=1)  # (B, size)


def spec_augment(z: torch.Tensor, cfg: Any, g: torch.Generator | None = None) -> torch.Tensor:
    """``z`` (B, 1, M, T) with SpecAugment's band and frame masks (cfg: ``ModelConfig.audio``) set to 0."""
    B, _, M, T = z.shape
    freq = _band_mask(B, M, cfg.freq_masks, cfg.freq_width, g)  # (B, M)
    time = _band_mask(B, T, cfg.time_masks, cfg.time_width, g)  # (B, T)
    hidden = freq[:, None, :, None] | time[:, None, None, :]  # (B, 1, M, T)
    return z.masked_fill(hidden, 0.0)


class AudioTokenizer(Tokenizer):
    """Waveforms ``(B, S)`` -> CLS + ``grid[0] * grid[1]`` spectrogram-patch tokens ``(B, 1 + P, dim)``.

    SpecAugment runs only in training mode (like dropout), so evaluation,
    probes and a served model read the whole spectrogram. Its masks come from
    ``generator`` when one is set (pretraining sets the views' generator, so a
    seeded loss is the same twice), else from torch's global generator.
    """

    has_cls = True
    pool = "mean"  # embeddings for probes and pretraining: mean of the patch tokens (glassbox.ssl.base)

    def __init__(self, n_samples: int, dim: int, cfg: Any) -> None:
        super().__init__()
        self.n_samples = n_samples
        self.cfg = cfg
        self.generator: torch.Generator | None = None
        frames = 1 + n_samples // cfg.hop
        if cfg.n_mels % cfg.patch_mels:
            fits = [p for p in range(1, cfg.n_mels + 1) if cfg.n_mels % p == 0]
            raise UserError(
                f"model.audio.patch_mels={cfg.patch_mels} does not divide n_mels={cfg.n_mels};"
                f" choose one of {', '.join(map(str, fits))}"
            )
        if frames < cfg.patch_frames:
            raise UserError(
                f"clips of {n_samples} samples give {frames} frames, fewer than"
                f" model.audio.patch_frames={cfg.patch_frames}; use longer clips or smaller patches"
            )
        self.grid = (cfg.n_mels // cfg.patch_mels, frames // cfg.patch_frames)
        self.frames = self.grid[1] * cfg.patch_frames  # the ragged last frames are dropped
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.register_buffer(
            "fbank", mel_filterbank(cfg.n_fft, cfg.n_mels, AUDIO_RATE, cfg.f_min, cfg.f_max), persistent=False
        )
        self.register_buffer("mean", torch.zeros(cfg.n_mels, 1))  # per mel band, from training clips
        self.register_buffer("std", torch.ones(cfg.n_mels, 1))
        self.patchify = nn.Conv2d(1, dim, kernel_size=(cfg.patch_mels, cfg.patch_frames),
                                  stride=(cfg.patch_mels, cfg.patch_frames))  # fmt: skip
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid[0] * self.grid[1], dim) * 0.02)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.n_samples:
            raise UserError(
                f"the model reads clips of {self.n_samples} samples ({self.n_samples / AUDIO_RATE:g} s at"
                f" {AUDIO_RATE} Hz), got shape {tuple(x.shape)}; cut or pad them as in training"
                " (data.audio.seconds)"
            )

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel spectrogram, not yet standardized, cut to whole patches."""
        self._check(x)
        cfg = self.cfg
        return log_mel(x.float(), self.fbank, self.window, cfg.n_fft, cfg.hop)[..., : self.frames]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, frames) standardized log-mel spectrogram: what the patches are cut from."""
        return ((self.raw_features(x) - self.mean) / self.std)[:, None]

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, 1 + P, dim)``, CLS first, positions added, of features ``z`` (B, 1, M, T)."""
        tokens = self.patchify(z).flatten(2).transpose(1, 2)  # (B, P, dim), mel-major like the grid
        tokens = torch.cat([self.cls.expand(z.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + P, dim)
        return tokens + self.pos

    def fit(self, X: torch.Tensor) -> None:
        sums = torch.zeros(self.cfg.n_mels, dtype=torch.float64)
        squares = torch.zeros_like(sums)
        count = 0
        for i in range(0, len(X), 256):
            f = self.raw_features(X[i : i + 256]).double()  # (b, M, T)
            sums += f.sum(dim=(0, 2))
            squares += f.pow(2).sum(dim=(0, 2))
            count += f.shape[0] * f.shape[2]
        mean = sums / max(count, 1)
        std = (squares / max(count, 1) - mean.pow(2)).clamp(min=0).sqrt()
        self.mean.copy_(mean[:, None].float())
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std))[:, None].float())

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        z = self.features(x)  # (B, 1, M, T)
        if self.training:
            z = spec_augment(z, self.cfg, self.generator)
        return self.embed(z)


def audio_tokens(cfg: Any, n_samples: int) -> int:
    """Tokens per clip the blocks see (patches plus CLS), without building a tokenizer."""
    a = cfg.audio
    frames = 1 + n_samples // a.hop
    return (a.n_mels // a.patch_mels) * (frames // a.patch_frames) + 1


def frame_seconds(cfg: Any) -> float:
    """Seconds between spectrogram frames (for axes in the report)."""
    return cfg.hop / AUDIO_RATE
