"""Speculative decoding: a cheap drafter proposes tokens, the target checks them all in one call, exactly.

Greedy: draft tokens are kept while they equal the target's argmax, so the
output is token for token the target's own greedy output. Sampling
(Leviathan et al. 2023; Chen et al. 2023): a draft token ``d`` drawn from
``q`` is kept with probability ``min(1, p(d) / q(d))``; at the first
rejection a token is drawn from ``max(0, p - q)`` renormalized; when every
draft token is kept the target's next distribution gives a bonus token.
``p`` and ``q`` are both taken *after* the same temperature, top-k and top-p
processing, and ``q`` is the distribution the draft token was really drawn
from: the two places where published implementations went wrong.

Batches: every row makes its own accept/reject decisions and keeps every
token it decided. The models' states stay rectangular (one length for the
batch): they advance by the shortest decided run, and what a row decided
beyond it waits in that row's queue (``ahead``). Next round those tokens go
first in the row's draft slots, already accepted, so no decided token is
ever thrown away and each row advances at its own acceptance rate. Still
exact: each emitted token is an accepted draft or a correction of the step
that judged it, and where a round ends depends only on the other rows'
independent draws.

States: glassbox models return new state dicts rather than changing the
old ones, so a model can always go back to a checkpoint and replay the
tokens it keeps; a softmax KV cache is cropped instead, which costs nothing.
Any other ``nn.Module`` mapping ``(B, T)`` ids to ``(B, T, V)`` logits works
too, a Hugging Face causal LM included (its output's ``.logits``),
recomputing its whole context on every call (no cache).

Draft length: ``gamma="auto"`` measures the draft's cost per token and the
target's cost of checking ``k`` tokens as it goes, estimates the acceptance
rate, and picks the ``gamma`` with the best expected tokens per unit of
target time, ``E[tokens] = (1 - a^(g+1)) / (1 - a)`` against
``g * c_draft + v(g + 1)``; when no ``gamma`` beats plain decoding it
decodes plainly for the rest of the call, so a useless draft costs little.

>>> import torch
>>> from glassbox.config import ModelConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn.models import build_model
>>> data = Dataset("toy", "text", "lm", torch.randint(0, 256, (4, 9)), torch.zeros(4, dtype=torch.long))
>>> target = build_model(ModelConfig(dim=32, depth=2, heads=2, max_len=64), data).eval()
>>> draft = build_model(ModelConfig(dim=16, depth=1, heads=2, max_len=64), data).eval()
>>> prompt = torch.tensor([list(b"def f(")])
>>> out, stats = speculative_generate(target, draft, prompt, max_new_tokens=12, gamma=3)
>>> bool((out == target.generate(prompt, 12, temperature=0)).all()), stats["new_tokens"]
(True, 12)
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from glassbox.errors import UserError

GAMMAS = range(1, 9)  # draft lengths auto considers
START_GAMMA = 4  # before anything is measured
MIN_SPEEDUP = 1.05  # auto speculates only when the model of costs expects at least this gain
MIN_ROUNDS = 3  # rounds auto measures before it may turn speculation off
PROBE_EVERY = 64  # while decoding plainly, auto tries one speculative round this often


# -- the distributions both sides must share --------------------------------------------------
def process(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Probabilities ``(..., V)`` after temperature, top-k and top-p (nucleus); greedy is one-hot."""
    logits = logits.float()
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # Keep the smallest set whose mass reaches top_p: a token stays if the mass before it is < top_p.
        before = sorted_p.cumsum(-1) - sorted_p
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before < top_p)
        probs = probs * keep
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of ``probs`` ``(B, V)``, shaped ``(B,)``."""
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _widen(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` ``(B, n)`` padded with 0 to at least ``width`` columns."""
    return torch.nn.functional.pad(t, (0, width - t.shape[1])) if t.shape[1] < width else t


