"""spoken-digits (generated with eSpeak NG) and audio:DIR (WAV files): contents, seeds, cache, splits."""

import wave

import numpy as np
import pytest
import torch

from glassbox.config import AudioDataConfig
from glassbox.data import acoustics, load_dataset, split_dataset
from glassbox.data.audio import _LAST_LOAD, cache_dir, generation_plan, speech
from glassbox.errors import UserError

from .conftest import TINY


def tiny(**extra):
    return load_dataset("spoken-digits", audio={**TINY, **extra})


def test_the_data_set_is_what_it_says(espeak):
    ds = tiny()
    assert ds.kind == "audio" and ds.task == "classification"
    assert ds.X.shape == (18, 8000) and ds.X.dtype == torch.float32  # 6 voices x 3 words, 0.5 s at 16 kHz
    assert ds.classes == ["zero", "one", "two"] and ds.y.bincount().tolist() == [6, 6, 6]
    assert set(ds.row_info) >= {"voice", "family", "accent", "rate", "pitch", "snr"}
    assert set(ds.sensitive.tolist()) == {"female", "klatt", "male"}  # few voices still cover every family
    assert float(ds.X.abs().max()) <= 1.0
    rms = ds.X.pow(2).mean(1).sqrt()
    assert (rms > 0.02).all()  # every clip holds a word


def test_same_seed_same_bytes_across_fresh_generations(espeak, tmp_path, monkeypatch):
    """The hash test: made twice from nothing (two empty caches), the data is the same; other seeds differ."""
    digests = []
    for k in range(2):
        monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / f"c{k}"))
        ds = tiny()
        assert _LAST_LOAD["cached"] is False
        digests.append(ds.digest())
    assert digests[0] == digests[1]
    assert tiny(seed=1).digest() != digests[0]
    assert tiny().digest() == digests[0] and _LAST_LOAD["cached"] is True  # now from the cache


def test_cache_is_keyed_by_what_makes_the_speech(espeak):
    tiny()
    files = set(cache_dir().glob("spoken-digits-*.npy"))
    tiny(snr=10.0)  # noise is applied on load: no new synthesis
    assert set(cache_dir().glob("spoken-digits-*.npy")) == files
    tiny(rate=[150, 160])
    assert len(set(cache_dir().glob("spoken-digits-*.npy"))) == len(files) + 1


def test_noise_is_at_the_asked_snr_and_seeded(espeak):
    clean, noisy = tiny(), tiny(snr=10.0)
    d = (noisy.X - clean.X).numpy()
    snrs = [acoustics.snr_db(clean.X[i].numpy(), d[i]) for i in range(len(d))]
    assert np.allclose(snrs, 10.0, atol=0.05)
    assert noisy.digest() == tiny(snr=10.0).digest()
    assert (noisy.row_info["snr"] == 10.0).all()
    wet = tiny(reverb=0.4)
    assert not np.allclose(wet.X.numpy(), clean.X.numpy())


def test_splits_hold_out_whole_voices(espeak):
    ds = tiny()
    train, val, test = split_dataset(ds, 0.2, 0.2, seed=0)
    voices = [set(part.groups.tolist()) for part in (train, val, test)]
    assert not (voices[0] & voices[1] or voices[0] & voices[2] or voices[1] & voices[2])
    assert len(train) + len(val) + len(test) == len(ds)
    assert split_dataset(ds, 0.2, 0.2, seed=0)[2].digest() == test.digest()


def test_plan_draws_rates_and_pitches_in_range():
    cfg = AudioDataConfig(takes=2, rate=(140, 150), pitch=(30, 31), voices=3)
    pytest.importorskip("espeakng_loader")
    plan = generation_plan(cfg)
    assert len(plan) == 3 * 10 * 2
    assert all(140 <= p["rate"] <= 150 and 30 <= p["pitch"] <= 31 for p in plan)
    assert plan == generation_plan(cfg)


def test_generation_speed_is_measured(espeak, tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path))
    clips, plan = speech(AudioDataConfig(**TINY))
    assert clips.dtype == np.int16 and len(plan) == 18
    assert _LAST_LOAD["seconds"] < 30


def test_unknown_audio_key_names_the_nearest():
    from glassbox.config import load_recipe

    with pytest.raises(UserError, match="did you mean 'data.audio.voices'"):
        load_recipe(None, ["data.source=spoken-digits", "data.audio.voice=3"])


# -- audio:DIR ----------------------------------------------------------------------------
def write_wav(path, x, rate=16000, width=2, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.repeat(
        np.round(np.asarray(x) * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}")[:, None], channels, 1
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_wav_folder_loads_resamples_and_pads(tmp_path):
    t = np.arange(8000) / 16000
    write_wav(tmp_path / "hi" / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t))
    write_wav(tmp_path / "lo" / "b.wav", 0.5 * np.sin(2 * np.pi * 220 * np.arange(4410) / 44100), rate=44100,
              channels=2)  # fmt: skip
    ds = load_dataset(f"audio:{tmp_path}", audio={"seconds": 0.25})
    assert ds.kind == "audio" and ds.classes == ["hi", "lo"] and ds.X.shape == (2, 4000)
    assert abs(float(ds.X[0].abs().max()) - 0.5) < 0.01
    assert float(ds.X[1, 1700:].abs().max()) == 0.0  # 0.1 s at 44.1 kHz became 1600 samples, then silence
    assert ds.row_info["file"].tolist() == ["hi/a.wav", "lo/b.wav"]


def test_wav_folder_refuses_other_rates_when_asked(tmp_path):
    write_wav(tmp_path / "a" / "1.wav", np.zeros(800), rate=8000)
    write_wav(tmp_path / "b" / "2.wav", np.zeros(1600))
    with pytest.raises(UserError, match=r"1.wav is sampled at 8000 Hz, not 16000 Hz; convert it, or set"):
        load_dataset(f"audio:{tmp_path}", audio={"resample": False})


def test_unreadable_wav_is_one_clear_error(tmp_path):
    write_wav(tmp_path / "a" / "1.wav", np.zeros(800))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.wav").write_bytes(b"not a wav at all")
    with pytest.raises(UserError, match=r"cannot read audio file .*2.wav: .*PCM WAV"):
        load_dataset(f"audio:{tmp_path}")


def test_wav_folder_needs_two_classes(tmp_path):
    write_wav(tmp_path / "a" / "1.wav", np.zeros(800))
    with pytest.raises(UserError, match="at least two"):
        load_dataset(f"audio:{tmp_path}")
    with pytest.raises(UserError, match="not found"):
        load_dataset(f"audio:{tmp_path / 'nope'}")
