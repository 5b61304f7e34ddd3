"""Audio data: ``spoken-digits``, generated with eSpeak NG on the machine, and ``audio:DIR`` of WAV files.

``spoken-digits`` speaks the words zero to nine (``data.audio.words``) with
eSpeak NG's voice variants (about 100 speakers: ``voices/!v``) in several
English accents, each clip at its own speaking rate and pitch, resampled to
16 kHz and placed at a random offset in a fixed-length clip. Everything is
drawn from ``data.audio.seed``, and the synthesized clips are cached on disk
(``cache_dir()``), keyed by a hash of what made them, so the second load
takes a fraction of a second. Background noise and room reverberation
(``data.audio.snr``, ``data.audio.reverb``) are applied at load time from
the same seed, so changing them never regenerates the speech.

Every clip records its voice in ``Dataset.groups``: splits hold out whole
voices, so the test set is spoken by speakers never heard in training. The
voice family (``klatt``: the Klatt synthesizer; ``female`` and ``male`` by
the variant's gender or base pitch) is the sensitive column, by which the
splits are stratified and the report breaks accuracy down.

``audio:DIR`` reads one sub-folder of ``.wav`` files per class with the
standard library's ``wave`` (PCM, 8 to 32 bit, any channels, averaged to
mono), resampled to 16 kHz unless ``data.audio.resample`` is false.

>>> from glassbox.config import AudioDataConfig
>>> plan = generation_plan(AudioDataConfig(voices=3, takes=1, words=["yes", "no"]))
>>> len(plan), sorted(plan[0])
(6, ['accent', 'family', 'pitch', 'rate', 'seed', 'text', 'variant'])
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glassbox.config import AudioDataConfig, DataConfig
from glassbox.data import acoustics
from glassbox.data.base import AUDIO_RATE, Dataset
from glassbox.errors import UserError

GENERATOR_VERSION = 1  # bump when generation changes, so old caches are not read as new data
CACHE_ENV = "GLASSBOX_CACHE"
FAMILIES = ("female", "klatt", "male")
_LAST_LOAD: dict[str, Any] = {}  # how the last spoken-digits load went (seconds, cached): for benchmarks


def cache_dir() -> Path:
    """Where generated data sets are kept: ``$GLASSBOX_CACHE``, else ``$XDG_CACHE_HOME/glassbox``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache``, as the XDG convention says.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "glassbox"


def voice_family(variant: str) -> str:
    """``klatt``, ``female`` or ``male``: how a variant's voice is made, from its eSpeak file."""
    from glassbox.data.espeak import variant_info

    info = variant_info(variant)
    if info["klatt"]:
        return "klatt"
    if info["gender"] == "female" or (info["pitch"] is not None and info["pitch"][0] >= 120):
        return "female"
    return "male"


def choose_voices(n: int | None, seed: int) -> list[tuple[str, str]]:
    """(variant, family) of ``n`` variants (all when None), drawn family by family in turn so few voices
    still cover every family; sorted by name."""
    from glassbox.data.espeak import variants

    by_family: dict[str, list[str]] = {}
    for v in variants():
        by_family.setdefault(voice_family(v), []).append(v)
    if n is None:
        return sorted((v, f) for f, vs in by_family.items() for v in vs)
    rng = np.random.default_rng(seed + 1)
    queues = {f: list(rng.permutation(vs)) for f, vs in sorted(by_family.items())}
    picked: list[tuple[str, str]] = []
    while len(picked) < n and any(queues.values()):
        for f in sorted(queues):
            if queues[f] and len(picked) < n:
                picked.append((str(queues[f].pop(0)), f))
    return sorted(picked)