# -- models with a state that can go back -------------------------------------------------------
class Stepper:
    """A causal LM fed a few tokens at a time: ``feed`` returns next-token logits for each of them.

    ``mark()`` remembers the current position; ``keep(n)`` goes back to the
    mark and keeps only the first ``n`` tokens fed since (a cropped KV cache,
    or a replay from the marked state).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.glassbox = hasattr(model, "decode_step") and getattr(model, "lm", False)
        self.croppable = self.glassbox and getattr(model, "spec_", {}).get("attention") == "softmax"
        self.max_len = model.tokenizer.max_len if self.glassbox else None
        self.states: Any = None
        self.length = 0
        self.context: torch.Tensor | None = None  # plain modules: every token so far
        self._mark: tuple[Any, int, torch.Tensor | None] | None = None
        self._since: list[torch.Tensor] = []
        self.seconds: dict[int, list[float]] = {}  # tokens per call -> wall seconds of calls

    def feed(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, k, V)`` after each of ``ids`` ``(B, k)``; the tokens become part of the context."""
        t0 = time.perf_counter()
        k = ids.shape[1]
        if self.glassbox:
            if self.length + k > self.max_len:
                raise UserError(
                    f"speculative decoding runs within the model's {self.max_len} positions;"
                    f" the prompt plus new tokens need {self.length + k}: ask for fewer tokens"
                )
            logits, self.states = self.model.decode_step(ids, self.states, self.length)
        else:
            self.context = ids if self.context is None else torch.cat([self.context, ids], 1)
            out = self.model(self.context)
            # Hugging Face causal LMs return an output object; its .logits is the (B, T, V) tensor.
            logits = (out.logits if hasattr(out, "logits") else out)[:, -k:]
        self.length += k
        if self._mark is not None:
            self._since.append(ids)
        self.seconds.setdefault(k, []).append(time.perf_counter() - t0)
        return logits

    def mark(self) -> None:
        self._mark = (self.states, self.length, self.context)
        self._since = []

    def keep(self, n: int) -> None:
        """Back to the mark, then forward by the first ``n`` tokens fed since it."""
        assert self._mark is not None
        fed = torch.cat(self._since, 1) if self._since else None
        total = 0 if fed is None else fed.shape[1]
        states, length, context = self._mark
        self._mark, self._since = None, []
        if n == total:
            return
        if self.croppable:
            keep_to = length + n
            self.states = [{"k": s["k"][:, :keep_to], "v": s["v"][:, :keep_to]} for s in self.states]
            self.length = keep_to
        elif self.glassbox:
            self.states, self.length = states, length
            if n:
                _, self.states = self.model.decode_step(fed[:, :n], self.states, self.length)
                self.length += n
        else:
            parts = [c for c in (context, None if fed is None else fed[:, :n]) if c is not None]
            self.context = torch.cat(parts, 1) if parts else None
            self.length = length + n

    def cost(self, k: int) -> float | None:
        times = self.seconds.get(k)
        return statistics.median(times) if times else None


# -- tokens a row decided beyond the batch's common length ---------------------------------------
class Ahead:
    """Per row, the decided tokens not yet fed to any model: ``tokens`` ``(B, A)``, valid up to ``count``."""

    def __init__(self, tokens: torch.Tensor, count: torch.Tensor) -> None:
        self.tokens = tokens  # (B, A), padded with 0 past each row's count
        self.count = count  # (B,)

    @classmethod
    def empty(cls, B: int) -> Ahead:
        return cls(torch.zeros(B, 0, dtype=torch.long), torch.zeros(B, dtype=torch.long))

    def rows(self, limit: int) -> list[list[int]]:
        """Each row's first ``limit`` queued tokens, as lists."""
        counts = self.count.tolist()
        return [r[: min(n, limit)] for r, n in zip(self.tokens.tolist(), counts, strict=True)]

    def first(self, fallback: torch.Tensor) -> tuple[torch.Tensor, Ahead]:
        """Each row's next token: its first queued one, else ``fallback``; and the queue after it."""
        if self.tokens.shape[1] == 0:
            return fallback, self
        nxt = torch.where(self.count > 0, self.tokens[:, 0], fallback)
        return nxt, Ahead(self.tokens[:, 1:], (self.count - 1).clamp(min=0))


