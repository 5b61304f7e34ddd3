"""The squeezing effect of preference tuning (Ren and Sutherland, ICLR 2025), shown on a glassbox LM.

DPO lowers the log-probability of a rejected response relative to a
reference model. When that response is already unlikely, the negative
gradient on it does not spread the freed mass evenly: through the softmax
it moves mass toward whatever the model already rates highest (the argmax
at each position), "squeezing" the distribution. The chosen response, if it
is not the model's argmax path, can lose probability too.

``dpo_squeeze`` runs plain DPO (Rafailov et al. 2023; sequence log-prob sums,
a frozen copy as the reference) on pairs of sampled responses and records,
step by step: the mean log-probability of the chosen and the rejected
responses, the log-probability of the greedy (argmax) continuation of each
prompt, and the mean probability of the argmax over the chosen responses'
positions (and over the rejected ones'). ``squeeze_plot`` draws them.

>>> import torch
>>> from glassbox.config import ModelConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn.models import build_model
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> text = Dataset("t", "text", "lm", torch.randint(0, 256, (8, 17)), torch.zeros(8, dtype=torch.long))
>>> model = build_model(ModelConfig(dim=32, depth=1, heads=2, dropout=0.0, max_len=64), text)
>>> recs = dpo_squeeze(model, torch.randint(0, 256, (4, 8)), steps=5, response_len=8)
>>> recs[-1]["logp_rejected"] < recs[0]["logp_rejected"]
True
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from glassbox.nn.models import Transformer


def _sequence_logp(model: Transformer, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Sum of log pi(response token | everything before it), per row ``(B,)``."""
    ids = torch.cat([prompts, responses], 1)
    logp = torch.log_softmax(model(ids[:, :-1]), -1)  # (B, T - 1, V)
    start = prompts.shape[1] - 1
    picked = logp[:, start:].gather(-1, responses[..., None])[..., 0]  # (B, R)
    return picked.sum(1)


@torch.no_grad()
def _argmax_prob(model: Transformer, prompts: torch.Tensor, responses: torch.Tensor) -> float:
    ids = torch.cat([prompts, responses], 1)
    probs = torch.softmax(model(ids[:, :-1]), -1)[:, prompts.shape[1] - 1 :]
    return float(probs.amax(-1).mean())


def dpo_squeeze(
    model: Transformer,
    prompts: torch.Tensor,
    *,
    steps: int = 40,
    lr: float = 1e-3,
    beta: float = 0.1,
    response_len: int = 24,
    chosen_temperature: float = 1.0,
    rejected_temperature: float = 1.5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """DPO on ``prompts`` ``(B, T)`` with sampled chosen/rejected responses; per-step records.

    Chosen responses are sampled at ``chosen_temperature``, rejected ones at
    the higher ``rejected_temperature`` (less likely under the model, as the
    paper's off-policy rejections are). Trains ``model`` in place.
    """
    g = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        T = prompts.shape[1]
        chosen = model.generate(prompts, response_len, temperature=chosen_temperature, generator=g)[:, T:]
        rejected = model.generate(prompts, response_len, temperature=rejected_temperature, generator=g)[:, T:]
        greedy = model.generate(prompts, response_len, temperature=0)[:, T:]
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        ref_c = _sequence_logp(reference, prompts, chosen)
        ref_r = _sequence_logp(reference, prompts, rejected)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    records = []
    for step in range(steps + 1):
        lc, lr_ = _sequence_logp(model, prompts, chosen), _sequence_logp(model, prompts, rejected)
        with torch.no_grad():
            records.append({
                "step": step,
                "logp_chosen": float(lc.mean()) / response_len,
                "logp_rejected": float(lr_.mean()) / response_len,
                "logp_greedy": float(_sequence_logp(model, prompts, greedy).mean()) / response_len,
                "argmax_prob": _argmax_prob(model, prompts, chosen),
                "argmax_prob_rejected": _argmax_prob(model, prompts, rejected),
            })  # fmt: skip
        if step == steps:
            break
        loss = -F.logsigmoid(beta * ((lc - ref_c) - (lr_ - ref_r))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        records[-1]["dpo_loss"] = float(loss.detach())
    model.eval()
    return records


def squeeze_plot(records: list[dict[str, Any]]) -> bytes:
    """Per-token log-probabilities of chosen, rejected and greedy responses, and the argmax probability."""
    from glassbox.report import plots

    fig = plots._figure(8.4, 3.2)
    ax = fig.add_subplot(1, 2, 1)
    steps = [r["step"] for r in records]
    for key, color in (("logp_chosen", "#2ca02c"), ("logp_rejected", "#d62728"), ("logp_greedy", "#1f77b4")):
        ax.plot(steps, [r[key] for r in records], label=key.removeprefix("logp_"), color=color)
    ax.set_xlabel("DPO step")
    ax.set_ylabel("mean log-prob per byte")
    ax.legend(frameon=False)
    plots._tidy(ax)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(steps, [r["argmax_prob"] for r in records], color="#2ca02c", label="along chosen")
    ax2.plot(steps, [r["argmax_prob_rejected"] for r in records], color="#d62728", label="along rejected")
    ax2.legend(frameon=False)
    ax2.set_xlabel("DPO step")
    ax2.set_ylabel("mean argmax probability")
    ax2.set_title("squeezing: mass moves to the argmax")
    plots._tidy(ax2)
    return plots._png(fig)