def generation_plan(cfg: AudioDataConfig) -> list[dict[str, Any]]:
    """One dict per clip (variant, family, accent, text, rate, pitch, seed): what eSpeak is asked to say."""
    voices = choose_voices(cfg.voices, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    plan = []
    for variant, family in voices:
        for word in cfg.words:
            for _ in range(cfg.takes):
                plan.append({
                    "variant": variant, "family": family, "text": word,
                    "accent": str(cfg.accents[int(rng.integers(len(cfg.accents)))]),
                    "rate": int(rng.integers(cfg.rate[0], cfg.rate[1] + 1)),
                    "pitch": int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
                    "seed": int(rng.integers(1, 2**31 - 1)),
                })  # fmt: skip
    return plan


def _speech_key(cfg: AudioDataConfig) -> str:
    """Hash of everything that decides the synthesized clips (not noise or reverb, applied on load)."""
    import importlib.metadata

    fields = cfg.model_dump(mode="json", exclude={"snr", "reverb", "resample"})
    version = importlib.metadata.version("espeakng-loader")
    blob = json.dumps({"v": GENERATOR_VERSION, "espeak": version, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _synthesize(cfg: AudioDataConfig, plan: list[dict[str, Any]]) -> np.ndarray:
    """(N, S) int16 clips at 16 kHz, one per plan entry."""
    from glassbox.data.espeak import RATE_HZ, synthesize

    items = [{"voice": f"{p['accent']}+{p['variant']}", "text": p["text"], "rate": p["rate"],
              "pitch": p["pitch"], "seed": p["seed"]} for p in plan]  # fmt: skip
    pcm = synthesize(items)
    length = round(cfg.seconds * AUDIO_RATE)
    rng = np.random.default_rng(cfg.seed + 2)  # offsets: their own stream
    out = np.zeros((len(plan), length), dtype=np.int16)
    for i, clip in enumerate(pcm):
        x = acoustics.resample(clip.astype(np.float32) / 32768.0, RATE_HZ, AUDIO_RATE)
        out[i] = np.round(np.clip(acoustics.fit_clip(x, length, rng, AUDIO_RATE), -1, 1) * 32767)
    return out


def speech(cfg: AudioDataConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The clean clips (N, S) int16 and their plan, from the cache or synthesized (then cached)."""
    plan = generation_plan(cfg)
    path = cache_dir() / f"spoken-digits-{_speech_key(cfg)}.npy"
    start = time.perf_counter()
    if path.is_file():
        try:
            clips = np.load(path)
            if clips.shape == (len(plan), round(cfg.seconds * AUDIO_RATE)):
                _LAST_LOAD.update(cached=True, seconds=time.perf_counter() - start, path=str(path))
                return clips, plan
        except (OSError, ValueError):
            pass  # a damaged cache file is made again below
    clips = _synthesize(cfg, plan)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, clips)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a read-only cache only costs the next load its synthesis
    _LAST_LOAD.update(cached=False, seconds=time.perf_counter() - start, path=str(path))
    return clips, plan


def degrade(X: np.ndarray, snr: float | None, reverb: float, seed: int) -> np.ndarray:
    """Float clips (N, S) with reverb, then noise at ``snr`` dB; each clip has its own seeded stream."""
    if snr is None and reverb == 0:
        return X
    out = np.empty_like(X)
    for i in range(len(X)):
        rng = np.random.default_rng([seed, i])
        x = acoustics.reverberate(X[i], reverb, rng) if reverb > 0 else X[i]
        out[i] = acoustics.add_noise(x, snr, rng) if snr is not None else x
    return out


def spoken_digits(cfg: DataConfig) -> Dataset:
    a = cfg.audio
    clips, plan = speech(a)
    X = clips.astype(np.float32) / 32767.0  # (N, S)
    X = degrade(X, a.snr, a.reverb, a.seed + 3)
    word_id = {w: k for k, w in enumerate(a.words)}
    voices = np.array([p["variant"] for p in plan])
    families = np.array([p["family"] for p in plan])
    info = {
        "voice": voices,
        "family": families,
        "accent": np.array([p["accent"] for p in plan]),
        "rate": np.array([p["rate"] for p in plan]),
        "pitch": np.array([p["pitch"] for p in plan]),
        "snr": np.full(len(plan), np.nan if a.snr is None else a.snr),
    }
    noise = "clean" if a.snr is None else f"noise at {a.snr:g} dB SNR"
    return Dataset(
        name="spoken-digits",
        kind="audio",
        task="classification",
        X=torch.from_numpy(X),  # (N, S) at 16 kHz
        y=torch.tensor([word_id[p["text"]] for p in plan], dtype=torch.long),  # (N,)
        classes=list(a.words),
        sensitive=families,
        sensitive_name="voice_family",
        groups=voices,
        row_info=info,
        description=(
            f"{len(plan)} clips of {len(a.words)} words by {len(set(voices.tolist()))} eSpeak NG voices in"
            f" {len(a.accents)} accents, {a.seconds:g} s at {AUDIO_RATE} Hz, {noise}"
            + (f", reverberation RT60 {a.reverb:g} s" if a.reverb else "")
        ),
    )


# -- the user's own WAV files ---------------------------------------------------------------
def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(samples float32 in [-1, 1], mono, sample rate) of a PCM WAV file; UserError when it cannot be read."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise UserError(
            f"cannot read audio file {path}: {reason}; glassbox reads PCM WAV files, so convert it"
            " (e.g. ffmpeg -i in.mp3 -ac 1 -ar 16000 out.wav) or delete it"
        ) from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128  # 8-bit WAV is unsigned
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        v = b[:, 0].astype(np.int32) | b[:, 1].astype(np.int32) << 8 | b[:, 2].astype(np.int32) << 16
        x = (np.where(v >= 2**23, v - 2**24, v) / 2**23).astype(np.float32)
    elif width in (2, 4):
        x = np.frombuffer(raw, f"<i{width}").astype(np.float32) / 2 ** (8 * width - 1)
    else:
        raise UserError(f"cannot read audio file {path}: {8 * width}-bit samples; save it as 16-bit PCM WAV")
    usable = len(x) - len(x) % channels
    return x[:usable].reshape(-1, channels).mean(1), rate


def load_audio_folder(path: str | Path, cfg: DataConfig) -> Dataset:
    """Clips (N, S) at 16 kHz from ``DIR/<class>/*.wav``; classes are the sorted sub-folder names.

    Every clip is cut or zero-padded to ``data.audio.seconds``. A file at
    another sample rate is resampled, or refused when ``data.audio.resample``
    is false.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "a file" if root.exists() else "not found"
        raise UserError(
            f"audio folder {root} is {what}; audio:DIR expects a folder with one sub-folder of .wav files"
            " per class"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [f for f in folders if any(f.rglob("*.wav")) or any(f.rglob("*.WAV"))]
    if len(classes) < 2:
        raise UserError(
            f"{root} has {len(classes)} class sub-folder(s) with .wav files; a classifier needs at least"
            f" two, e.g. {root / 'yes'}/1.wav and {root / 'no'}/2.wav"
        )
    length = round(cfg.audio.seconds * AUDIO_RATE)
    clips, labels, names = [], [], []
    for k, folder in enumerate(classes):
        for file in sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wav" and p.is_file()):
            x, rate = read_wav(file)
            if rate != AUDIO_RATE:
                if not cfg.audio.resample:
                    raise UserError(
                        f"{file} is sampled at {rate} Hz, not {AUDIO_RATE} Hz; convert it, or set"
                        " data.audio.resample=true to resample it on load"
                    )
                x = acoustics.resample(x, rate, AUDIO_RATE)
            clip = np.zeros(length, dtype=np.float32)
            clip[: min(length, len(x))] = x[:length]
            clips.append(clip)
            labels.append(k)
            names.append(str(file.relative_to(root)))
    return Dataset(
        name=root.name,
        kind="audio",
        task="classification",
        X=torch.from_numpy(np.stack(clips)),  # (N, S)
        y=torch.tensor(labels, dtype=torch.long),  # (N,)
        classes=[f.name for f in classes],
        row_info={"file": np.array(names)},
        description=f"{len(clips)} WAV clips in {len(classes)} classes from {root}, {cfg.audio.seconds:g} s",
    )