# -- drafters ------------------------------------------------------------------------------------
class ModelDrafter:
    """Draft tokens from a smaller LM, sampled from its processed distribution ``q``."""

    def __init__(self, model: nn.Module) -> None:
        self.stepper = Stepper(model)

    def sync(self, seq: torch.Tensor) -> None:
        """Feed what the draft has not seen of ``seq`` except its last (pending) token."""
        missing = seq[:, self.stepper.length : -1]
        if missing.shape[1]:
            self.stepper.feed(missing)  # its timing lands under its length, not under cost(1)

    def propose(
        self, seq: torch.Tensor, pending: torch.Tensor, gamma: int, sampling: dict[str, Any], ahead: Ahead
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``gamma`` tokens ``(B, gamma)`` and the distributions they were drawn from ``(B, gamma, V)``.

        A row's queued tokens (``ahead``) take its first slots in place of draws.
        Greedy gives None for the distributions: one-hot at the tokens, as for
        a deterministic drafter.
        """
        self.stepper.mark()
        x, tokens, dists = pending[:, None], [], []
        t, top_k, top_p = sampling["temperature"], sampling["top_k"], sampling["top_p"]
        for j in range(gamma):
            logits = self.stepper.feed(x)[:, -1]  # (B, V)
            if t <= 0:  # greedy: q is one-hot at the argmax, which verification never needs spelt out
                d = logits.argmax(-1)
            else:
                q = process(logits, t, top_k, top_p)
                d = _draw(q, sampling["generator"])
                dists.append(q)
            if j < ahead.tokens.shape[1]:
                d = torch.where(ahead.count > j, ahead.tokens[:, j], d)
            tokens.append(d)
            x = d[:, None]
        return torch.stack(tokens, 1), torch.stack(dists, 1) if dists else None

    def accept(self, kept: int, proposed: torch.Tensor) -> None:
        """Keep ``kept`` of the ``gamma`` tokens fed since ``propose`` (pending and drafts)."""
        gamma = proposed.shape[1]
        if kept <= gamma:
            self.stepper.keep(kept)
        else:  # everything accepted: the last draft token was never fed
            self.stepper.keep(gamma)
            self.stepper.feed(proposed[:, -1:])

    def cost_per_token(self) -> float | None:
        return self.stepper.cost(1)


class PromptLookupDrafter:
    """Draft by copying: the tokens that followed the latest earlier occurrence of the context's last n-gram.

    Deterministic, so ``q`` is one-hot at each proposal; free beside any
    model, and strong on text that repeats itself (code, templates).
    """

    def __init__(self, max_ngram: int = 3) -> None:
        self.max_ngram = max_ngram

    def sync(self, seq: torch.Tensor) -> None:
        pass

    def propose(
        self, seq: torch.Tensor, pending: torch.Tensor, gamma: int, sampling: dict[str, Any], ahead: Ahead
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = []
        for row, queued in zip(seq.tolist(), ahead.rows(gamma), strict=True):
            # A row's queued tokens fill its first slots, and the lookup continues after them.
            rest = gamma - len(queued)
            rows.append(queued + self._lookup(row + queued, rest) if rest > 0 else queued)
        return torch.tensor(rows, dtype=torch.long), None

    def _lookup(self, row: list[int], gamma: int) -> list[int]:
        for n in range(min(self.max_ngram, len(row) - 1), 0, -1):
            tail = row[-n:]
            for start in range(len(row) - n - 1, -1, -1):  # latest earlier occurrence first
                if row[start : start + n] == tail:
                    follow = row[start + n : start + n + gamma]
                    return follow + [follow[-1]] * (gamma - len(follow))
        return [row[-1]] * gamma  # nothing to copy: a guess that costs only its check

    def accept(self, kept: int, proposed: torch.Tensor) -> None:
        pass

    def cost_per_token(self) -> float | None:
        return 0.0


# -- the loop ---------------------------------------------------------------------------------------
def expected_tokens(alpha: float, gamma: int) -> float:
    """Tokens one target call yields when each draft token is accepted with probability ``alpha``."""
    if alpha >= 1.0:
        return gamma + 1.0
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def choose_gamma(alpha: float, draft_cost: float, verify_cost: Callable[[int], float]) -> tuple[int, float]:
    """The draft length with the best expected speedup over plain decoding, and that speedup."""
    plain = verify_cost(1)
    best = (0, 1.0)
    for g in GAMMAS:
        speed = expected_tokens(alpha, g) * plain / (g * draft_cost + verify_cost(g + 1))
        if speed > best[1]:
            best = (g, speed)
    return best


@torch.no_grad()
def speculative_generate(
    target: nn.Module,
    draft: nn.Module | PromptLookupDrafter | Any | None,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    gamma: int | str = "auto",
    generator: torch.Generator | None = None,
    mixture: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``input_ids`` ``(B, T)`` followed by ``max_new_tokens`` tokens distributed as the target's own.

    ``draft``: a smaller LM, a ``PromptLookupDrafter`` (or any object with its
    four methods), or None (plain decoding, for comparison). ``gamma``:
    draft tokens per target call, or ``"auto"`` (measured costs). ``mixture`` (speculative cascades,
    ``glassbox.generate.cascades``) maps the target's and the draft's
    distributions ``(B, k, V)`` to the distribution ``pi`` to sample from;
    verification then targets ``pi`` instead of ``p``, at every position,
    the bonus one included, and no step decodes plainly (that would sample ``p``).
    Returns the tokens ``(B, T + max_new_tokens)`` and ``stats``.
    """
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise UserError(f"input_ids must be (batch, length >= 1), got shape {tuple(input_ids.shape)}")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if gamma != "auto" and (not isinstance(gamma, int) or gamma < 0):
        raise UserError(f"gamma must be a whole number >= 0 or 'auto', got {gamma!r}")
    models = [m for m in (target, draft) if isinstance(m, nn.Module)]
    was = [m.training for m in models]
    for m in models:
        m.eval()
    t_start = time.perf_counter()
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "generator": generator}
    greedy = temperature <= 0
    B = input_ids.shape[0]
    tgt = Stepper(target)
    drafter = ModelDrafter(draft) if isinstance(draft, nn.Module) else draft
    prefix, pending = input_ids[:, :-1], input_ids[:, -1]  # pending: emitted but not yet fed to anyone
    for name, m in (("target", target), ("draft", draft)):
        limit = getattr(getattr(m, "tokenizer", None), "max_len", None)
        if limit is not None and input_ids.shape[1] + max_new_tokens - 1 > limit:
            raise UserError(
                f"the {name} model has {limit} positions; a {input_ids.shape[1]}-token prompt leaves room"
                f" for {limit - input_ids.shape[1] + 1} new tokens, not {max_new_tokens}"
            )
    if prefix.shape[1]:
        tgt.feed(prefix)
        tgt.seconds.clear()  # a prompt's cost says nothing about a decode step's
    seq = input_ids
    stats: dict[str, Any] = {
        "target_calls": 0, "proposed": 0, "accepted": 0, "rejections": 0, "accepted_at": [], "gammas": []
    }  # fmt: skip
    auto = gamma == "auto"
    g = START_GAMMA if auto else int(gamma)
    # auto times plain steps first (the baseline every choice of gamma is weighed against).
    warmup = 3 if auto else 0
    plain = drafter is None or g == 0
    plain_run = 0  # tokens decoded plainly since auto last turned speculation off

    ahead = Ahead.empty(B)  # per row, decided tokens beyond seq (which ends in pending)

    def emitted() -> int:  # by the row that has decided fewest
        return seq.shape[1] - input_ids.shape[1] + int(ahead.count.min())

    try:
        while emitted() < max_new_tokens:
            left = max_new_tokens - emitted()
            if auto and plain and plain_run >= PROBE_EVERY and drafter is not None:
                plain, plain_run, g = False, 0, START_GAMMA  # look again: the text may have changed
            if mixture is None and (plain or warmup or left == 1):
                # The drafter never sees these steps: they come before it starts, last, or for good.
                p = process(tgt.feed(pending[:, None])[:, -1], temperature, top_k, top_p)
                stats["target_calls"] += 1
                pending, ahead = ahead.first(p.argmax(-1) if greedy else _draw(p, generator))
                seq = torch.cat([seq, pending[:, None]], 1)
                warmup = max(0, warmup - 1)
                plain_run += plain
                continue
            assert drafter is not None
            drafter.sync(seq)  # everything but pending, like the target
            if mixture is None:
                k = min(g, left - 1)  # a round emits up to k + 1 tokens
                drafts, q = drafter.propose(seq, pending, k, sampling, ahead)
            else:
                # One draft step more than verified: the bonus position needs q for its pi too.
                k = max(1, min(g, left - 1)) if left > 1 else 0
                full, q = drafter.propose(seq, pending, k + 1, sampling, ahead)
                drafts = full[:, :k]
            tgt.mark()
            p = process(tgt.feed(torch.cat([pending[:, None], drafts], 1)), temperature, top_k, top_p)
            stats["target_calls"] += 1
            if mixture is not None:
                if q is None:  # a deterministic drafter: q is one-hot at its proposals
                    q = torch.nn.functional.one_hot(full, p.shape[-1]).to(p.dtype)
                p = mixture(p, q)  # (B, k + 1, V): pi takes the target's place from here on
            accepted, residual = _verify(p[:, :k], q if q is None else q[:, :k], drafts, generator, greedy)
            slot = torch.arange(k)
            queued = slot[None, :] < ahead.count[:, None]  # (B, k): slots holding already-decided tokens
            run = (accepted | queued).long().cumprod(1).sum(1)  # (B,) leading kept slots per row
            # Each row's decided tokens this round: its kept slots, then the correction at its first
            # rejection or the bonus after a full run; a row whose queue outlasts the slots keeps its queue.
            at = run.clamp(max=max(k - 1, 0))
            fix = residual[torch.arange(B), at] if k else p[:, 0]  # (B, V)
            short = run < k  # (B,) rows that met a rejection
            if greedy:
                fix, bonus = fix.argmax(-1), p[:, k].argmax(-1)
            else:  # draw only what some row needs: at batch 1 that is one draw
                fix = _draw(fix, generator) if short.any() else run
                bonus = run if short.all() else _draw(p[:, k], generator)
            extra = torch.where(short, fix, bonus)
            decided = torch.cat([drafts, extra[:, None]], 1).scatter(1, run[:, None], extra[:, None])
            long_queue = ahead.count > k
            width = max(k + 1, ahead.tokens.shape[1])
            decided = torch.where(long_queue[:, None], _widen(ahead.tokens, width), _widen(decided, width))
            count = torch.where(long_queue, ahead.count, run + 1)  # (B,) valid decided tokens
            m = int(run.min())  # every row decided at least m + 1 tokens; the models keep that many
            seq = torch.cat([seq, decided[:, : m + 1]], 1)
            pending = decided[:, m]
            ahead = Ahead(decided[:, m + 1 :], count - (m + 1))
            tgt.keep(m + 1)  # the old pending and the m slots every row kept
            drafter.accept(m + 1, drafts if mixture is None else full)
            judged = (~queued).sum(1)  # (B,) slots each row really proposed
            stats["proposed"] += int(judged.sum())
            stats["accepted"] += int((run - queued.sum(1)).sum())
            stats["rejections"] += int(short.sum())  # each row that stopped short met one rejection
            kept_at = ((run[:, None] > slot) & ~queued).sum(0)  # (k,) proposed and kept, per slot
            stats["accepted_at"].append(list(zip(kept_at.tolist(), (~queued).sum(0).tolist(), strict=True)))
            stats["gammas"].append(k)
            if auto:
                g, plain = _retune(stats, tgt, drafter, B)
    finally:
        for m_, w in zip(models, was, strict=True):
            m_.train(w)
    seq = torch.cat([seq, ahead.tokens], 1)  # rows that ran ahead: the rest of their tokens
    out = seq[:, : input_ids.shape[1] + max_new_tokens]
    stats.update(_summary(stats, out.shape[1] - input_ids.shape[1], B, time.perf_counter() - t_start))
    return out, stats


