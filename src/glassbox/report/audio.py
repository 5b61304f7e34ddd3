"""The "Audio" report section: what the model hears, and where it fails (voice family, accent, noise).

For an audio classifier the report adds, beside the confusion matrix every
classification report has:

- log-mel spectrograms of test clips, one per class, as the model computes
  them (its own tokenizer, so the picture is exactly the model's input);
- test accuracy by voice family and by accent (spoken-digits records both
  per clip), with the number of clips behind each figure;
- test accuracy by noise level: the test clips again with background noise
  mixed in at 20, 10, 5 and 0 dB SNR (seeded, white/pink/brown), a
  robustness curve of the trained model without retraining.

``audio_evaluation`` computes the numbers (``audio.json`` in the run);
``audio_section`` renders them.

>>> noise = [{"snr": None, "accuracy": 0.98, "rows": 50}, {"snr": 10.0, "accuracy": 0.9, "rows": 50}]
>>> ev = {"by_noise": noise,
...       "by": {"voice_family": {"male": {"rows": 30, "accuracy": 1.0}}}}
>>> s = audio_section(ev)
>>> s["title"], "10 dB" in s["html"], "90.0" in s["html"]
('Audio', True, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from html import escape
from typing import Any

import numpy as np

AUDIO_FILE = "audio.json"
NOISE_LEVELS = (None, 20.0, 10.0, 5.0, 0.0)  # dB SNR; None: the test clips as they are
BREAKDOWNS = {"family": "voice_family", "accent": "accent"}  # row_info column -> table name


def accuracy_by(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, Any]]:
    """{group: {"rows", "accuracy"}} over the rows of each distinct value of ``groups``, sorted."""
    out = {}
    for g in sorted(set(np.asarray(groups).astype(str).tolist())):
        rows = np.asarray(groups).astype(str) == g
        out[g] = {"rows": int(rows.sum()), "accuracy": float((y_true[rows] == y_pred[rows]).mean())}
    return out


def audio_evaluation(
    model: Any, test: Any, seed: int = 0, levels: Sequence[float | None] = NOISE_LEVELS
) -> dict[str, Any]:
    """Test accuracy overall, by voice family and accent (when the data records them) and by noise level."""
    import torch

    from glassbox.data.audio import degrade
    from glassbox.train.trainer import predict_proba

    y = test.y.numpy()
    pred = predict_proba(model, test).argmax(1)
    by = {name: accuracy_by(y, pred, test.row_info[col]) for col, name in BREAKDOWNS.items()
          if col in test.row_info}  # fmt: skip
    by_noise = []
    for snr in levels:
        if snr is None:
            acc = float((pred == y).mean())
        else:
            noisy = replace(test, X=torch.from_numpy(degrade(test.X.numpy(), float(snr), 0.0, seed + 5)))
            acc = float((predict_proba(model, noisy).argmax(1) == y).mean())
        by_noise.append({"snr": snr, "accuracy": acc, "rows": len(y)})
    return {"accuracy": float((pred == y).mean()), "rows": len(y), "by": by, "by_noise": by_noise}


def _table(title: str, rows: Mapping[str, Mapping[str, Any]]) -> str:
    body = "".join(
        f"<tr><td>{escape(str(k))}</td><td>{v['rows']}</td><td>{100 * v['accuracy']:.1f}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table><tr><th>{escape(title)}</th><th>test clips</th><th>accuracy (%)</th></tr>{body}</table>"


def spectrogram_plot(specs: np.ndarray, captions: Sequence[str], *, seconds_per_frame: float) -> bytes:
    """Log-mel spectrograms ``(n, n_mels, frames)`` side by side, low bands at the bottom."""
    from glassbox.report.plots import _figure, _png

    n = len(specs)
    columns = min(5, max(1, n))
    rows = int(np.ceil(n / columns))
    fig = _figure(2.3 * columns, 1.9 * rows + 0.3)
    lo, hi = float(np.percentile(specs, 5)), float(specs.max())
    for i in range(n):
        ax = fig.add_subplot(rows, columns, i + 1)
        frames = specs[i].shape[1]
        ax.imshow(specs[i], origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi,
                  extent=(0, frames * seconds_per_frame, 0, specs[i].shape[0]))  # fmt: skip
        ax.set_title(captions[i], fontsize=8)
        ax.tick_params(labelsize=7)
        if i % columns == 0:
            ax.set_ylabel("mel band", fontsize=7)
        if i >= n - columns:
            ax.set_xlabel("seconds", fontsize=7)
    fig.suptitle("Log-mel spectrograms of test clips, as the model computes them", fontsize=10)
    return _png(fig)


def example_figure(model: Any, test: Any) -> dict | None:
    """One test clip per class as the model's tokenizer sees it (before standardization), as a figure."""
    import torch

    from glassbox.data.base import AUDIO_RATE
    from glassbox.report.html import _figure

    if not hasattr(model.tokenizer, "raw_features") or len(test) == 0:
        return None
    y = test.y.numpy()
    rows = [int(np.flatnonzero(y == k)[0]) for k in range(test.n_classes) if (y == k).any()]
    with torch.no_grad():
        specs = model.tokenizer.raw_features(test.X[rows]).numpy()  # (n, M, T)
    voices = test.row_info.get("voice")
    captions = [f"{test.classes[y[r]]}" + (f" ({voices[r]})" if voices is not None else "") for r in rows]
    png = spectrogram_plot(specs, captions, seconds_per_frame=model.tokenizer.cfg.hop / AUDIO_RATE)
    return _figure("Log-mel spectrograms of test clips, one per class (speaker in brackets)", png,
                   "audio-spectrograms")  # fmt: skip


def audio_section(evaluation: Mapping[str, Any], figures: Sequence[Mapping[str, Any]] = ()) -> dict:
    """Section dict for ``write_report``: the spectrograms, accuracy by group and by noise level."""
    from glassbox.report.html import figures_html

    parts = []
    if figures:
        parts.append(figures_html(figures))
    noise = {
        ("as recorded" if r["snr"] is None else f"{r['snr']:g} dB SNR"): r for r in evaluation["by_noise"]
    }
    parts.append(
        "<p>Test accuracy with background noise (white, pink or brown, seeded) mixed into every test"
        " clip at each signal-to-noise ratio; the model is not retrained.</p>"
    )
    parts.append(_table("noise", noise))
    for name, rows in evaluation.get("by", {}).items():
        parts.append(_table(name.replace("_", " "), rows))
    return {"title": "Audio", "html": "\n".join(parts)}


def audio_report(run: Any, data: Mapping[str, Any], seed: int = 0) -> dict | None:
    """What ``write_run_report`` adds for an audio run: computes ``audio.json``, returns the section."""
    from glassbox.nn import load_model

    test = data["test"]
    if test.kind != "audio" or test.task != "classification" or not (run.path / "model.json").is_file():
        return None
    model = load_model(run.path)
    evaluation = audio_evaluation(model, test, seed)
    run.write_json(AUDIO_FILE, evaluation)
    figure = example_figure(model, test)
    return audio_section(evaluation, [figure] if figure else [])
