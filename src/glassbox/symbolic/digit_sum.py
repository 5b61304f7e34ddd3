"""Multi-digit addition from sums only (MNIST-addition, on scikit-learn's 8 x 8 digits).

Each example shows two N-digit numbers as 2N digit images; the only label
is their sum. A perception network gives each image a distribution over
0-9, and the rule "a + b = s", written as column-wise addition with a
carry (``addition_rule``: an ``Automaton`` whose state is the carry),
turns those into the exact probability of the observed sum, linear in N.
Training maximizes that probability (the semantic loss); the network never
sees a digit label.

Images are split into training and test pools first (stratified, seeded),
so test sums are made of images the network never saw. Digit accuracy is
measured on every test image; sum accuracy on seeded test sums, predicting
each digit by its argmax. If each digit is right with probability p, a sum
is right with about p^(2N): the reference 0.99^(2N) of the literature.

>>> import torch
>>> rule = addition_rule(2)
>>> digits, top = sum_digits(torch.tensor([99 + 99, 12 + 34]), 2)
>>> digits.tolist(), top.tolist()  # least significant first; the carry out is the top digit
([[8, 9], [6, 4]], [1, 0])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glassbox.symbolic.constraints import Automaton, CompiledRule


def addition_automaton() -> Automaton:
    """Column ``i`` reads digits (a_i, b_i) and observes the sum's digit s_i; the state is the carry.

    ``step(c, (a, b), s_i)`` is the new carry when ``(a + b + c) mod 10 == s_i``
    and rejects otherwise; at the end the carry must equal the sum's top digit.
    """

    def step(carry: int, v: tuple[int, ...], s_digit: int | None) -> int | None:
        total = v[0] + v[1] + carry
        return total // 10 if total % 10 == s_digit else None

    return Automaton(n_states=2, start=0, groups=[(10, 10)], step=step, accept=lambda c, top: c == top)


def addition_rule(n_digits: int) -> CompiledRule:
    """The compiled rule for N-digit addition: ``log_prob(logp (B, 2N, 10), obs=digits, final_obs=top)``."""
    return addition_automaton().compile(steps=n_digits, obs_values=10)


def sum_digits(s: torch.Tensor, n_digits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``s`` (B,) -> its N lowest digits (B, N), least significant first, and the digit above (B,)."""
    powers = 10 ** torch.arange(n_digits + 1, dtype=torch.int64)  # (N + 1,)
    digits = (s[:, None] // powers) % 10  # (B, N + 1)
    if bool((s // powers[-1] >= 10).any()):
        raise ValueError(f"a sum of two {n_digits}-digit numbers has at most {n_digits + 1} digits")
    return digits[:, :n_digits], digits[:, n_digits]


class DigitNet(nn.Module):
    """A small convolutional network for 8 x 8 digits: (B, 1, 8, 8) -> (B, 10) log-probabilities.

    Small on purpose: at N = 15 every example is 30 images, and the issue's
    bar is under 10 ms per example on a laptop-class CPU.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, w, 4, 4)
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2w, 2, 2)
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(8 * width, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.net(x / 16.0), dim=-1)  # digits' pixels are 0..16


@dataclass
class Pools:
    """Digit images and their labels, split once into a training and a test pool."""

    train_x: torch.Tensor  # (n, 1, 8, 8)
    train_y: torch.Tensor  # (n,)
    test_x: torch.Tensor
    test_y: torch.Tensor


def digit_pools(seed: int = 0, test_fraction: float = 0.2) -> Pools:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = torch.tensor(d.images, dtype=torch.float32)[:, None]  # (1797, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.int64)
    tr, te = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=d.target
    )
    return Pools(X[tr], y[tr], X[te], y[te])


def make_sums(
    x: torch.Tensor, y: torch.Tensor, n_digits: int, count: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` examples: images (count, 2N, 1, 8, 8) in the rule's order, sums (count,), digits (count, 2N).

    The rule's order interleaves the two numbers by column, least significant
    first: a_0, b_0, a_1, b_1, ...
    """
    idx = torch.randint(0, len(y), (count, 2 * n_digits), generator=g)  # (count, 2N)
    digits = y[idx]  # (count, 2N)
    powers = 10 ** torch.arange(n_digits, dtype=torch.int64)  # (N,)
    a = (digits[:, 0::2] * powers).sum(1)
    b = (digits[:, 1::2] * powers).sum(1)
    return x[idx], a + b, digits


def shift_augment(x: torch.Tensor, g: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels each way, padding with the background (0)."""
    B = x.shape[0]
    pad = F.pad(x, (max_shift,) * 4)  # (B, 1, 8 + 2m, 8 + 2m)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    H, W = x.shape[-2:]
    rows = (dy[:, None] + torch.arange(H))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(W))[:, None, :]  # (B, 1, W)
    return pad[torch.arange(B)[:, None, None], 0, rows, cols][:, None]  # (B, 1, H, W)


@torch.no_grad()
def evaluate(
    net: nn.Module, pools: Pools, n_digits: int, n_sums: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Digit accuracy on every test image; sum accuracy on ``n_sums`` seeded test sums (argmax digits)."""
    net.eval()
    digit_acc = float((net(pools.test_x).argmax(1) == pools.test_y).float().mean())
    g = torch.Generator().manual_seed(10_000 + seed)
    imgs, sums, _ = make_sums(pools.test_x, pools.test_y, n_digits, n_sums, g)
    pred = net(imgs.flatten(0, 1)).argmax(1).reshape(n_sums, 2 * n_digits)  # (n, 2N)
    powers = 10 ** torch.arange(n_digits, dtype=torch.int64)
    guess = (pred[:, 0::2] * powers).sum(1) + (pred[:, 1::2] * powers).sum(1)
    return {"digit_accuracy": digit_acc, "sum_accuracy": float((guess == sums).float().mean())}


def train_digit_sum(
    n_digits: int,
    *,
    examples: int = 30_000,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    augment: bool = True,
    pools: Pools | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 200,
) -> dict[str, Any]:
    """Train a ``DigitNet`` from the sums of ``examples`` N-digit additions alone; evaluate it.

    Returns the test metrics, the seconds spent training (forward, exact
    inference, backward and the optimizer; data generation included) and
    the milliseconds per example, plus the trained network under ``"net"``.
    """
    torch.manual_seed(seed)
    pools = pools or digit_pools(seed)
    g = torch.Generator().manual_seed(seed)
    net = DigitNet()
    rule = addition_rule(n_digits)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = math.ceil(examples / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    history = []
    train_seconds = 0.0
    net.train()
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        imgs, sums, _ = make_sums(pools.train_x, pools.train_y, n_digits, batch_size, g)
        x = imgs.flatten(0, 1)  # (B * 2N, 1, 8, 8)
        if augment:
            x = shift_augment(x, g)
        logp = net(x).reshape(batch_size, 2 * n_digits, 10)  # (B, 2N, 10)
        digits, top = sum_digits(sums, n_digits)
        loss = rule.semantic_loss(logp, obs=digits, final_obs=top)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_seconds += time.perf_counter() - t0
        if step % log_every == 0 or step == steps:
            record = {"step": step, "examples": step * batch_size, "loss": float(loss.detach())}
            history.append(record)
            if on_log is not None:
                on_log(record)
    result = evaluate(net, pools, n_digits, seed=seed)
    result.update(
        n_digits=n_digits,
        examples=steps * batch_size,
        train_seconds=round(train_seconds, 2),
        ms_per_example=round(1000 * train_seconds / (steps * batch_size), 3),
        reference=round(0.99 ** (2 * n_digits), 4),
        history=history,
        net=net,
    )
    return result