def _verify(
    p: torch.Tensor, q: torch.Tensor | None, d: torch.Tensor, generator: torch.Generator | None, greedy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard speculative verification: accepted ``(B, k)`` and residuals ``(B, k, V)``."""
    pd = p.gather(-1, d[..., None])[..., 0]  # (B, k): p(d)
    if greedy:
        return p.argmax(-1) == d, p
    if q is None:  # a deterministic drafter: q is one-hot at d
        qd = torch.ones_like(pd)
        q = torch.nn.functional.one_hot(d, p.shape[-1]).float()
    else:
        qd = q.gather(-1, d[..., None])[..., 0]
    u = torch.rand(pd.shape, generator=generator)
    accepted = u * qd < pd  # u < p/q without dividing by a q that may be 0
    residual = (p - q).clamp(min=0)
    mass = residual.sum(-1, keepdim=True)
    # Where p <= q everywhere (p == q), rejection has probability 0; any valid row will do.
    residual = torch.where(mass > 0, residual / mass.clamp(min=1e-30), p)
    return accepted, residual


def verify_cost(measured: dict[int, float], k: int) -> float:
    """The target's cost of checking ``k`` tokens, from the costs measured at other sizes.

    Linear between measured sizes and beyond them: a call costs a fixed part
    (per-layer overhead, reading the weights) plus a part per token, and on a
    CPU the fixed part dominates at these sizes. Extrapolating in proportion
    to ``k`` instead would price every untried longer draft out of reach.

    >>> verify_cost({1: 1.0, 5: 2.0}, 3), verify_cost({1: 1.0, 5: 2.0}, 7)
    (1.5, 2.5)
    """
    ks = sorted(measured)
    if len(ks) == 1:
        return measured[ks[0]] * k / ks[0]  # one size known: no fixed part to go on
    i = max(0, min(bisect.bisect_right(ks, k) - 1, len(ks) - 2))  # beyond either end: the end segment
    lo, hi = ks[i], ks[i + 1]
    slope = max(0.0, (measured[hi] - measured[lo]) / (hi - lo))  # timing noise can make it negative
    return max(measured[lo] + slope * (k - lo), 1e-12)


def _retune(stats: dict[str, Any], tgt: Stepper, drafter: Any, B: int) -> tuple[int, bool]:
    """Pick gamma from what was measured so far; plain decoding when speculation does not pay."""
    rounds = len(stats["gammas"])
    if rounds < MIN_ROUNDS:
        return START_GAMMA, False
    # The per-position acceptance rate of the geometric model, by maximum likelihood: accepted
    # tokens over accepted tokens plus rejections. (accepted / proposed would be biased low: after a
    # rejection the rest of a round's proposals are never judged.)
    alpha = min(stats["accepted"] / max(1, stats["accepted"] + stats["rejections"]), 0.99)
    draft_cost = drafter.cost_per_token() or 0.0
    measured = {k: tgt.cost(k) for k in tgt.seconds if tgt.cost(k) is not None}
    if 1 not in measured:
        return START_GAMMA, False  # no plain step timed yet; the next one will be
    best, speed = choose_gamma(alpha, draft_cost, lambda k: verify_cost(measured, k))
    return (best, False) if speed >= MIN_SPEEDUP else (0, True)


def _summary(stats: dict[str, Any], new: int, B: int, seconds: float) -> dict[str, Any]:
    kept: dict[int, int] = {}
    judged: dict[int, int] = {}
    for counts in stats["accepted_at"]:
        for i, (c, n) in enumerate(counts):
            kept[i] = kept.get(i, 0) + c
            judged[i] = judged.get(i, 0) + n
    rounds = len(stats["gammas"])
    return {
        "new_tokens": new,
        "batch": B,
        "seconds": seconds,
        "tokens_per_second": new * B / seconds if seconds > 0 else None,
        "tokens_per_target_call": new / max(1, stats["target_calls"]),
        "acceptance": stats["accepted"] / stats["proposed"] if stats["proposed"] else None,
        # Share of the draft tokens proposed at each slot of a round that were kept (queued slots aside).
        "acceptance_by_position": [kept[i] / judged[i] if judged[i] else None for i in sorted(kept)],
        "speculative_rounds": rounds,
        "accepted_at": stats.pop("accepted_at"),
    }
