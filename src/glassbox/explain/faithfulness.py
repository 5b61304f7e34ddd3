"""How good are attributions? Completeness, infidelity, max-sensitivity, deletion and insertion.

Every metric takes the model's forward function (logits ``(B, K)``), the
inputs ``(B, ...)``, attributions of the same shape, baselines and the
target class of each row, and gives one number per row:

- ``completeness``: ``|sum(attr) - (F(x) - F(baseline))|`` on the target
  logit; only meaningful for methods that claim it (IG, DeepLift).
- ``infidelity``: Captum's infidelity with ``normalize=True`` (the attributions
  are rescaled by the best factor before the squared error, so scale does not
  count; raw values favour tiny, e.g. random, attributions). Perturbations are
  Gaussian noise with a per-value standard deviation ``noise_scale``. Lower is better.
  ``baselines`` switches to perturbations relative to the baseline
  (``x - eps * (x - baseline)``), the reading IG, DeepLift and SHAP claim.
- ``max_sensitivity``: Captum's ``sensitivity_max``: the largest relative change
  ``||attr(x + e) - attr(x)|| / ||attr(x)||`` over a few uniform perturbations
  ``|e| <= radius``. Lower is better.
- ``deletion_insertion``: Petsiuk et al. 2018 (RISE). Units (table features,
  image pixels) are removed (replaced by the baseline) or inserted (into the
  baseline) in order of decreasing attribution; the target-class probability
  traces a curve over the fraction of units done, and its trapezoid area is
  the score. Deletion: lower is better; insertion: higher is better.

``random_like`` makes the seeded Gaussian control attributions every metric
is also computed for.

>>> import torch
>>> w = torch.tensor([[0.0, 0.0, 0.0], [3.0, 2.0, 1.0]])
>>> forward = lambda x: x @ w.T  # two-class linear model
>>> x, base = torch.ones(1, 3), torch.zeros(1, 3)
>>> good = deletion_insertion(forward, x, x * w[1], base, torch.tensor([1]))
>>> bad = deletion_insertion(forward, x, -x * w[1], base, torch.tensor([1]))
>>> bool(good["deletion"] < bad["deletion"]), bool(good["insertion"] > bad["insertion"])
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
CURVE_POINTS = 65  # at most this many points on a deletion/insertion curve (a 64-unit image: every pixel)
EVAL_BATCH = 4096


@torch.no_grad()
def _batched(forward: Forward, x: torch.Tensor, batch: int = EVAL_BATCH) -> torch.Tensor:
    return torch.cat([forward(x[i : i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def completeness(
    forward: Forward,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    baselines: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """``|sum(attr) - (F(x) - F(baseline))|`` per row, ``F`` the target-class logit."""
    t = targets[:, None]
    gap = _batched(forward, inputs).gather(1, t)[:, 0] - _batched(forward, baselines).gather(1, t)[:, 0]
    return (attributions.flatten(1).sum(1).to(gap.dtype) - gap).abs()


def infidelity(
    forward: Forward,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor,
    noise_scale: torch.Tensor | float,
    *,
    n_perturb: int = 20,
    seed: int = 0,
    baselines: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalized infidelity per row under Gaussian perturbations of std ``noise_scale`` (broadcast).

    With ``baselines``, perturbations are relative to the baseline instead
    (Captum's ``multiply_by_inputs`` convention, Yeh et al.'s noisy baseline):
    the input moves to ``x - eps * (x - baseline)`` with ``eps ~ N(0, noise_scale^2)``
    per value, and the attributions are dotted with ``eps``. That reads
    attributions as contributions of each value's deviation from the baseline,
    which is what IG, DeepLift and SHAP claim; under plain additive noise their
    dot product carries an extra factor ``x - baseline`` and is barely better
    than random (measured on breast-cancer: ratio 1.0-1.1).

    The generator is reseeded on every call, so every set of attributions of
    the same inputs is scored on the same perturbations.
    """
    from captum.metrics import infidelity as captum_infidelity

    gen = torch.Generator().manual_seed(seed)
    scale = torch.as_tensor(noise_scale, dtype=inputs.dtype)
    base = None if baselines is None else baselines.to(inputs.dtype)

    def perturb(x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = x[0] if isinstance(x, tuple) else x
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) * scale
        if base is not None:
            # Captum repeats each row n_perturb times in a row (repeat_interleave).
            return noise, x - noise * (x - base.repeat_interleave(len(x) // len(base), 0))
        return noise, x - noise  # Captum's convention: perturbation = input - perturbed input

    with torch.no_grad():
        out = captum_infidelity(
            forward,
            perturb,
            inputs,
            attributions.to(inputs.dtype),
            target=targets,
            n_perturb_samples=n_perturb,
            max_examples_per_batch=max(len(inputs), min(len(inputs) * n_perturb, EVAL_BATCH)),
            normalize=True,
        )
    return out.detach()


def max_sensitivity(
    explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    radius: torch.Tensor | float,
    *,
    n_perturb: int = 5,
    seed: int = 0,
) -> torch.Tensor:
    """Captum's max-sensitivity per row; ``explain(x, targets)`` recomputes attributions.

    Perturbations are uniform in ``[-radius, radius]`` per value (``radius``
    broadcasts over the input, e.g. a fraction of each feature's spread).
    """
    from captum.metrics import sensitivity_max

    gen = torch.Generator().manual_seed(seed)
    r = torch.as_tensor(radius, dtype=inputs.dtype)

    def perturb(x: Any) -> torch.Tensor:
        x = x[0] if isinstance(x, tuple) else x
        return x + (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1) * r

    def explanation(x: Any, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x[0] if isinstance(x, tuple) else x  # sensitivity_max passes a tuple, and wants one back
        with torch.enable_grad():  # it calls this under no_grad; gradient methods need the graph
            return (explain(x, target),)

    out = sensitivity_max(
        explanation, inputs, perturb_func=perturb, n_perturb_samples=n_perturb, target=targets
    )
    return out.detach()


def unit_scores(attributions: torch.Tensor) -> torch.Tensor:
    """One score per unit ``(B, U)``: table features as they are, image pixels summed over channels."""
    if attributions.ndim == 4:
        return attributions.sum(1).flatten(1)
    return attributions.flatten(1)


@torch.no_grad()
def deletion_insertion(
    forward: Forward,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    *,
    points: int = CURVE_POINTS,
) -> dict[str, Any]:
    """Deletion and insertion AUC per row, and the curves, ordering units by decreasing attribution.

    Returns ``{"deletion": (B,), "insertion": (B,), "deletion_curve": (B, P),
    "insertion_curve": (B, P), "fractions": (P,)}`` (tensors), ``P`` points from
    0 to every unit done (every unit when there are fewer than ``points``).
    """
    B = len(inputs)
    scores = unit_scores(attributions)  # (B, U)
    U = scores.shape[1]
    P = min(points, U + 1)
    counts = torch.round(torch.linspace(0, U, P, dtype=torch.float64)).long()  # units done at each point
    order = torch.argsort(-scores.double(), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(U).expand(B, U).contiguous())
    done = rank[None] < counts[:, None, None]  # (P, B, U): True where the unit is removed/inserted
    if inputs.ndim == 4:
        H, W = inputs.shape[2:]
        done = done.reshape(P, B, 1, H, W)
    x, base = inputs[None], baselines[None]
    curves = {}
    for name, first, second in (("deletion", base, x), ("insertion", x, base)):
        mixed = torch.where(done, first, second).reshape(P * B, *inputs.shape[1:])
        prob = _batched(forward, mixed).softmax(-1).reshape(P, B, -1)
        curves[name] = prob.gather(2, targets[None, :, None].expand(P, B, 1))[..., 0].T  # (B, P)
    fractions = counts.double() / U
    return {
        "deletion": _trapezoid(curves["deletion"], fractions),
        "insertion": _trapezoid(curves["insertion"], fractions),
        "deletion_curve": curves["deletion"],
        "insertion_curve": curves["insertion"],
        "fractions": fractions,
    }


def _trapezoid(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.trapezoid(y.double(), x, dim=-1)


def random_like(attributions: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Seeded Gaussian attributions of the same shape, each row scaled to the same L2 norm as the input's.

    The scale only matters for completeness; the other metrics do not depend on it.
    """
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(attributions.shape, generator=gen, dtype=torch.float64)
    norm = attributions.double().flatten(1).norm(dim=1).clamp(min=1e-12)
    r = r * (norm / r.flatten(1).norm(dim=1)).reshape(-1, *([1] * (r.ndim - 1)))
    return r.to(attributions.dtype)


def random_explainer(seed: int = 0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An "explainer" that ignores the model: fresh seeded Gaussian attributions on every call."""
    gen = torch.Generator().manual_seed(seed)

    def explain(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=gen, dtype=x.dtype)

    return explain


def stats(values: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean, median and max of per-row values, as plain floats."""
    v = np.asarray(torch.as_tensor(values).double().cpu().numpy(), dtype=np.float64)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "max": float(v.max())}
