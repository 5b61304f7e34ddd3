"""Views: exact where they should be, label-preserving on digits, no torchvision."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from glassbox.data import load_dataset, split_dataset
from glassbox.ssl.views import MASK_BYTE, image_view, marginal_corrupt, scarf_view, span_mask, text_view


def test_image_view_with_no_change_is_the_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    out = image_view(x, g, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, translate=0.0, noise=0.0)
    assert torch.allclose(out, x, atol=1e-6)


def test_image_view_is_seeded_and_random():
    x = torch.rand(4, 1, 8, 8)
    a = image_view(x, torch.Generator().manual_seed(3))
    b = image_view(x, torch.Generator().manual_seed(3))
    c = image_view(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_image_view_pads_with_the_background_not_zero():
    # A uniform image stays uniform under any crop, rotation and shift when
    # the warped-in border takes the background value.
    x = torch.full((3, 1, 8, 8), 7.0)
    out = image_view(x, torch.Generator().manual_seed(0), degrees=30, translate=0.3, noise=0.0)
    assert torch.allclose(out, x, atol=1e-5)


def test_augmented_digits_keep_their_label():
    """A classifier trained on clean digits stays above 90 % on augmented test digits."""
    from sklearn.svm import SVC

    tr, _, te = split_dataset(load_dataset("digits"), 0.15, 0.2, seed=0)
    clf = SVC(gamma="scale").fit(tr.X.flatten(1).numpy(), tr.y.numpy())
    clean = clf.score(te.X.flatten(1).numpy(), te.y.numpy())
    accs = []
    for seed in range(3):
        aug = image_view(te.X, torch.Generator().manual_seed(seed))  # the pretraining defaults
        accs.append(clf.score(aug.flatten(1).numpy(), te.y.numpy()))
    assert clean > 0.97
    assert min(accs) > 0.90, accs
    assert np.mean(accs) < clean  # and they do change the images


def test_marginal_corruption_draws_from_the_same_column():
    g = torch.Generator().manual_seed(0)
    # Column j of the pool holds only values 100 j + (0..9): a draw from the
    # wrong column would show.
    pool = torch.arange(10)[:, None] + 100 * torch.arange(6)[None, :]
    x = torch.full((2000, 6), -1)
    out, mask = marginal_corrupt(x, pool, 0.3, g)
    assert torch.equal(out[~mask], x[~mask])
    replaced = out[mask]
    cols = mask.nonzero()[:, 1]
    assert torch.equal(replaced // 100, cols)
    assert abs(float(mask.float().mean()) - 0.3) < 0.02
    # Uniform over the pool's rows: each of the 10 values about equally often.
    counts = torch.bincount(replaced % 100, minlength=10).float()
    assert float(counts.min() / counts.max()) > 0.8
    assert scarf_view(x[:3].float(), pool.float(), 0.5, g).shape == (3, 6)


def test_span_mask_covers_about_the_ratio_in_contiguous_spans():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 512))
    out, where = span_mask(x, g, ratio=0.15, span=4)
    assert torch.equal(out[where], torch.full_like(out[where], MASK_BYTE))
    assert torch.equal(out[~where], x[~where])
    assert 0.10 < float(where.float().mean()) < 0.16  # overlapping spans mask a little less than asked
    starts = where[:, 1:] & ~where[:, :-1]
    runs = where.sum() / (starts.sum() + where[:, 0].sum())
    assert float(runs) >= 4  # spans of at least 4 bytes (more where two overlap)


def test_text_view_crops_and_keeps_length():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (8, 50))
    v = text_view(x, g, crop=0.6, ratio=0.0001)
    assert v.shape == x.shape
    assert torch.all(v[:, 30:] == MASK_BYTE)
    for row, src in zip(v, x, strict=True):  # the kept window is a contiguous piece of the source
        window = row[:30].tolist()
        s = src.tolist()
        assert any(s[i : i + 30] == window for i in range(21))


@pytest.mark.parametrize("module", ["glassbox.ssl", "glassbox.ssl.views"])
def test_no_torchvision(module):
    code = f"import sys, {module}; assert 'torchvision' not in sys.modules and 'lightly' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
