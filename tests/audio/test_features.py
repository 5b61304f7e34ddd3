"""Log-mel features, SpecAugment and the audio tokenizer, checked against their definitions."""

import math

import numpy as np
import pytest
import torch

from glassbox.config import AudioModelConfig, ModelConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.nn import build_model, load_model, save_model
from glassbox.nn.audio import AudioTokenizer, log_mel, mel_filterbank, spec_augment


def slow_filterbank(n_fft, n_mels, sr, f_min, f_max):
    """The definition, one weight at a time: triangles between mel-spaced corners, in Hz."""
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    lo, hi = mel(f_min), mel(f_max)
    corners = [hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    out = np.zeros((n_fft // 2 + 1, n_mels))
    for k in range(n_fft // 2 + 1):
        f = k * sr / n_fft
        for m in range(n_mels):
            a, b, c = corners[m], corners[m + 1], corners[m + 2]
            if a <= f <= b:
                out[k, m] = (f - a) / (b - a)
            elif b < f <= c:
                out[k, m] = (c - f) / (c - b)
    return out


@pytest.mark.parametrize(
    ("n_fft", "n_mels", "f_min", "f_max"), [(400, 32, 20.0, None), (512, 40, 0.0, 7600.0)]
)
def test_mel_filterbank_matches_its_definition(n_fft, n_mels, f_min, f_max):
    fast = mel_filterbank(n_fft, n_mels, 16000, f_min, f_max).numpy()
    slow = slow_filterbank(n_fft, n_mels, 16000, f_min, 8000.0 if f_max is None else f_max)
    assert fast.shape == (n_fft // 2 + 1, n_mels)
    np.testing.assert_allclose(fast, slow, atol=1e-5)  # float32 weights of a float64 definition
    assert (fast.max(axis=0) > 0).all()  # no empty filter at these sizes


def test_filterbank_refuses_bad_band():
    with pytest.raises(UserError, match="f_min < f_max"):
        mel_filterbank(400, 32, 16000, 5000.0, 1000.0)


def test_log_mel_matches_a_direct_dft():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1600, generator=g)
    n_fft, hop = 400, 160
    fb = mel_filterbank(n_fft, 16)
    window = torch.hann_window(n_fft)
    fast = log_mel(x, fb, window, n_fft, hop)  # (2, 16, 11)
    padded = np.pad(x.double().numpy(), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    dft = np.exp(-2j * np.pi * k * n / n_fft)  # (F, n_fft)
    t = 4
    frame = padded[:, t * hop : t * hop + n_fft] * window.double().numpy()
    power = np.abs(frame @ dft.T) ** 2  # (2, F)
    slow = np.log(power @ fb.double().numpy() + 1e-6)  # (2, 16)
    assert fast.shape == (2, 16, 11)
    np.testing.assert_allclose(fast[:, :, t].numpy(), slow, rtol=1e-4, atol=1e-3)


def test_a_tone_lights_the_band_that_holds_its_frequency():
    sr, f0 = 16000, 1000.0
    x = torch.sin(2 * math.pi * f0 * torch.arange(8000) / sr)[None]
    fb = mel_filterbank(400, 32)
    spec = log_mel(x, fb, torch.hann_window(400), 400, 160)[0].mean(1)  # (32,)
    assert int(spec.argmax()) == int(fb[round(f0 * 400 / sr)].argmax())


def test_spec_augment_masks_whole_bands_and_frames_and_is_seeded():
    cfg = AudioModelConfig(freq_masks=1, freq_width=4, time_masks=1, time_width=5)
    z = torch.ones(8, 1, 32, 40)
    a = spec_augment(z, cfg, torch.Generator().manual_seed(1))
    b = spec_augment(z, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    zero = a[:, 0] == 0  # (8, 32, 40)
    rows, cols = zero.all(dim=2), zero.all(dim=1)  # whole bands, whole frames
    assert (rows.sum(1) <= 4).all() and (cols.sum(1) <= 5).all()
    assert torch.equal(zero, rows[:, :, None] | cols[:, None, :])  # nothing else is masked
    off = spec_augment(z, AudioModelConfig(freq_masks=0, time_masks=0))
    assert torch.equal(off, z)


def _audio(n=24, samples=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset("s", "audio", "classification", 0.1 * torch.randn(n, samples, generator=g),
                   torch.randint(0, 3, (n,), generator=g), classes=["a", "b", "c"])  # fmt: skip


def test_tokenizer_augments_only_while_training_and_checks_lengths():
    tok = AudioTokenizer(4000, 16, AudioModelConfig())
    x = 0.1 * torch.randn(3, 4000)
    tok.eval()
    assert torch.equal(tok(x), tok(x))
    tok.train()
    torch.manual_seed(0)
    assert not torch.equal(tok(x), tok.eval()(x))
    assert tok(x).shape == (3, 1 + tok.grid[0] * tok.grid[1], 16)
    with pytest.raises(UserError, match="clips of 4000 samples"):
        tok(torch.zeros(2, 3000))
    with pytest.raises(UserError, match="patch_mels=5 does not divide"):
        AudioTokenizer(4000, 16, AudioModelConfig(patch_mels=5))


def test_fit_standardizes_each_band():
    data = _audio()
    model = build_model(ModelConfig(dim=16, depth=1, heads=2), data)
    z = model.tokenizer.features(data.X)  # (N, 1, M, T)
    assert torch.allclose(z.mean(dim=(0, 1, 3)), torch.zeros(32), atol=1e-3)
    assert torch.allclose(z.std(dim=(0, 1, 3), unbiased=False), torch.ones(32), atol=1e-2)


def test_audio_model_saves_and_loads_with_identical_outputs(tmp_path):
    data = _audio()
    model = build_model(ModelConfig(dim=16, depth=1, heads=2), data).eval()
    assert model.spec_["audio_samples"] == 4000 and model.spec_["kind"] == "audio"
    save_model(model, tmp_path)
    again = load_model(tmp_path)
    assert torch.equal(model(data.X[:5]), again(data.X[:5]))
