"""Weighted model counting over a rule on categorical variables, compiled to a dynamic program.

A rule is a small program that reads categorical variables step by step
and carries a finite state: a deterministic automaton. At step ``i`` it
reads a group of variables (one digit, or the two digits of a column of an
addition), may read an observed value (the sum's digit at that column) and
moves to a next state or rejects; at the end, ``accept(state, observed)``
says whether the whole assignment satisfies the rule. Many rules people
state have this shape: "the digits sum to s" (state: the running sum),
"column-wise addition with a carry" (state: the carry), "exactly k of these
flags are set" (state: the count), "no two adjacent tokens are both 1".

``Automaton.compile`` enumerates every (state, values, observation) once and
stores the transitions as 0/1 tensors; ``log_prob`` then computes, for a
batch of independent distributions over the variables (a network's
log-softmax outputs), the exact log-probability that the rule holds,

    log P(rule | p) = log sum over satisfying assignments of prod_i p_i(x_i),

by the forward algorithm in log space: ``alpha_{i+1}[s'] = logsumexp over
(s, v) with step(s, v) = s' of alpha_i[s] + log p_i(v)``. Cost
``O(steps * states * |values| * states)``, linear in the number of steps,
against the ``prod |domain|`` of enumeration. The result is differentiable,
so ``-log P`` is the semantic loss (Xu et al., ICML 2018) that trains a
perception model from the rule's outcome alone. ``brute_force_log_prob``
enumerates every assignment: the slow exact reference the tests hold the
program to.

>>> import torch
>>> # "the two digits sum to s": one step reading both digits, the state is the sum.
>>> rule = Automaton(n_states=19, start=0, groups=[(10, 10)],
...                  step=lambda s, v, obs: v[0] + v[1], accept=lambda s, obs: s == obs)
>>> rule = rule.compile(obs_values=19)
>>> p = torch.full((1, 2, 10), 0.1).log()  # two uniform digits
>>> round(float(rule.log_prob(p, final_obs=torch.tensor([9])).exp()), 4)  # 10 of 100 pairs sum to 9
0.1
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp`` whose gradient stays finite where every term is -inf.

    Unreachable states are -inf by design; torch's own logsumexp returns
    -inf for them but a NaN gradient, which the chain rule then spreads
    (0 * NaN) into every parameter.
    """
    m = x.amax(dim=dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    total = (x - m).exp().sum(dim)
    safe = total.clamp_min(torch.finfo(x.dtype).tiny).log() + m.squeeze(dim)
    return torch.where(total > 0, safe, torch.full_like(safe, NEG_INF))


# step(state, values of the step's group, observation at this step) -> next state, or None to reject.
StepFn = Callable[[int, tuple[int, ...], int | None], int | None]
AcceptFn = Callable[[int, int | None], bool]


@dataclass
class Automaton:
    """A rule as a deterministic automaton over groups of categorical variables (see the module doc).

    ``groups[i]`` holds the domain sizes of the variables read at step i;
    when every step reads the same group, one entry stands for all steps
    and ``compile(steps=n)`` unrolls it.
    """

    n_states: int
    start: int
    groups: Sequence[tuple[int, ...]]
    step: StepFn
    accept: AcceptFn

    def compile(self, steps: int | None = None, obs_values: int | None = None) -> CompiledRule:
        """Enumerate the transitions once into tensors. ``obs_values``: size of the observation domain.

        Observations (per step and final) are ids in ``range(obs_values)``;
        without them (``None``) the rule reads none.
        """
        groups = list(self.groups)
        if steps is not None:
            if len(groups) != 1:
                raise ValueError("steps= unrolls a single repeated group; give groups per step instead")
            groups = groups * steps
        obs_range: list[int | None] = [None] if obs_values is None else list(range(obs_values))
        S = self.n_states
        tables: dict[tuple[int, ...], torch.Tensor] = {}
        for group in dict.fromkeys(groups):  # one table per distinct group shape
            # (O, S, V1, ..., Vk, S'): 1 where step(s, v, o) = s'
            t = torch.zeros(len(obs_range), S, *group, S)
            for oi, o in enumerate(obs_range):
                for s in range(S):
                    for v in itertools.product(*(range(d) for d in group)):
                        nxt = self.step(s, v, o)
                        if nxt is not None:
                            if not 0 <= nxt < S:
                                raise ValueError(f"step({s}, {v}, {o}) = {nxt} is not a state in 0..{S - 1}")
                            t[(oi, s, *v, nxt)] = 1.0
            tables[group] = t
        accept = torch.tensor(
            [[bool(self.accept(s, o)) for s in range(S)] for o in obs_range], dtype=torch.bool
        )  # (O, S)
        return CompiledRule(groups, tables, accept, self.start, S, obs_values)


class CompiledRule:
    """Transition tensors of an ``Automaton``; ``log_prob`` runs the forward algorithm on a batch."""

    def __init__(
        self,
        groups: list[tuple[int, ...]],
        tables: dict[tuple[int, ...], torch.Tensor],
        accept: torch.Tensor,
        start: int,
        n_states: int,
        obs_values: int | None,
    ) -> None:
        self.groups = groups
        # Log-space masks: 0 where a transition exists, -inf where it does not.
        self.log_tables = {g: torch.where(t > 0, 0.0, NEG_INF) for g, t in tables.items()}
        self.log_accept = torch.where(accept, 0.0, NEG_INF)  # (O, S)
        self.start = start
        self.n_states = n_states
        self.obs_values = obs_values
        self.n_vars = sum(len(g) for g in groups)

    def _split(self, logp: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The variables' log-probabilities, one ``(B, d)`` tensor each, in step order."""
        if isinstance(logp, torch.Tensor):
            return list(logp.unbind(1))  # (B, n, d): every variable with the same domain
        return list(logp)

    def log_prob(
        self,
        logp: torch.Tensor | Sequence[torch.Tensor],
        obs: torch.Tensor | None = None,
        final_obs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B,) the exact log-probability that the rule holds, for independent variables.

        ``logp``: log-probabilities of the variables in step order, ``(B, n, d)``
        or a list of ``(B, d_j)``; ``obs`` ``(B, steps)`` and ``final_obs`` ``(B,)``
        the observation ids, when the rule reads them.
        """
        lps = self._split(logp)
        if len(lps) != self.n_vars:
            raise ValueError(f"the rule reads {self.n_vars} variables, got {len(lps)}")
        B = lps[0].shape[0]
        dtype, device = lps[0].dtype, lps[0].device
        alpha = torch.full((B, self.n_states), NEG_INF, dtype=dtype, device=device)
        alpha[:, self.start] = 0.0  # (B, S)
        k = 0
        for i, group in enumerate(self.groups):
            table = self.log_tables[group].to(dtype=dtype, device=device)  # (O, S, V..., S')
            table = table[obs[:, i]] if obs is not None else table[0].expand(B, *table.shape[1:])
            # joint[b, s, v1, .., vk] = alpha[b, s] + sum_j log p_j(v_j)
            joint = alpha.reshape(B, self.n_states, *([1] * len(group)))
            for j, d in enumerate(group):
                shape = [B, 1] + [1] * len(group)
                shape[2 + j] = d
                joint = joint + lps[k + j].reshape(shape)
            k += len(group)
            scores = joint.unsqueeze(-1) + table  # (B, S, V..., S')
            alpha = logsumexp(scores.flatten(1, -2), dim=1)  # (B, S')
        acc = self.log_accept.to(dtype=dtype, device=device)
        acc = acc[final_obs] if final_obs is not None else acc[0].expand(B, -1)  # (B, S)
        return logsumexp(alpha + acc, dim=1)  # (B,)

    def semantic_loss(
        self, logp: torch.Tensor | Sequence[torch.Tensor], **obs: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean ``-log P(rule holds)`` over the batch: train a perception model from the rule alone."""
        return -self.log_prob(logp, **obs).mean()


def brute_force_log_prob(
    automaton: Automaton,
    logp: Sequence[torch.Tensor],
    obs: Sequence[int | None] | None = None,
    final_obs: int | None = None,
) -> float:
    """The slow exact reference for one example: enumerate every assignment of every variable.

    ``logp``: one ``(d_j,)`` log-probability vector per variable, in step
    order, for the groups of ``automaton`` as they are (not unrolled).
    """
    groups = list(automaton.groups)
    sizes = [d for g in groups for d in g]
    if len(sizes) != len(logp):
        raise ValueError(f"{len(sizes)} variables in the groups, {len(logp)} distributions given")
    total = NEG_INF
    for assignment in itertools.product(*(range(d) for d in sizes)):
        s: int | None = automaton.start
        k = 0
        for i, g in enumerate(groups):
            values = assignment[k : k + len(g)]
            k += len(g)
            s = automaton.step(s, values, None if obs is None else obs[i])  # type: ignore[arg-type]
            if s is None:
                break
        if s is None or not automaton.accept(s, final_obs):
            continue
        lp = sum(float(logp[j][v]) for j, v in enumerate(assignment))
        total = lp if total == NEG_INF else max(total, lp) + math.log1p(math.exp(-abs(total - lp)))
    return total
