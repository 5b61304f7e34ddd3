"""Speculative decoding is exact: greedy token for token, sampling in distribution (by enumeration)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch import nn

from glassbox.config import ModelConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.generate import speculative as sp
from glassbox.nn.attention import KINDS
from glassbox.nn.models import build_model

TEXT = Dataset("toy", "text", "lm", torch.randint(0, 256, (4, 9)), torch.zeros(4, dtype=torch.long))


def _lm(kind: str, dim: int, depth: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=dim, depth=depth, heads=2, max_len=96, attention=kind, chunk_size=4, window=8)
    return build_model(cfg, TEXT).double().eval()  # float64: chunked and stepwise paths agree to 1e-12


def _prompts(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, T), generator=g)


class ToyLM(nn.Module):
    """A plain module over a tiny vocabulary: logits from the last two tokens, no cache."""

    def __init__(self, V: int, seed: int, scale: float = 1.5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(V, V, generator=g, dtype=torch.float64) * scale)
        self.U = nn.Parameter(torch.randn(V, V, generator=g, dtype=torch.float64) * scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        prev = torch.cat([ids[:, :1], ids[:, :-1]], 1)
        return self.W[ids] + self.U[prev]  # (B, T, V)


# -- greedy: identical to the target's own greedy output -------------------------------------------
@pytest.mark.parametrize("kind", [k for k in KINDS.names() if k != "auto"])
def test_greedy_is_the_targets_greedy_for_every_kind(kind: str) -> None:
    target = _lm(kind, 32, 2, seed=0)
    drafts = {"random": _lm("softmax", 16, 1, seed=1), "itself": target, "lookup": sp.PromptLookupDrafter()}
    for B, seed in ((1, 0), (1, 1), (4, 2)):
        prompt = _prompts(B, 5 + seed, seed)
        want = target.generate(prompt, 20, temperature=0)
        for name, draft in drafts.items():
            for gamma in (1, 3, "auto"):
                got, stats = sp.speculative_generate(target, draft, prompt, max_new_tokens=20, gamma=gamma)
                assert torch.equal(got, want), (kind, name, B, gamma)
                assert stats["new_tokens"] == 20
    # A draft equal to the target is always right: every round keeps all gamma tokens.
    _, stats = sp.speculative_generate(target, target, _prompts(2, 4, 9), max_new_tokens=17, gamma=4)
    assert stats["acceptance"] == 1.0 and stats["tokens_per_target_call"] > 3


def test_plain_modules_and_a_repetitive_prompt_with_prompt_lookup() -> None:
    target = ToyLM(7, seed=3)
    prompt = torch.tensor([[1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3]])

    def plain_greedy(n: int) -> torch.Tensor:
        seq = prompt
        for _ in range(n):
            seq = torch.cat([seq, target(seq)[:, -1].argmax(-1, keepdim=True)], 1)
        return seq

    got, _ = sp.speculative_generate(target, sp.PromptLookupDrafter(), prompt, max_new_tokens=15, gamma=3)
    assert torch.equal(got, plain_greedy(15))
    got, _ = sp.speculative_generate(target, ToyLM(7, seed=4), prompt, max_new_tokens=15, gamma=2)
    assert torch.equal(got, plain_greedy(15))


def test_auto_falls_back_to_plain_decoding_with_a_useless_draft() -> None:
    target, useless = _lm("softmax", 32, 2, seed=0), _lm("softmax", 16, 1, seed=5)
    _, stats = sp.speculative_generate(target, useless, _prompts(1, 4, 0), max_new_tokens=40)
    assert stats["acceptance"] < 0.2
    assert stats["speculative_rounds"] <= 3  # two rounds to measure, then plain for good
    # No draft at all: plain decoding throughout, past the point where auto would look again.
    got, stats = sp.speculative_generate(target, None, _prompts(1, 4, 0), max_new_tokens=70)
    assert torch.equal(got, target.generate(_prompts(1, 4, 0), 70, temperature=0))
    assert stats["speculative_rounds"] == 0


class TakingTurns:
    """A drafter that is right (the target's greedy continuation) for one row per round, in turn."""

    def __init__(self, target: nn.Module) -> None:
        self.target, self.round = target, 0

    def sync(self, seq: torch.Tensor) -> None:
        pass

    def propose(self, seq, pending, gamma, sampling, ahead):
        rows = []
        for i, (row, queued) in enumerate(zip(seq.tolist(), ahead.rows(gamma), strict=True)):
            context = torch.tensor([row + queued])
            right = self.target.generate(context, gamma - len(queued), temperature=0)[0, context.shape[1] :]
            guess = right.tolist() if i == self.round % 2 else [(t + 1) % 256 for t in right.tolist()]
            rows.append(queued + guess)
        self.round += 1
        return torch.tensor(rows), None

    def accept(self, kept: int, proposed: torch.Tensor) -> None:
        pass

    def cost_per_token(self) -> float:
        return 0.0


def test_each_row_keeps_every_token_it_decided() -> None:
    """Rows right in turn: advancing all by the shortest run would give one token per call."""
    target = _lm("softmax", 32, 2, seed=0)
    prompt = _prompts(2, 5, 3)
    got, stats = sp.speculative_generate(target, TakingTurns(target), prompt, max_new_tokens=30, gamma=4)
    assert torch.equal(got, target.generate(prompt, 30, temperature=0))
    # Each round one row decides 5 tokens and queues 4; the other row's queue fills its slots next.
    assert stats["target_calls"] <= 14, stats["target_calls"]  # 30 if every row advanced by the shortest
    # Per two rounds: 4 wrong and 8 right proposals judged (a full queue proposes nothing).
    assert stats["acceptance"] == pytest.approx(2 / 3, abs=0.05)


# -- sampling: the distribution of whole sequences is the target's --------------------------------
V, NEW, N = 3, 3, 24000


def _exact(target: nn.Module, prompt: list[int], **proc: object) -> dict[tuple[int, ...], float]:
    out = {}
    for seq in itertools.product(range(V), repeat=NEW):
        ids = torch.tensor([prompt + list(seq)])
        probs = sp.process(target(ids)[0, len(prompt) - 1 : -1], **proc)  # (NEW, V)
        out[seq] = float(np.prod([probs[i, t].item() for i, t in enumerate(seq)]))
    return out


def _empirical(target: nn.Module, draft: object, prompt: list[int], gamma: int, seed: int, **proc: object):
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt]).repeat(N // 4, 1)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(4):  # 4 batches of 6000 rows, each row one sample
        out, _ = sp.speculative_generate(
            target, draft, ids, max_new_tokens=NEW, gamma=gamma, generator=g, **proc
        )
        for row in out[:, len(prompt) :].tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    return counts


def _p_value(counts: dict, exact: dict) -> float:
    keys = [k for k in exact if exact[k] > 0]
    assert sum(counts.get(k, 0) for k in exact if exact[k] == 0) == 0, "a sequence of probability 0 came out"
    obs = np.array([counts.get(k, 0) for k in keys], dtype=float)
    exp = np.array([exact[k] for k in keys]) * obs.sum() / sum(exact[k] for k in keys)
    # Sequences expected fewer than 5 times share one cell: the chi-square approximation needs
    # about 5 per cell, and one sample of a sequence expected 0.02 times would alone look like p ~ 1e-5.
    rare = exp < 5
    if rare.any():
        obs = np.append(obs[~rare], obs[rare].sum())
        exp = np.append(exp[~rare], exp[rare].sum())
    return float(chisquare(obs, exp).pvalue)


PROCESSING = {
    "temperature 1": {"temperature": 1.0, "top_k": None, "top_p": None},
    "temperature 0.7, top-k 2": {"temperature": 0.7, "top_k": 2, "top_p": None},
    "temperature 1.3, top-p 0.8": {"temperature": 1.3, "top_k": None, "top_p": 0.8},
}


@pytest.mark.parametrize("name", list(PROCESSING))
def test_sampled_sequences_follow_the_targets_exact_distribution(name: str) -> None:
    proc = PROCESSING[name]
    target, draft = ToyLM(V, seed=10), ToyLM(V, seed=11, scale=1.0)
    prompt = [0, 2]
    exact = _exact(target, prompt, **proc)
    for drafter, gamma, seed in ((draft, 2, 0), (sp.PromptLookupDrafter(), 2, 1), (target, 3, 2)):
        counts = _empirical(target, drafter, prompt, gamma, seed, **proc)
        # Tolerance: a chi-square test over the V**NEW sequences at the 1e-4 level; the broken
        # verifier below lands near p = 1e-100.
        assert _p_value(counts, exact) > 1e-4, (name, type(drafter).__name__)


def test_a_broken_verifier_fails_the_same_test(monkeypatch: pytest.MonkeyPatch) -> None:
    target, draft = ToyLM(V, seed=10), ToyLM(V, seed=11, scale=1.0)
    proc = PROCESSING["temperature 1"]
    right = sp._verify

    def broken(p, q, d, generator, greedy):
        accepted, _ = right(p, q, d, generator, greedy)
        return accepted, p  # resample from p instead of max(0, p - q): the classic bug

    monkeypatch.setattr(sp, "_verify", broken)
    counts = _empirical(target, draft, [0, 2], 2, 0, **proc)
    assert _p_value(counts, _exact(target, [0, 2], **proc)) < 1e-6


def test_process_matches_its_definition() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    p = sp.process(logits, 1.0, None, 0.7)
    full = logits.softmax(-1)
    assert p[0, 3] == 0 and p[0, 2] == 0  # 0.61 + 0.22 >= 0.7: the top two are the nucleus
    torch.testing.assert_close(p[0, :2], full[0, :2] / full[0, :2].sum())
    assert torch.equal(sp.process(logits, 0.0, None, None), torch.tensor([[1.0, 0, 0, 0]]))


def test_bad_arguments_are_named() -> None:
    target = ToyLM(V, seed=1)
    cases = [({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 2, "top_p": 0}, "top_p"),
             ({"max_new_tokens": 2, "gamma": -1}, "gamma")]  # fmt: skip
    for kwargs, phrase in cases:
        with pytest.raises(UserError, match=phrase):
            sp.speculative_generate(target, None, torch.tensor([[0]]), **kwargs)
    lm = _lm("softmax", 16, 1, seed=0)
    with pytest.raises(UserError, match="positions"):
        sp.speculative_generate(lm, None, _prompts(1, 90, 0), max_new_tokens=20)


def test_a_hugging_face_style_output_object_is_read_through_logits() -> None:
    class Output:  # what transformers' CausalLMOutput exposes
        def __init__(self, logits: torch.Tensor) -> None:
            self.logits = logits

    class HFLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = ToyLM(5, seed=7)

        def forward(self, input_ids: torch.Tensor) -> Output:
            return Output(self.inner(input_ids))

    target = HFLike()
    prompt = torch.tensor([[1, 2, 3]])
    got, _ = sp.speculative_generate(target, ToyLM(5, seed=8), prompt, max_new_tokens=10, gamma=3)
    seq = prompt
    for _ in range(10):
        seq = torch.cat([seq, target(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, seq)
