"""Self-supervised audio: two views of a clip for contrastive learning, and masked spectrogram patches.

Views work on the waveform, batched, each draw from the given generator:
a speed change (pitch and tempo together, as a resampling), a shift in time,
a gain, and background noise (white, pink or brown) at a random SNR. The
tokenizer adds SpecAugment's masks on top while the model is in training
mode, so a view differs from its pair in voice-like ways (speed, pitch,
loudness, noise) and in what parts of the spectrogram survive; what is left
in common is the word.

Masked modeling is MAE on spectrogram patches (Audio-MAE, Huang et al.,
NeurIPS 2022): a random subset of the ``patch_mels x patch_frames`` patches
is hidden, the encoder runs on CLS and the visible patches only, and a
one-block decoder with mask tokens predicts the hidden patches' standardized
log-mel values. Patches do not overlap, so no visible token reads a hidden
value.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> audio_view(torch.randn(3, 8000) * 0.1, g).shape
torch.Size([3, 8000])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glassbox.data.base import AUDIO_RATE

GAIN_DB = 6.0  # views are up to this much louder or quieter


def _colored(B: int, S: int, g: torch.Generator) -> torch.Tensor:
    """(B, S) unit-RMS noise, each row white, pink or brown (amplitude ~ f^0, f^-1/2, f^-1)."""
    spectrum = torch.fft.rfft(torch.randn(B, S, generator=g), dim=1)  # (B, S//2+1)
    f = torch.arange(spectrum.shape[1], dtype=torch.float32).clamp(min=1.0)
    exponent = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (B,), generator=g)]  # (B,)
    noise = torch.fft.irfft(spectrum / f[None, :] ** exponent[:, None], n=S, dim=1)
    noise = noise - noise.mean(dim=1, keepdim=True)
    return noise / noise.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-12)


def audio_view(
    x: torch.Tensor,
    g: torch.Generator,
    *,
    speed: float = 0.1,
    shift: float = 0.1,
    snr: float = 10.0,
) -> torch.Tensor:
    """A random version of each clip ``x`` (B, S): speed x(1 +- speed), shift +-``shift`` s, gain, noise.

    The output sample t reads the input at ``t * r + offset`` (linear
    interpolation, silence outside the clip), so r > 1 is faster and
    higher. Noise is at an SNR uniform in ``[snr, snr + 20]`` dB.
    """
    B, S = x.shape
    u = torch.rand(B, 4, generator=g)  # (B, 4): speed, shift, gain, SNR
    r = 1.0 + speed * (2 * u[:, :1] - 1)  # (B, 1)
    offset = shift * AUDIO_RATE * (2 * u[:, 1:2] - 1)  # (B, 1) samples
    pos = torch.arange(S, dtype=torch.float32)[None, :] * r + offset  # (B, S) where each sample reads
    lo = pos.floor()
    frac = pos - lo
    lo = lo.long()
    inside = (lo >= 0) & (lo + 1 < S)  # (B, S)
    a = torch.gather(x, 1, lo.clamp(0, S - 1))
    b = torch.gather(x, 1, (lo + 1).clamp(0, S - 1))
    out = torch.where(inside, a + (b - a) * frac, torch.zeros_like(x))  # (B, S)
    out = out * 10 ** (GAIN_DB * (2 * u[:, 2:3] - 1) / 20)
    power = out.pow(2).mean(dim=1, keepdim=True)  # (B, 1)
    level = snr + 20 * u[:, 3:4]  # (B, 1) dB
    return out + (power / 10 ** (level / 10)).sqrt() * _colored(B, S, g).to(out.dtype)


def spectrogram_patches(z: torch.Tensor, patch_mels: int, patch_frames: int) -> torch.Tensor:
    """(B, P, patch_mels * patch_frames) the patches of ``z`` (B, 1, M, T) in the tokenizer's order."""
    k = (patch_mels, patch_frames)
    return F.unfold(z, kernel_size=k, stride=k).transpose(1, 2)


def encode_visible_audio(model: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """(B, 1 + K, dim) blocks' output on CLS and the visible patches ``keep`` (B, K), and the features."""
    tok = model.tokenizer
    z = tok.features(x)  # (B, 1, M, T), standardized
    tokens = model.drop(tok.embed(z))  # (B, 1 + P, dim)
    B = x.shape[0]
    idx = torch.cat([torch.zeros(B, 1, dtype=torch.long), keep + 1], dim=1)  # (B, 1 + K)
    h = torch.gather(tokens, 1, idx[..., None].expand(-1, -1, tokens.shape[-1]))  # (B, 1 + K, dim)
    for block in model.blocks:
        h, _ = block(h)
    return h, z


def audio_mae_loss(
    method: Any, model: nn.Module, x: torch.Tensor, g: torch.Generator
) -> tuple[torch.Tensor, dict]:
    """Masked-patch reconstruction loss of ``method`` (``Masked``, whose decoder it uses) on clips ``x``."""
    from glassbox.ssl.masked import hidden_mse, random_keep

    tok = model.tokenizer
    B = x.shape[0]
    P = tok.grid[0] * tok.grid[1]
    n_keep = max(1, round(P * (1 - method.ratio)))
    keep = random_keep(B, P, n_keep, g)  # (B, K)
    hidden = torch.ones(B, P, dtype=torch.bool)
    hidden[torch.arange(B)[:, None], keep] = False  # (B, P) True: hidden
    h, z = encode_visible_audio(model, x, keep)
    idx = torch.cat([torch.zeros(B, 1, dtype=torch.long), keep + 1], dim=1)  # (B, 1 + K)
    h = method.dec_in(model.norm(h))  # (B, 1 + K, dim)
    full = method.mask_token.expand(B, 1 + P, -1).clone()  # (B, 1 + P, dim)
    full.scatter_(1, idx[..., None].expand(-1, -1, h.shape[-1]), h)
    d, _ = method.decoder(full + method.dec_pos)
    pred = method.dec_out(method.dec_norm(d[:, 1:]))  # (B, P, pm * pf)
    target = spectrogram_patches(z, tok.cfg.patch_mels, tok.cfg.patch_frames)  # (B, P, pm * pf)
    rec = hidden_mse(pred, target, hidden)
    return rec, {"reconstruction": float(rec.detach())}
