"""eSpeak NG through ctypes: speak words with a voice, a rate and a pitch, and return int16 PCM.

The PyPI package espeakng-loader ships ``libespeak-ng`` with its voice data
(about 100 voice variants under ``voices/!v`` and many accents), so speech is
made on the machine with nothing downloaded. Its C API is small:
``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, ...)`` returns the sample rate
(22,050 Hz), a synth callback receives the samples, ``espeak_Synth`` speaks.

Why a separate process: the library keeps state between utterances that no
call resets (the pitch flutter's phase among others; ``espeak_ng_SetRandSeed``
fixes only the noise sources), so the same word comes out slightly different
depending on what was spoken before it in the same process. A fresh process
that speaks a fixed list in a fixed order gives the same samples every time,
which is what a seeded data set needs. ``synthesize`` therefore runs this file
as a script (``python espeak.py``), which imports neither torch nor glassbox,
and reads the clips back from a temporary ``.npz``.

>>> variants()[:3]  # doctest: +SKIP
['Alex', 'Alicia', 'Andrea']
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RATE_HZ = 22_050  # what eSpeak NG synthesizes at
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_ERROR = "the spoken-digits data set needs eSpeak NG: pip install 'glassbox[audio]' (espeakng-loader)"


def available() -> bool:
    """Whether espeakng-loader is installed (it carries the library and its voices)."""
    import importlib.util

    return importlib.util.find_spec("espeakng_loader") is not None


def data_path() -> Path:
    """The ``espeak-ng-data`` folder inside espeakng-loader; UserError when it is missing."""
    if not available():
        from glassbox.errors import UserError

        raise UserError(_ERROR)
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


def variants() -> list[str]:
    """Names of the voice variants (files under ``voices/!v``), sorted: the speakers of the data set."""
    return sorted(p.name for p in (data_path() / "voices" / "!v").iterdir() if p.is_file())


def variant_info(name: str) -> dict[str, Any]:
    """What a variant file says about its sound: gender, base pitch, whether it uses the Klatt synthesizer."""
    info: dict[str, Any] = {"gender": None, "pitch": None, "klatt": False}
    for line in (data_path() / "voices" / "!v" / name).read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        key = parts[0].lower()
        if key == "gender" and len(parts) > 1 and info["gender"] is None:
            info["gender"] = parts[1].lower()
        elif key == "pitch" and len(parts) > 2:
            info["pitch"] = (int(parts[1]), int(parts[2]))
        elif key == "klatt":
            info["klatt"] = True
    return info


def synthesize(items: list[dict[str, Any]], timeout: float = 600.0) -> list[Any]:
    """int16 PCM at ``RATE_HZ`` for each item ``{"voice", "text", "rate", "pitch", "seed"}``, in order.

    ``voice`` is eSpeak's ``language+variant`` (``en-us+m1``); ``rate`` in
    words per minute (80-450), ``pitch`` 0-99. Runs in a fresh process (see
    the module docstring), so the same list always gives the same samples.
    """
    import subprocess
    import tempfile

    import numpy as np

    data_path()  # the clear error, before a process is started
    with tempfile.TemporaryDirectory(prefix="glassbox-espeak-") as tmp:
        job, out = Path(tmp, "job.json"), Path(tmp, "clips.npz")
        job.write_text(json.dumps({"items": items, "out": str(out)}))
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(job)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            tail = " ".join(done.stderr.split()[-40:])
            raise RuntimeError(f"eSpeak NG synthesis failed: {tail}")
        with np.load(out) as z:
            flat, ends = z["samples"], z["ends"]
    starts = np.concatenate([[0], ends[:-1]])
    return [flat[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def _worker(job_file: str) -> None:
    """The child process: speak every item of the job in order, save all clips into one ``.npz``."""
    import ctypes

    import espeakng_loader
    import numpy as np

    job = json.loads(Path(job_file).read_text())
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    callback_type = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )
    chunks: list[np.ndarray] = []

    def collect(wav: Any, n: int, events: Any) -> int:
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0: go on synthesizing

    callback = callback_type(collect)  # kept referenced for the life of the process
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate != RATE_HZ:
        raise SystemExit(f"espeak_Initialize returned {rate}, expected {RATE_HZ} Hz")
    lib.espeak_SetSynthCallback(callback)
    clips, ends, total = [], [], 0
    for item in job["items"]:
        chunks.clear()
        if lib.espeak_SetVoiceByName(item["voice"].encode()) != 0:
            raise SystemExit(f"eSpeak NG has no voice '{item['voice']}'")
        lib.espeak_SetParameter(_PARAM_RATE, int(item["rate"]), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(item["pitch"]), 0)
        lib.espeak_ng_SetRandSeed(ctypes.c_long(int(item["seed"])))
        text = item["text"].encode()
        lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        lib.espeak_Synchronize()
        clip = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        clips.append(clip)
        total += len(clip)
        ends.append(total)
    flat = np.concatenate(clips) if clips else np.zeros(0, np.int16)
    np.savez(job["out"], samples=flat.astype(np.int16), ends=np.asarray(ends, dtype=np.int64))


if __name__ == "__main__":
    _worker(sys.argv[1])
