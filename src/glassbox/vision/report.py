"""The HTML report of a tracker training run: loss curves, J&F, and overlays on held-out videos."""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from glassbox.run import Run


def write_track_report(run: Run, model: Any, cfg: Any, results: dict[str, Any], videos: int = 3) -> None:
    """``report.html`` in ``run``: curves, J&F, and contact sheets (prediction over ground truth)."""
    import yaml

    from glassbox.report.html import _figure, figures_html, write_report
    from glassbox.vision import track as tr
    from glassbox.vision.metrics import j_and_f
    from glassbox.vision.overlay import contact_sheet
    from glassbox.vision.video import moving_digits, sample_point

    figures = []
    for k in range(videos):
        video = moving_digits(cfg.eval_seed + k, frames=cfg.eval_frames, size=cfg.size)
        rng = np.random.default_rng(cfg.eval_seed + k)
        points = [sample_point(video.masks[i, 0], rng) for i in range(video.masks.shape[0])]
        pred = tr.track(model, video.frames, points)
        jf = j_and_f(pred, video.masks, skip=0)["J&F"]
        png = contact_sheet(video.frames, pred, rows=[video.masks])
        figures.append(
            _figure(
                f"held-out video {cfg.eval_seed + k}: prediction (top), truth (bottom), J&F {jf:.3f}", png
            )
        )
    occ = results.get("occluded_jf")
    se = "" if results.get("jf_se") is None else f" (standard error {results['jf_se']:.3f})"
    summary = (
        f"<p>Mean J&amp;F over {results['videos']} held-out generated videos"
        f" (seeds from {results['eval_seed']},"
        f" {results['frames']} frames, prompt frame left out): <b>{results['mean_jf']:.3f}</b>"
        f"{se};"
        f" on occluded frames only ({results['occluded_tracks']} tracks):"
        f" {'n/a' if occ is None else f'{occ:.3f}'}. Trained {results['steps']} steps in"
        f" {results['train_minutes']:.1f} minutes ({results['parameters']:,} parameters).</p>"
    )
    with run.artifact("report.html") as tmp:
        write_report(
            tmp,
            title=f"{escape(run.path.name)}: SAM 2 video tracker",
            config_yaml=yaml.safe_dump(cfg.model_dump(), sort_keys=False),
            data_summary={"source": "generated moving digits", "size": cfg.size, "train_frames": cfg.frames},
            history=run.metrics(),
            test_metrics={"mean_jf": results["mean_jf"], "occluded_jf": occ},
            meta=run.meta(),
            extra_sections=[{"title": "Tracking", "html": summary + figures_html(figures)}],
        )
