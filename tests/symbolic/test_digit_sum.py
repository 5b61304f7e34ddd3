"""Digit addition learned from sums alone: a short run learns the digits it never saw labels for."""

import torch

from glassbox.symbolic.digit_sum import DigitNet, digit_pools, shift_augment, train_digit_sum


def test_learns_digits_from_one_digit_sums():
    # 9,600 sums (about 2 s): every test image is one the network never saw.
    res = train_digit_sum(1, examples=9600, seed=0)
    assert res["digit_accuracy"] > 0.9
    assert res["sum_accuracy"] > 0.85
    assert res["ms_per_example"] > 0 and res["reference"] == round(0.99**2, 4)


def test_pools_are_disjoint_and_stratified():
    p = digit_pools(0)
    assert len(p.train_y) + len(p.test_y) == 1797
    assert torch.bincount(p.test_y).min() >= 30
    train_rows = {tuple(x.flatten().tolist()) for x in p.train_x}
    overlap = sum(tuple(x.flatten().tolist()) in train_rows for x in p.test_x)
    assert overlap < 5  # digits has a handful of duplicate images, no more


def test_shift_augment_moves_by_at_most_one_pixel():
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    out = shift_augment(x, torch.Generator().manual_seed(0))
    where = out[:, 0].flatten(1).argmax(1)
    r, c = where // 8, where % 8
    assert out.sum() == 64 and r.sub(3).abs().max() <= 1 and c.sub(4).abs().max() <= 1
    assert len(set(zip(r.tolist(), c.tolist(), strict=True))) > 3


def test_digit_net_outputs_log_probabilities():
    out = DigitNet()(torch.rand(5, 1, 8, 8) * 16)
    assert out.shape == (5, 10) and torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)
