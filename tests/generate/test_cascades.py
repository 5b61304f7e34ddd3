"""Speculative cascades sample exactly from their rule's mixture pi, computed here by enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from glassbox.errors import UserError
from glassbox.generate import speculative as sp
from glassbox.generate.cascades import RULES, cascade_generate, mixture_for

from .test_speculative import ToyLM, _p_value

V, NEW, N = 3, 3, 24000
PROMPT = [0, 2]
LENIENCE = {"chow": 0.5, "diff": 0.2, "opt": 0.5, "token-v1": 0.3, "token-v2": 0.3, "token-v3": 0.6}


def _exact_pi(target, draft, mix, **proc) -> dict[tuple[int, ...], float]:
    out = {}
    for seq in itertools.product(range(V), repeat=NEW):
        ids = torch.tensor([PROMPT + list(seq)])
        sl = slice(len(PROMPT) - 1, -1)
        pi = mix(sp.process(target(ids)[0, sl], **proc), sp.process(draft(ids)[0, sl], **proc))  # (NEW, V)
        out[seq] = float(np.prod([pi[i, t].item() for i, t in enumerate(seq)]))
    return out


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_samples_its_pi(rule: str) -> None:
    target, draft = ToyLM(V, seed=10), ToyLM(V, seed=11, scale=2.5)
    proc = {"temperature": 1.0, "top_k": None, "top_p": None}
    mix = mixture_for(rule, LENIENCE[rule])
    exact = _exact_pi(target, draft, mix, **proc)
    assert abs(sum(exact.values()) - 1) < 1e-5  # float32 processing
    plain = _exact_pi(target, draft, lambda p, q: p, **proc)
    tv = 0.5 * sum(abs(exact[k] - plain[k]) for k in exact)
    assert tv > 0.02, f"{rule} at this lenience is plain speculative decoding; the test would prove nothing"
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([PROMPT]).repeat(N // 4, 1)
    counts: dict[tuple[int, ...], int] = {}
    for gamma in (1, 2, 3, 2):
        out, _ = cascade_generate(target, draft, ids, rule=rule, lenience=LENIENCE[rule], max_new_tokens=NEW,
                                  gamma=gamma, generator=g)  # fmt: skip
        for row in out[:, len(PROMPT) :].tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert _p_value(counts, exact) > 1e-4
    assert _p_value(counts, plain) < 1e-6  # and it is not the target's own distribution


def test_rules_are_distributions_and_bad_names_are_refused() -> None:
    g = torch.Generator().manual_seed(0)
    p, q = torch.rand(50, 7, generator=g).softmax(-1), torch.rand(50, 7, generator=g).pow(4).softmax(-1)
    for rule in RULES:
        for a in (0.0, 0.1, 0.5, 1.0):
            pi = mixture_for(rule, a)(p, q)
            assert (pi >= 0).all() and torch.allclose(pi.sum(-1), torch.ones(50)), (rule, a)
    with pytest.raises(UserError, match="did you mean 'chow'"):
        mixture_for("chw", 0.1)
    with pytest.raises(UserError, match="temperature"):
        cascade_generate(ToyLM(V, 0), ToyLM(V, 1), torch.tensor([[0]]), max_new_tokens=2, temperature=0)
