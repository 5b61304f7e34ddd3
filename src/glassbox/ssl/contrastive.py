"""Contrastive and non-contrastive objectives: NT-Xent (SimCLR, SCARF) and VICReg.

Both compare two views of a batch (``glassbox.ssl.views``) through the
encoder and a small head; only the encoder is kept after pretraining, since
the layer before the head carries more general features (SimCLR's finding).

>>> import torch
>>> z = torch.eye(4)  # four orthogonal embeddings, each view identical to its pair
>>> # each row: its partner at similarity 1, six others at 0, so -log(e / (e + 6))
>>> round(float(nt_xent(z, z, temperature=1.0)), 4)
1.1654
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glassbox.ssl.base import METHODS, Method, make_view, represent, seeded_augment


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalized-temperature cross-entropy of paired rows ``z1``, ``z2`` (B, D).

    Each of the 2B rows must pick its partner among the other 2B - 1 rows by
    cosine similarity / temperature; the loss is the mean cross-entropy.
    """
    B = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D)
    sim = z @ z.T / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(z.device)  # partner of each row
    return F.cross_entropy(sim, target)


def vicreg_terms(
    z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4
) -> dict[str, torch.Tensor]:
    """VICReg's three terms (Bardes, Ponce, LeCun, ICLR 2022) for paired rows (B, D).

    invariance: mean squared distance between the views; variance: mean
    hinge ``max(0, gamma - std)`` of every dimension of each view (what stops
    collapse); covariance: sum of squared off-diagonal covariances / D of each
    view (what decorrelates dimensions).
    """
    D = z1.shape[1]
    inv = F.mse_loss(z1, z2)
    var = z1.new_zeros(())
    cov = z1.new_zeros(())
    for z in (z1, z2):
        std = torch.sqrt(z.var(dim=0) + eps)  # (D,)
        var = var + F.relu(gamma - std).mean() / 2
        zc = z - z.mean(dim=0)
        c = zc.T @ zc / (len(z) - 1)  # (D, D)
        off = c - torch.diag(torch.diagonal(c))
        cov = cov + off.pow(2).sum() / D / 2
    return {"invariance": inv, "variance": var, "covariance": cov}


def vicreg(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted VICReg loss (the paper's 25 / 25 / 1) and its terms."""
    t = vicreg_terms(z1, z2)
    loss = sim_coeff * t["invariance"] + std_coeff * t["variance"] + cov_coeff * t["covariance"]
    return loss, t


def projection_head(dim: int, hidden: int, out: int) -> nn.Module:
    """SimCLR's MLP head (VICReg's expander when wider): Linear-BN-ReLU-Linear."""
    # BatchNorm in the head only: it is discarded after pretraining, and
    # VICReg and SimCLR both rely on it for stable training.
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


@METHODS.register("contrastive")
class Contrastive(Method):
    """NT-Xent between two views through a projection head: SCARF for tables, SimCLR for images.

    Text views crop and span-mask the byte windows.
    """

    def __init__(self, model: nn.Module, cfg: Any, pool: torch.Tensor | None = None) -> None:
        super().__init__()
        dim = model.norm.normalized_shape[0]
        self.kind = model.kind
        self.cfg = cfg
        self.pool = pool
        self.head = projection_head(dim, 2 * dim, cfg.proj_dim)

    def loss(
        self, model: nn.Module, x: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        v1, v2 = (
            make_view(self.kind, x, g, self.pool, self.cfg),
            make_view(self.kind, x, g, self.pool, self.cfg),
        )
        with seeded_augment(model, g):
            z = self.head(represent(model, torch.cat([v1, v2])))  # (2B, proj_dim): one pass, one BN batch
        z1, z2 = z.chunk(2)
        loss = nt_xent(z1, z2, self.cfg.temperature)
        return loss, {"nt_xent": float(loss.detach())}


@METHODS.register("vicreg")
class VICReg(Method):
    """VICReg between two views (the same views as ``contrastive``) through a wider expander."""

    def __init__(self, model: nn.Module, cfg: Any, pool: torch.Tensor | None = None) -> None:
        super().__init__()
        dim = model.norm.normalized_shape[0]
        self.kind = model.kind
        self.cfg = cfg
        self.pool = pool
        # The paper's expander is wider than the representation; its covariance
        # term then decorrelates more dimensions than the encoder has.
        self.head = projection_head(dim, 4 * dim, 4 * dim)

    def loss(
        self, model: nn.Module, x: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        v1, v2 = (
            make_view(self.kind, x, g, self.pool, self.cfg),
            make_view(self.kind, x, g, self.pool, self.cfg),
        )
        with seeded_augment(model, g):
            z1, z2 = self.head(represent(model, torch.cat([v1, v2]))).chunk(2)
        loss, terms = vicreg(z1, z2)
        return loss, {k: float(v.detach()) for k, v in terms.items()}
