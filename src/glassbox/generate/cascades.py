"""Speculative cascades (Narasimhan et al., ICLR 2025): speculative execution of a cascade's deferral rule.

A cascade lets the small model answer where it is good enough and defers to
the large one elsewhere. Done speculatively, the draft proposes tokens as
usual and the target scores them in one call; verification then aims at a
mixture ``pi(q, p)`` chosen by a deferral rule instead of at ``p``: accept a
draft token ``d`` with probability ``min(1, pi(d) / q(d))``, else draw from
``max(0, pi - q)`` renormalized. The output then follows ``pi`` exactly, at
every position (``glassbox.generate.speculative`` with ``mixture=``), so it
is no longer the target's distribution: the lenience ``a`` trades quality for
acceptance, a larger ``a`` keeping more of the draft.

Rules, for one position with draft distribution ``q`` and target ``p``:

- ``chow``: keep ``q`` when the draft is confident, ``max q >= 1 - a``; else ``p``.
- ``diff``: keep ``q`` when it is nearly as confident as the target, ``max q >= max p - a``.
- ``opt``: the plug-in optimal rule, ``max q >= max p - a * TV(q, p)``, which
  defers more readily where the two disagree (TV is the total variation distance).
- token-level rules keep ``q`` on a set ``A`` of tokens and give the rest of
  the mass to ``p``: ``pi(v) = q(v) [v in A] + (1 - q(A)) p(v)``, where
  ``token-v1``: ``A = {v : q(v) >= max q - a}`` (tokens the draft rates near its own best),
  ``token-v2``: ``A = {v : q(v) >= max p - a}`` (near the target's best confidence),
  ``token-v3``: ``A = {v : p(v) >= max p - a}`` (tokens the target itself rates near its best).

The three token sets are this module's reading of the paper's token-specific
rules; each ``pi`` is a distribution by construction, which is all the
verification needs to be exact.

>>> import torch
>>> q, p = torch.tensor([[0.9, 0.1, 0.0]]), torch.tensor([[0.2, 0.5, 0.3]])
>>> mixture_for("chow", 0.2)(p, q)   # max q = 0.9 >= 0.8: keep the draft's distribution
tensor([[0.9000, 0.1000, 0.0000]])
>>> mixture_for("chow", 0.05)(p, q)  # not confident enough at lenience 0.05: defer to p
tensor([[0.2000, 0.5000, 0.3000]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from glassbox.errors import UserError, did_you_mean

Mixture = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _defer(keep_q: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.where(keep_q[..., None], q, p)


def _chow(p: torch.Tensor, q: torch.Tensor, a: float) -> torch.Tensor:
    return _defer(q.amax(-1) >= 1 - a, p, q)


def _diff(p: torch.Tensor, q: torch.Tensor, a: float) -> torch.Tensor:
    return _defer(q.amax(-1) >= p.amax(-1) - a, p, q)


def _opt(p: torch.Tensor, q: torch.Tensor, a: float) -> torch.Tensor:
    tv = 0.5 * (q - p).abs().sum(-1)
    return _defer(q.amax(-1) >= p.amax(-1) - a * tv, p, q)


Rule = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def _token(in_set: Rule) -> Rule:
    def rule(p: torch.Tensor, q: torch.Tensor, a: float) -> torch.Tensor:
        A = in_set(p, q, a)  # (..., V) bool
        kept = q * A
        return kept + (1 - kept.sum(-1, keepdim=True)) * p

    return rule


RULES: dict[str, Rule] = {
    "chow": _chow,
    "diff": _diff,
    "opt": _opt,
    "token-v1": _token(lambda p, q, a: q >= q.amax(-1, keepdim=True) - a),
    "token-v2": _token(lambda p, q, a: q >= p.amax(-1, keepdim=True) - a),
    "token-v3": _token(lambda p, q, a: p >= p.amax(-1, keepdim=True) - a),
}


def mixture_for(rule: str, lenience: float) -> Mixture:
    """``pi(p, q)`` for a rule name and its lenience ``a`` (>= 0); shapes ``(..., V)``."""
    if rule not in RULES:
        raise UserError(f"unknown cascade rule '{rule}': {did_you_mean(rule, RULES)}")
    if not lenience >= 0:
        raise UserError(f"the lenience must be >= 0, got {lenience}")
    fn = RULES[rule]
    return lambda p, q: fn(p, q, lenience)


def cascade_generate(
    target: nn.Module,
    draft: nn.Module,
    input_ids: torch.Tensor,
    *,
    rule: str = "opt",
    lenience: float = 0.1,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    gamma: int | str = 4,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Sample ``max_new_tokens`` tokens from the cascade's ``pi`` by speculative execution.

    ``p`` and ``q`` are both taken after the same temperature, top-k and
    top-p processing. Needs sampling (``temperature > 0``): under greedy
    decoding both distributions are one-hot and every rule degenerates.
    """
    from glassbox.generate.speculative import speculative_generate

    if temperature <= 0:
        raise UserError("speculative cascades sample; give a temperature above 0 (e.g. --temperature 1)")
    stats: dict[str, Any]
    out, stats = speculative_generate(
        target,
        draft,
        input_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        gamma=gamma,
        generator=generator,
        mixture=mixture_for(rule, lenience),
    )
    stats["rule"], stats["lenience"] = rule, lenience
    return out, stats
