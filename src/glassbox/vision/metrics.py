"""DAVIS-style video object segmentation scores: J (region IoU) and F (boundary F-measure).

>>> import numpy as np
>>> m = np.zeros((1, 8, 8), dtype=bool); m[0, 2:6, 2:6] = True
>>> jaccard(m, m), boundary_f(m, m)
(1.0, 1.0)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean IoU over frames ``(T, H, W)``; a frame where both are empty scores 1 (DAVIS)."""
    inter = (pred & gt).sum(axis=(-2, -1))
    union = (pred | gt).sum(axis=(-2, -1))
    return float(np.where(union == 0, 1.0, inter / np.maximum(union, 1)).mean())


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    # A pixel is on the boundary when a 4-neighbour (or the image edge) is outside the mask.
    m = mask.float()[:, None]  # (T, 1, H, W)
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return (m - eroded)[:, 0] > 0.5


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    return F.max_pool2d(mask.float()[:, None], k, stride=1, padding=radius)[:, 0] > 0.5


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float = 0.008) -> float:
    """Mean boundary F-measure over frames ``(T, H, W)``.

    A boundary pixel counts as matched when the other boundary is within
    ``tolerance`` of the image diagonal (DAVIS: 0.008, so 1 pixel at 64x64).
    """
    p, g = torch.from_numpy(np.asarray(pred, bool)), torch.from_numpy(np.asarray(gt, bool))
    h, w = p.shape[-2:]
    radius = max(1, math.ceil(tolerance * math.hypot(h, w)))
    bp, bg = _boundary(p), _boundary(g)
    np_, ng = bp.sum(dim=(1, 2)).float(), bg.sum(dim=(1, 2)).float()
    precision = (bp & _dilate(bg, radius)).sum(dim=(1, 2)) / np_.clamp(min=1)
    recall = (bg & _dilate(bp, radius)).sum(dim=(1, 2)) / ng.clamp(min=1)
    f = 2 * precision * recall / (precision + recall).clamp(min=1e-9)
    f = torch.where((np_ == 0) & (ng == 0), torch.ones_like(f), f)  # nothing to find, nothing found
    f = torch.where((np_ == 0) ^ (ng == 0), torch.zeros_like(f), f)
    return float(f.mean())


def j_and_f(pred: np.ndarray, gt: np.ndarray, skip: int | None = None) -> dict[str, float]:
    """J, F and their mean for one video: ``pred``, ``gt`` are ``(N, T, H, W)``, averaged over objects.

    ``skip`` leaves out one frame (the prompted one, as DAVIS leaves out the first).
    """
    keep = [t for t in range(gt.shape[1]) if t != skip]
    js = [jaccard(pred[i, keep], gt[i, keep]) for i in range(gt.shape[0])]
    fs = [boundary_f(pred[i, keep], gt[i, keep]) for i in range(gt.shape[0])]
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J": j, "F": f, "J&F": (j + f) / 2}
