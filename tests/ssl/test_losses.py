"""The objectives against cases with known answers and against slow references."""

import math

import numpy as np
import pytest
import torch

from glassbox.ssl.contrastive import nt_xent, vicreg, vicreg_terms


def naive_nt_xent(z1, z2, tau):
    """SimCLR's loss written row by row from the paper's definition."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = len(z)
    B = n // 2
    total = 0.0
    for i in range(n):
        j = i + B if i < B else i - B
        sims = [math.exp(float(z[i] @ z[k]) / tau) for k in range(n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / sum(sims))
    return total / n


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("B", [2, 5])
def test_nt_xent_identical_views_orthogonal_negatives(tau, B):
    z = torch.eye(8, dtype=torch.float64)[:B] * 3.0  # any scale: the loss normalizes
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * B - 2)))
    assert float(nt_xent(z, z, tau)) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_matches_the_definition_on_random_rows():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert float(nt_xent(z1, z2, 0.3)) == pytest.approx(naive_nt_xent(z1, z2, 0.3), rel=1e-5)


def test_nt_xent_prefers_aligned_views():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 8, generator=g)
    aligned = nt_xent(z, z + 0.01 * torch.randn(16, 8, generator=g))
    shuffled = nt_xent(z, z[torch.randperm(16, generator=g)])
    assert float(aligned) < float(shuffled)


def test_vicreg_on_a_collapsed_batch():
    z = torch.ones(32, 6) * 2.5  # every row the same: zero variance, zero covariance
    t = vicreg_terms(z, z)
    assert float(t["invariance"]) == 0.0
    assert float(t["variance"]) == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)  # hinge at gamma = 1
    assert float(t["covariance"]) == 0.0
    loss, _ = vicreg(z, z)
    assert float(loss) == pytest.approx(25 * (1 - math.sqrt(1e-4)), rel=1e-6)


def test_vicreg_terms_match_numpy():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(40, 5, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1, 2, 0.1, 1.5])
    z2 = z1 + 0.3 * torch.randn(40, 5, generator=g, dtype=torch.float64)
    t = vicreg_terms(z1, z2)
    a, b = z1.numpy(), z2.numpy()
    inv = np.mean((a - b) ** 2)
    var = sum(np.mean(np.maximum(0, 1 - np.sqrt(x.var(0, ddof=1) + 1e-4))) for x in (a, b)) / 2
    cov = 0.0
    for x in (a, b):
        c = np.cov(x, rowvar=False)
        cov += (c**2).sum() - (np.diag(c) ** 2).sum()
    cov = cov / 5 / 2
    assert float(t["invariance"]) == pytest.approx(inv, rel=1e-9)
    assert float(t["variance"]) == pytest.approx(var, rel=1e-9)
    assert float(t["covariance"]) == pytest.approx(cov, rel=1e-9)


def test_vicreg_is_zero_for_identical_whitened_views():
    # Unit variance in every dimension and no covariance: only the eps in the std remains.
    z = torch.tensor([[1.0, 1], [1, -1], [-1, 1], [-1, -1]]) * math.sqrt(3 / 4)  # sample var 1
    t = vicreg_terms(z, z)
    assert float(t["invariance"]) == 0
    assert float(t["variance"]) == 0
    assert float(t["covariance"]) == pytest.approx(0, abs=1e-12)
