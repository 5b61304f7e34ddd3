"""Exact inference over compiled rules against brute-force enumeration, values and gradients."""

import itertools
import math

import pytest
import torch

from glassbox.symbolic.constraints import Automaton, brute_force_log_prob, logsumexp
from glassbox.symbolic.digit_sum import addition_automaton, addition_rule, make_sums, sum_digits


def random_logp(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(3 * torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def addition_by_enumeration(logp: torch.Tensor, s: torch.Tensor, N: int) -> torch.Tensor:
    """log P(a + b = s) by listing every pair of N-digit numbers: no automaton, no carry."""
    numbers = torch.arange(10**N)
    digits = (numbers[:, None] // 10 ** torch.arange(N)) % 10  # (10^N, N), least significant first
    out = []
    for row, target in zip(logp, s, strict=True):
        la = row[0::2][torch.arange(N), digits].sum(1)  # (10^N,) log P(a = number)
        lb = row[1::2][torch.arange(N), digits].sum(1)
        pair = la[:, None] + lb[None, :]  # (10^N, 10^N)
        hit = (numbers[:, None] + numbers[None, :]) == target
        out.append(torch.logsumexp(pair[hit], dim=0))
    return torch.stack(out)


@pytest.mark.parametrize("N", [1, 2, 3])
def test_addition_equals_enumeration(N):
    logp = random_logp((6, 2 * N, 10), seed=N)
    g = torch.Generator().manual_seed(N)
    s = torch.randint(0, 2 * 10**N - 1, (6,), generator=g)
    s[0] = 0  # only 0 + 0
    s[1] = 2 * (10**N - 1)  # only 99..9 + 99..9
    digits, top = sum_digits(s, N)
    fast = addition_rule(N).log_prob(logp, obs=digits, final_obs=top)
    assert torch.allclose(fast, addition_by_enumeration(logp, s, N), atol=1e-6, rtol=0)
    assert float(fast[0]) == pytest.approx(float(logp[0, :, 0].sum()), abs=1e-9)


@pytest.mark.parametrize("N", [1, 2])
def test_addition_equals_the_generic_brute_force(N):
    logp = random_logp((3, 2 * N, 10), seed=10 + N)
    s = torch.tensor([7, 10**N, 2 * 10**N - 3])
    digits, top = sum_digits(s, N)
    fast = addition_rule(N).log_prob(logp, obs=digits, final_obs=top)
    auto = addition_automaton()
    auto.groups = [(10, 10)] * N
    for b in range(3):
        ref = brute_force_log_prob(auto, list(logp[b]), obs=digits[b].tolist(), final_obs=int(top[b]))
        assert float(fast[b]) == pytest.approx(ref, abs=1e-9)


def test_gradients_match_enumeration():
    N = 2
    logits = torch.randn(4, 2 * N, 10, dtype=torch.float64, requires_grad=True)
    s = torch.tensor([5, 47, 120, 198])
    digits, top = sum_digits(s, N)
    fast = addition_rule(N).log_prob(torch.log_softmax(logits, -1), obs=digits, final_obs=top).sum()
    (g_fast,) = torch.autograd.grad(fast, logits)
    slow = addition_by_enumeration(torch.log_softmax(logits, -1), s, N).sum()
    (g_slow,) = torch.autograd.grad(slow, logits)
    assert torch.allclose(g_fast, g_slow, atol=1e-9)


def test_impossible_sums_are_minus_infinity_with_finite_gradients():
    logits = torch.randn(2, 2, 10, dtype=torch.float64, requires_grad=True)
    digits, top = sum_digits(torch.tensor([3, 19]), 1)  # 19 > 9 + 9: impossible
    lp = addition_rule(1).log_prob(torch.log_softmax(logits, -1), obs=digits, final_obs=top)
    assert math.isfinite(float(lp[0].detach())) and float(lp[1].detach()) == float("-inf")
    lp[0].backward()
    assert torch.isfinite(logits.grad).all()


def test_safe_logsumexp():
    x = torch.tensor([[float("-inf"), float("-inf")], [0.0, math.log(3.0)]], requires_grad=True)
    out = logsumexp(x, dim=1)
    assert out[0] == float("-inf") and float(out[1]) == pytest.approx(math.log(4.0))
    out[1].backward()
    assert torch.isfinite(x.grad).all() and torch.allclose(x.grad[1], torch.tensor([0.25, 0.75]))


def test_a_rule_over_table_flags():
    """ "exactly k of the n binary features are 1": a counting automaton against brute force."""
    n, k = 5, 2
    rule = Automaton(  # the state counts the ones so far; a (k+1)-th one rejects at once
        n_states=k + 1,
        start=0,
        groups=[(2,)],
        step=lambda c, v, o: None if c + v[0] > k else c + v[0],
        accept=lambda c, o: c == k,
    )
    compiled = rule.compile(steps=n)
    logp = random_logp((4, n, 2), seed=3)
    fast = compiled.log_prob(logp)
    rule.groups = [(2,)] * n
    for b in range(4):
        assert float(fast[b]) == pytest.approx(brute_force_log_prob(rule, list(logp[b])), abs=1e-9)
    # with certain inputs the rule is certain too
    hard = torch.log(torch.tensor([[[0.0, 1.0]] * 2 + [[1.0, 0.0]] * 3]).double())
    assert float(compiled.log_prob(hard)) == 0.0
    assert float(compiled.semantic_loss(hard)) == 0.0


def test_rejecting_steps_and_bad_states():
    # "no two adjacent ones": the state is the last value; a second 1 rejects.
    rule = Automaton(n_states=2, start=0, groups=[(2,)], step=lambda s, v, o: None if s and v[0] else v[0],
                     accept=lambda s, o: True)  # fmt: skip
    logp = torch.full((1, 3, 2), math.log(0.5), dtype=torch.float64)
    valid = sum(1 for bits in itertools.product((0, 1), repeat=3) if "11" not in "".join(map(str, bits)))
    assert float(rule.compile(steps=3).log_prob(logp).exp()) == pytest.approx(valid / 8)
    bad = Automaton(n_states=2, start=0, groups=[(3,)], step=lambda s, v, o: v[0], accept=lambda s, o: True)
    with pytest.raises(ValueError, match="is not a state"):
        bad.compile(steps=1)


def test_sums_are_built_from_their_digits():
    x = torch.arange(10).float().reshape(10, 1, 1, 1).expand(10, 1, 8, 8)
    y = torch.arange(10)
    imgs, s, digits = make_sums(x, y, 3, 50, torch.Generator().manual_seed(0))
    assert imgs.shape == (50, 6, 1, 8, 8)
    assert torch.equal(imgs[:, :, 0, 0, 0].long(), digits)
    a = digits[:, 0] + 10 * digits[:, 2] + 100 * digits[:, 4]
    b = digits[:, 1] + 10 * digits[:, 3] + 100 * digits[:, 5]
    assert torch.equal(s, a + b)
    d, top = sum_digits(s, 3)
    assert torch.equal((d * torch.tensor([1, 10, 100])).sum(1) + 1000 * top, s)


def test_the_readme_rule_example_runs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "glassbox.symbolic" in b)
    scope = {"log_probs": random_logp((3, 5, 2), seed=0)}
    exec(compile(block, "README.md", "exec"), scope)
    loss = scope["loss"]
    ref = (
        -sum(
            brute_force_log_prob(
                Automaton(
                    3, 0, [(2,)] * 5, lambda c, v, o: None if c + v[0] > 2 else c + v[0], lambda c, o: c == 2
                ),
                list(row),
            )
            for row in scope["log_probs"]
        )
        / 3
    )
    assert float(loss) == pytest.approx(ref, abs=1e-9)
