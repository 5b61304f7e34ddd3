"""Gradient and perturbation attributions through Captum: IG, DeepLift, KernelShap.

Every function attributes the **target-class logit** (not the probability) of
each row to the input values, against a baseline of the same shape, and
returns ``(attributions, info)`` with attributions shaped like the input and
``info`` a small JSON-able dict about how they were computed.

- ``integrated_gradients``: Captum's IntegratedGradients with Gauss-Legendre
  nodes. Starting at 32 steps, the step count doubles until the largest
  ``|convergence delta|`` over the rows (``sum(attr) - (F(x) - F(baseline))``)
  is below ``tol`` or ``max_steps`` is reached; ``info`` records the steps
  used, the max and median delta, and whether it converged.
- ``deeplift``: Captum's DeepLift (rescale rule). Captum only replaces the
  gradient of the nonlinear *modules* it knows (ReLU, Sigmoid, Tanh,
  nn.Softmax, max-pooling, ...). glassbox's transformer has none of them:
  its GELU is ``nn.GELU`` (not in Captum's list), LayerNorm is not handled,
  and softmax attention is a functional call inside the attention kernel, so
  its gradient passes through unchanged. On these models DeepLift therefore
  reduces to ``gradient(x) * (x - baseline)``, and its completeness (summing to
  ``F(x) - F(baseline)``) does not hold; the completeness error shows by how much.
- ``kernel_shap``: Captum's KernelShap with ``n_samples`` coalitions per row,
  absent features set to the baseline (tables only: every feature is one player).

>>> import torch
>>> torch.manual_seed(0) and None
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 2)).double()
>>> x, base = torch.randn(4, 3, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64)
>>> attr, info = integrated_gradients(model, x, base, torch.tensor([0, 1, 0, 1]), tol=1e-6)
>>> info["steps"], info["converged"], tuple(attr.shape)
(32, True, (4, 3))
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

START_STEPS = 32
ROWS_PER_CHUNK = 4096  # model rows (examples x steps) per forward/backward inside IG


def _internal_batch(x: torch.Tensor, steps: int) -> int:
    # Captum's internal_batch_size counts interpolated rows; keep chunks of whole examples.
    return max(steps, (ROWS_PER_CHUNK // steps) * steps)


def ig_once(
    model: nn.Module, x: torch.Tensor, baselines: torch.Tensor, targets: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients at a fixed number of Gauss-Legendre steps: (attributions, deltas (B,))."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    attr, delta = ig.attribute(
        x,
        baselines=baselines,
        target=targets,
        n_steps=steps,
        method="gausslegendre",
        internal_batch_size=_internal_batch(x, steps),
        return_convergence_delta=True,
    )
    return attr.detach(), delta.detach().abs()


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    *,
    tol: float = 0.05,
    max_steps: int = 1024,
    steps: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """IG of the target-class logit, doubling the steps from 32 until ``max |delta| < tol``.

    ``steps`` fixes the step count instead (no doubling), as the sensitivity
    metric does when it recomputes attributions for perturbed inputs.
    """
    n = START_STEPS if steps is None else int(steps)
    history = []
    while True:
        attr, delta = ig_once(model, x, baselines, targets, n)
        worst = float(delta.max())
        history.append({"steps": n, "max_delta": worst})
        if steps is not None or worst < tol or n * 2 > max_steps:
            break
        n *= 2
    converged = worst < tol
    info: dict[str, Any] = {
        "steps": n,
        "max_delta": worst,
        "median_delta": float(delta.median()),
        "tolerance": float(tol),
        "converged": converged,
        "history": history,
    }
    if not converged and steps is None:
        info["message"] = (
            f"the largest completeness gap {worst:.3g} is still above the tolerance {tol:g} at "
            f"{n} steps (max_steps={max_steps}); raise max_steps or the tolerance"
        )
    return attr, info


def deeplift(
    model: nn.Module, x: torch.Tensor, baselines: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Captum DeepLift of the target-class logit; see the module docstring for what it means here."""
    from captum.attr import DeepLift

    with warnings.catch_warnings():
        # Captum warns that it sets hooks and that it cannot check every module; both are known here.
        warnings.simplefilter("ignore")
        attr = DeepLift(model).attribute(x, baselines=baselines, target=targets)
    handled = sorted({type(m).__name__ for m in model.modules() if _deeplift_handles(m)})
    note = (
        "rescale rule applied at " + ", ".join(handled)
        if handled
        else "no module Captum's DeepLift rewrites (GELU, LayerNorm and functional softmax attention are "
        "not among them), so this equals gradient x (input - baseline)"
    )
    return attr.detach(), {"note": note}


def _deeplift_handles(module: nn.Module) -> bool:
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    return type(module) in SUPPORTED_NON_LINEAR


def kernel_shap(
    model: nn.Module,
    x: torch.Tensor,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    *,
    n_samples: int = 200,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Captum KernelShap of the target-class logit, one row at a time, ``n_samples`` coalitions each."""
    from captum.attr import KernelShap

    if x.ndim != 2:
        raise ValueError("kernel_shap is for tables: every feature is one player")
    ks = KernelShap(model)
    out = []
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        for i in range(len(x)):
            a = ks.attribute(
                x[i : i + 1],
                baselines=baselines[i : i + 1],
                target=int(targets[i]),
                n_samples=n_samples,
                perturbations_per_eval=n_samples,
            )
            out.append(a.detach())
    return torch.cat(out), {"n_samples": int(n_samples)}
