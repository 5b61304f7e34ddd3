"""The "Learning dynamics" report section: how well one step's first-order prediction matched, step by step.

From the ``dyn_*`` records ``glassbox.audit.dynamics.DynamicsTracker`` logs:
the cosine between the predicted change of the probes' log-probabilities
(``-eta A K G``, along the optimizer's real update) and the actual change;
the residual norm ``|G|`` at each batch; and on the probes the mean
probability of the argmax and the mean entropy, whose opposite movements
are the "squeezing" the paper describes.

>>> recs = [{"step": i, "dyn_cosine": 0.999, "dyn_residual_norm": 1 / i, "dyn_argmax_prob": 0.5 + i / 40,
...          "dyn_entropy": 1 - i / 20} for i in range(1, 11)]
>>> s = dynamics_section(recs)
>>> s["title"], s["html"].count("data:image/png;base64,")
('Learning dynamics', 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from glassbox.report.html import _figure, figures_html


def dynamics_section(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    from glassbox.report import plots

    cos = [r["dyn_cosine"] for r in records]
    low = sum(c < 0.99 for c in cos)
    text = (
        f"<p>{len(records)} tracked steps. Cosine between predicted and actual change of the probes'"
        f" log-probabilities: median {sorted(cos)[len(cos) // 2]:.4f}, lowest {min(cos):.4f};"
        f" {low} step(s) below 0.99, where the update left the first-order regime.</p>"
    )
    figures = []
    for keys, title, ylabel in (
        (["dyn_cosine"], "Predicted vs actual change (cosine)", "cosine"),
        (["dyn_residual_norm"], "Residual |G| at each batch", "norm"),
        (["dyn_argmax_prob", "dyn_entropy"], "Probes: argmax probability and entropy", "value"),
    ):
        png = plots.curve_plot(records, keys, title=title, ylabel=ylabel)
        if png is not None:
            figures.append(_figure(title, png))
    return {"title": "Learning dynamics", "html": text + figures_html(figures)}


def squeeze_section(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """DPO on a copy of the LM: chosen, rejected and greedy log-probabilities, and the argmax probability."""
    from glassbox.audit.squeeze import squeeze_plot

    a, b = records[0], records[-1]
    text = (
        f"<p>{b['step']} DPO steps on a copy of the model (the saved model is untouched), on sampled"
        f" chosen (temperature 1) and rejected (temperature 1.5) responses to test prompts. Per byte:"
        f" rejected {a['logp_rejected']:.2f} &rarr; {b['logp_rejected']:.2f}, chosen {a['logp_chosen']:.2f}"
        f" &rarr; {b['logp_chosen']:.2f}, greedy {a['logp_greedy']:.2f} &rarr; {b['logp_greedy']:.2f};"
        f" mean argmax probability along the rejected responses {a['argmax_prob_rejected']:.3f} &rarr;"
        f" {b['argmax_prob_rejected']:.3f}: pushing an unlikely response down moves mass to what the model"
        " already rates highest (the squeezing effect).</p>"
    )
    fig = _figure("DPO: log-probabilities and the argmax probability", squeeze_plot(list(records)))
    return {"title": "Preference tuning: the squeezing effect", "html": text + figures_html([fig])}
