"""Label noise on purpose: flip a known set of labels to test what a run can detect.

The flipped positions come back with the data, so the report can check
whether a noise detector finds exactly the rows that were corrupted.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from glassbox.data.base import Dataset
from glassbox.errors import UserError


def flip_labels(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
    """Flip ``round(fraction * len(ds))`` labels, each to a different class chosen uniformly.

    Returns the new dataset and the sorted positions (in ``ds``) that were
    flipped; ``ds.index[positions]`` gives the source rows.
    """
    if ds.task == "lm":
        raise UserError(
            f"label noise needs class labels, but '{ds.name}' is language-model data; set data.label_noise: 0"
        )
    if not 0 <= fraction < 1:
        raise UserError(f"data.label_noise must be at least 0 and below 1 (got {fraction}); fix the recipe")
    k = ds.n_classes
    if k < 2:
        raise UserError(f"'{ds.name}' has {k} class(es); flipping labels needs at least two")
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.choice(len(ds), size=round(fraction * len(ds)), replace=False))
    y = ds.y.clone()  # (N,)
    # Adding 1..k-1 modulo k lands on every other class with equal chance and
    # never on the original one.
    shift = torch.from_numpy(rng.integers(1, k, size=len(positions)))
    pos = torch.from_numpy(positions)
    y[pos] = (y[pos] + shift) % k
    return replace(ds, y=y), positions
