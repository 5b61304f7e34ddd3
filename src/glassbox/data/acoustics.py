"""Signal tools for the audio sources: resampling, fitting a clip, background noise, room reverberation.

All in numpy on one clip at a time (data generation, not training), each
random draw from a ``numpy.random.Generator`` the caller seeds, so a data set
made twice is the same to the bit.

- ``resample``: polyphase (scipy's ``resample_poly``, scipy comes with
  scikit-learn), e.g. eSpeak's 22,050 Hz to 16 kHz is up 320, down 441;
- ``fit_clip``: trims silence, sets the loudness, places the word at a random
  offset in a fixed-length clip;
- ``colored_noise``: white, pink (1/f) or brown (1/f^2) noise, shaped in the
  frequency domain; ``add_noise`` mixes it in at a signal-to-noise ratio in dB;
- ``room_impulse``: a direct path plus an exponentially decaying noise tail
  of reverberation time RT60, the usual statistical model of a room;
  ``reverberate`` convolves with it.

>>> rng = np.random.default_rng(0)
>>> x = np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
>>> noisy = add_noise(x, 10.0, rng)
>>> round(snr_db(x, noisy - x), 1)
10.0
"""

from __future__ import annotations

from math import gcd

import numpy as np

NOISE_COLORS = ("white", "pink", "brown")
TARGET_RMS = 0.1  # about -20 dBFS: every clip equally loud, peaks well below clipping


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``x`` (S,) float resampled from ``rate_in`` to ``rate_out`` Hz (polyphase, anti-aliased)."""
    if rate_in == rate_out:
        return x.astype(np.float32)
    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    return resample_poly(x.astype(np.float64), rate_out // g, rate_in // g).astype(np.float32)


def trim_silence(x: np.ndarray, rate: int, threshold_db: float = -40.0) -> np.ndarray:
    """``x`` without its leading and trailing stretches quieter than ``threshold_db`` below its peak.

    Judged on 10 ms frames, so a single quiet sample inside a word never cuts it.
    """
    frame = max(1, rate // 100)
    n = len(x) // frame
    if n == 0:
        return x
    energy = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(1))  # (frames,)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 20))
    if len(loud) == 0:
        return x[:0]
    return x[loud[0] * frame : (loud[-1] + 1) * frame]


def fit_clip(x: np.ndarray, length: int, rng: np.random.Generator, rate: int) -> np.ndarray:
    """``x`` trimmed, scaled to ``TARGET_RMS`` and put at a random offset in ``length`` samples of silence.

    A word longer than the clip is cut with a 10 ms fade, so no click is
    left for a model to key on.
    """
    x = trim_silence(x, rate)
    out = np.zeros(length, dtype=np.float32)
    if len(x) == 0:
        return out
    x = x * (TARGET_RMS / max(float(np.sqrt((x**2).mean())), 1e-8))
    if len(x) > length:
        x = x[:length].copy()
        fade = min(len(x), rate // 100)
        x[-fade:] *= np.linspace(1.0, 0.0, fade)
    start = int(rng.integers(0, length - len(x) + 1))
    out[start : start + len(x)] = x
    return out


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """(n,) unit-RMS noise whose power falls as 1/f^0 (white), 1/f (pink) or 1/f^2 (brown)."""
    if color not in NOISE_COLORS:
        raise ValueError(f"noise color must be one of {NOISE_COLORS}, got {color!r}")
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0  # no DC blow-up
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[color]  # amplitude falls as f^-exponent
    noise = np.fft.irfft(spectrum / f**exponent, n)
    noise -= noise.mean()
    return (noise / max(float(np.sqrt((noise**2).mean())), 1e-12)).astype(np.float32)


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """10 log10 of the signal's power over the noise's."""
    ps = float((signal.astype(np.float64) ** 2).mean())
    pn = float((noise.astype(np.float64) ** 2).mean())
    return float(10 * np.log10(ps / max(pn, 1e-20)))


def add_noise(x: np.ndarray, snr: float, rng: np.random.Generator, color: str | None = None) -> np.ndarray:
    """``x`` plus noise scaled so that the signal-to-noise ratio is ``snr`` dB; color drawn when None.

    The signal's power is that of the whole clip, silence included, as a
    recording of one word is measured; a silent clip gets no noise.
    """
    color = color if color is not None else str(rng.choice(NOISE_COLORS))
    noise = colored_noise(len(x), color, rng)
    power = float((x.astype(np.float64) ** 2).mean())
    if power == 0:
        return x.astype(np.float32)
    scale = np.sqrt(power / 10 ** (snr / 10))
    return (x + scale * noise).astype(np.float32)


def room_impulse(rt60: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """(L,) a room's impulse response: 1 at t=0, then noise decaying by 60 dB over ``rt60`` seconds.

    The tail starts after a few milliseconds (the first reflections) and
    holds about as much energy as the direct path at RT60 = 0.5 s.
    """
    n = max(2, int(rt60 * rate))
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000): -60 dB at t = rt60
    tail[: int(0.003 * rate)] = 0.0
    tail *= 1.0 / max(float(np.sqrt((tail**2).sum())), 1e-12) * min(1.0, rt60 / 0.5) ** 0.5
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` as heard in a room of reverberation time ``rt60`` s, cut to its length, loudness kept."""
    from scipy.signal import fftconvolve

    from glassbox.data.base import AUDIO_RATE

    wet = fftconvolve(x, room_impulse(rt60, AUDIO_RATE, rng))[: len(x)]
    before, after = np.sqrt((x**2).mean()), np.sqrt((wet**2).mean())
    return (wet * (before / max(after, 1e-12))).astype(np.float32)
