"""``explain``: attributions for a tabular or image classifier's predictions, and how good they are.

For each explained row the target is the model's own predicted class, and
every method attributes that class's **logit**. Each method's attributions
are scored by ``glassbox.explain.faithfulness`` (completeness, normalized
infidelity, max-sensitivity, deletion and insertion AUC), and so is a
control of seeded random attributions of the same shape; ``ratios`` say how
many times better than random each score is (> 1: better).

The result is a plain JSON-able dict (see ``explain``); nothing is written
to disk and nothing is printed.

>>> import torch
>>> from glassbox.config import ModelConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn import build_model
>>> _ = torch.manual_seed(0)
>>> data = Dataset("toy", "tabular", "classification", torch.randn(40, 4), torch.randint(0, 2, (40,)),
...                feature_names=list("abcd"), classes=["no", "yes"])
>>> model = build_model(ModelConfig(dim=8, depth=1, heads=2, attention="softmax"), data)
>>> out = explain(model, data, background=data, sample=5, methods=["integrated_gradients", "rollout"])
>>> sorted(out["methods"]), len(out["rows"]), out["methods"]["integrated_gradients"]["info"]["converged"]
(['integrated_gradients', 'rollout'], 5, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from glassbox.data.base import Dataset
from glassbox.errors import UserError, nearest
from glassbox.explain import attribution, faithfulness, rollout
from glassbox.nn.blocks import MultiHeadAttention

KINDS = ("tabular", "image")
DEFAULTS = {
    "tabular": ["integrated_gradients", "deeplift", "kernel_shap", "rollout", "grad_rollout"],
    "image": ["integrated_gradients", "deeplift", "rollout", "grad_rollout"],
}
CLAIMS_COMPLETENESS = {"integrated_gradients", "deeplift"}
# Methods whose attributions are contributions of each value's deviation from the
# baseline (attribution = (x - baseline) * something): their infidelity is measured
# with baseline-relative perturbations (Captum's multiply_by_inputs convention);
# the rollouts score tokens, not deviations, and keep plain additive noise.
BASELINE_RELATIVE = {"integrated_gradients", "deeplift", "kernel_shap"}
NOISE = 0.1  # infidelity: Gaussian noise std, as a fraction of each feature's background std
BASELINE_NOISE = 0.1  # baseline-relative infidelity: eps std, as a fraction of each value's x - baseline
RADIUS = 0.02  # max-sensitivity: uniform radius, as a fraction of each feature's background std
SENSITIVITY_ROWS = 8  # max-sensitivity reruns a method per perturbation: on the first rows only
SENSITIVITY_SAMPLES = 5
INFIDELITY_SAMPLES = 20
DIGITS = 6  # significant digits kept in the result


@dataclass
class Context:
    model: nn.Module
    kind: str
    base_row: torch.Tensor  # (1, ...) the baseline
    seed: int
    tol: float
    max_steps: int
    kernel_shap_samples: int

    def baselines(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_row.expand(len(x), *x.shape[1:]).contiguous()


Info = dict[str, Any]
MethodFn = Callable[[Context, torch.Tensor, torch.Tensor, "Info | None"], tuple[torch.Tensor, Info]]


def _ig(ctx: Context, x: torch.Tensor, t: torch.Tensor, fixed: Info | None) -> tuple[torch.Tensor, Info]:
    steps = None if fixed is None else fixed["steps"]
    return attribution.integrated_gradients(
        ctx.model, x, ctx.baselines(x), t, tol=ctx.tol, max_steps=ctx.max_steps, steps=steps
    )


def _deeplift(
    ctx: Context, x: torch.Tensor, t: torch.Tensor, fixed: Info | None
) -> tuple[torch.Tensor, Info]:
    return attribution.deeplift(ctx.model, x, ctx.baselines(x), t)


def _kernel_shap(
    ctx: Context, x: torch.Tensor, t: torch.Tensor, fixed: Info | None
) -> tuple[torch.Tensor, Info]:
    return attribution.kernel_shap(
        ctx.model, x, ctx.baselines(x), t, n_samples=ctx.kernel_shap_samples, seed=ctx.seed
    )


def _rollout(ctx: Context, x: torch.Tensor, t: torch.Tensor, fixed: Info | None) -> tuple[torch.Tensor, Info]:
    return rollout.rollout_attributions(ctx.model, x, t, gradient=False), {"read": "CLS row, CLS excluded"}


def _grad_rollout(
    ctx: Context, x: torch.Tensor, t: torch.Tensor, fixed: Info | None
) -> tuple[torch.Tensor, Info]:
    return rollout.rollout_attributions(ctx.model, x, t, gradient=True), {"read": "CLS row, CLS excluded"}


METHODS: dict[str, MethodFn] = {
    "integrated_gradients": _ig,
    "deeplift": _deeplift,
    "kernel_shap": _kernel_shap,
    "rollout": _rollout,
    "grad_rollout": _grad_rollout,
}


def _check_methods(methods: list[str] | None, kind: str) -> list[str]:
    names = list(DEFAULTS[kind]) if methods is None else list(methods)
    if not names:
        raise UserError(f"no explanation method chosen; pick from {', '.join(METHODS)}")
    for name in names:
        if name not in METHODS:
            close = nearest(name, METHODS)
            ranked = ([close] if close else []) + [m for m in METHODS if m != close]
            hint = f"did you mean '{close}'? " if close else ""
            raise UserError(f"unknown explanation method '{name}'; {hint}valid: {', '.join(ranked)}")
    return list(dict.fromkeys(names))


def _check_rows(rows: list[int] | None, n: int, sample: int, seed: int) -> list[int]:
    if rows is None:
        if sample < 1:
            raise UserError(f"sample={sample}: explain at least one row (sample >= 1)")
        if sample >= n:
            return list(range(n))
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(n, size=sample, replace=False))
    out = []
    for r in rows:
        if isinstance(r, bool) or not isinstance(r, int | np.integer) or not 0 <= int(r) < n:
            raise UserError(
                f"row {r!r} is not a position in the data to explain, which has {n} rows; "
                f"give positions from 0 to {n - 1} (positions in the split, not source row ids)"
            )
        out.append(int(r))
    if not out:
        raise UserError("rows is empty; give at least one position, or rows=None to sample")
    return out


def _round(t: torch.Tensor | np.ndarray) -> Any:
    a = np.asarray(torch.as_tensor(t).detach().double().cpu().numpy())
    return np.vectorize(lambda v: float(f"{v:.{DIGITS}g}"), otypes=[float])(a).tolist() if a.size else []


def _ratio(control: float | None, method: float | None) -> float | None:
    if control is None or method is None or not np.isfinite(control) or not np.isfinite(method):
        return None
    if method <= 1e-12:
        return None
    return float(control / method)


def _quality(
    ctx: Context,
    name: str,
    x: torch.Tensor,
    targets: torch.Tensor,
    attr: torch.Tensor,
    explain_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    radius: torch.Tensor,
) -> tuple[dict[str, Any], dict[str, Any]]:
    forward = ctx.model
    base = ctx.baselines(x)
    q: dict[str, Any] = {"completeness_max": None, "completeness_median": None}
    if name in CLAIMS_COMPLETENESS:
        err = faithfulness.completeness(forward, x, attr, base, targets)
        q["completeness_max"], q["completeness_median"] = float(err.max()), float(err.median())
    inf = faithfulness.infidelity(
        forward, x, attr, targets, noise, n_perturb=INFIDELITY_SAMPLES, seed=ctx.seed
    )
    q["infidelity"] = float(inf.mean())
    inf_b = faithfulness.infidelity(
        forward, x, attr, targets, BASELINE_NOISE, n_perturb=INFIDELITY_SAMPLES, seed=ctx.seed, baselines=base
    )
    q["infidelity_baseline"] = float(inf_b.mean())
    k = min(SENSITIVITY_ROWS, len(x))
    sens = faithfulness.max_sensitivity(
        explain_fn, x[:k], targets[:k], radius, n_perturb=SENSITIVITY_SAMPLES, seed=ctx.seed
    )
    q["max_sensitivity"] = float(sens.mean())
    di = faithfulness.deletion_insertion(forward, x, attr, base, targets)
    q["deletion_auc"], q["insertion_auc"] = float(di["deletion"].mean()), float(di["insertion"].mean())
    curves = {
        "fractions": _round(di["fractions"]),
        "deletion": _round(di["deletion_curve"].mean(0)),
        "insertion": _round(di["insertion_curve"].mean(0)),
    }
    return q, curves


def explain(
    model: nn.Module,
    data: Dataset,
    *,
    background: Dataset,
    rows: list[int] | None = None,
    sample: int = 50,
    methods: list[str] | None = None,
    seed: int = 0,
    completeness_tol: float = 0.05,
    max_steps: int = 1024,
    kernel_shap_samples: int = 200,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Explain the model's predictions on rows of ``data`` (the test split) and score the explanations.

    ``rows`` are positions in ``data``; without them, a seeded sample of
    ``sample`` rows (every row when there are fewer). ``background`` (the
    training split) gives the baseline of tables (its mean row, in raw
    feature space: the model standardizes inside) and the feature scales
    of the perturbations; images use a black (all-zero) baseline. The target
    of each row is the predicted class, and attributions are of that class's
    logit. ``methods`` default by kind (tabular: integrated_gradients,
    deeplift, kernel_shap, rollout, grad_rollout; image: the same without
    kernel_shap). Rollouts need softmax attention without token merging;
    otherwise they are listed in ``skipped`` with the reason.

    The model is evaluated in eval mode and given back in the mode, and with
    the ``record_maps`` settings, it had.

    Returns ``{"kind", "rows", "source_rows", "targets", "predicted_probability",
    "feature_names" (tables), "methods": {name: {"attributions", "quality",
    "random", "ratios", "curves", "info", "seconds"}}, "skipped": {name: reason},
    "global_importance": {name: [{"feature", "importance"}, ...]} (tables),
    "settings"}``.
    """
    kind = getattr(model, "kind", data.kind)
    if kind not in KINDS or data.kind not in KINDS:
        other = kind if kind not in KINDS else data.kind
        raise UserError(
            f"explanations cover tabular and image classifiers; this is a {other} model/dataset; "
            "explain a tabular or image model instead"
        )
    if data.kind != kind or background.kind != kind:
        raise UserError(f"the model reads {kind} data but was given {data.kind}/{background.kind} data")
    names = _check_methods(methods, kind)
    positions = _check_rows(rows, len(data), sample, seed)
    say = progress or (lambda _msg: None)

    dtype = next(model.parameters()).dtype
    x = data.X[positions].to(dtype)
    bg = background.X.to(torch.float64)
    if kind == "tabular":
        base_row = bg.mean(0, keepdim=True).to(dtype)
        std = bg.std(0, unbiased=False)
    else:
        base_row = torch.zeros(1, *x.shape[1:], dtype=dtype)
        std = bg.std(unbiased=False).reshape(1)
    std = torch.where(std > 1e-6, std, torch.ones_like(std)).to(dtype)

    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    saved_maps = [m.record_maps for m in layers]
    was_training = model.training
    model.eval()
    try:
        ctx = Context(model, kind, base_row, seed, completeness_tol, max_steps, kernel_shap_samples)
        with torch.no_grad():
            prob = torch.cat([model(x[i : i + 1024]) for i in range(0, len(x), 1024)]).softmax(-1)
        targets = prob.argmax(1)
        result: dict[str, Any] = {
            "kind": kind,
            "rows": positions,
            "source_rows": [int(i) for i in data.index[positions]],  # type: ignore[index]
            "targets": [int(t) for t in targets],
            "target_names": [
                str(data.classes[t]) if t < len(data.classes) else str(t) for t in targets.tolist()
            ],
            "predicted_probability": _round(prob.gather(1, targets[:, None])[:, 0]),
            "methods": {},
            "skipped": {},
        }
        if kind == "tabular":
            result["feature_names"] = [str(f) for f in data.feature_names] or [
                f"x{j}" for j in range(x.shape[1])
            ]
        why_not_rollout = rollout.unsupported(model)
        for name in names:
            if name in ("rollout", "grad_rollout") and why_not_rollout:
                result["skipped"][name] = why_not_rollout
                continue
            if name == "kernel_shap" and kind != "tabular":
                result["skipped"][name] = (
                    "kernel_shap is for tables (every feature one player); images have too many"
                )
                continue
            say(f"explain: {name}")
            start = time.perf_counter()
            attr, info = METHODS[name](ctx, x, targets, None)
            fn = METHODS[name]

            def again(
                xp: torch.Tensor, tp: torch.Tensor, fn: MethodFn = fn, info: Info = info
            ) -> torch.Tensor:
                return fn(ctx, xp, tp, info)[0]

            quality, curves = _quality(ctx, name, x, targets, attr, again, std * NOISE, std * RADIUS)
            control = faithfulness.random_like(attr, seed + 1)
            rand_quality, rand_curves = _quality(
                ctx,
                name,
                x,
                targets,
                control,
                faithfulness.random_explainer(seed + 2),
                std * NOISE,
                std * RADIUS,
            )
            if name not in CLAIMS_COMPLETENESS:
                rand_quality["completeness_max"] = rand_quality["completeness_median"] = None
            # No completeness ratio: random attributions claim no completeness, so
            # "times better than random" would only measure how far off random sums are.
            ratios = {
                "infidelity": _ratio(rand_quality["infidelity"], quality["infidelity"]),
                "infidelity_baseline": _ratio(
                    rand_quality["infidelity_baseline"], quality["infidelity_baseline"]
                ),
                "max_sensitivity": _ratio(rand_quality["max_sensitivity"], quality["max_sensitivity"]),
                "deletion_auc": _ratio(rand_quality["deletion_auc"], quality["deletion_auc"]),
                "insertion_auc": _ratio(quality["insertion_auc"], rand_quality["insertion_auc"]),
            }
            curves["random_deletion"], curves["random_insertion"] = (
                rand_curves["deletion"],
                rand_curves["insertion"],
            )
            result["methods"][name] = {
                "attributions": _round(attr),
                "quality": quality,
                "random": rand_quality,
                "ratios": ratios,
                "curves": curves,
                "info": info,
                # The infidelity that reads this method's attributions as they are meant.
                "infidelity_matched": "infidelity_baseline" if name in BASELINE_RELATIVE else "infidelity",
                "seconds": round(time.perf_counter() - start, 3),
            }
        if kind == "tabular":
            result["global_importance"] = {
                name: _importance(np.asarray(m["attributions"]), result["feature_names"])
                for name, m in result["methods"].items()
            }
        else:
            result["global_importance"] = {}
        result["settings"] = {
            "seed": seed,
            "completeness_tol": completeness_tol,
            "max_steps": max_steps,
            "kernel_shap_samples": kernel_shap_samples,
            "baseline": "background mean row" if kind == "tabular" else "zeros (black image)",
            "infidelity_noise": (
                f"Gaussian, std {NOISE} x background std, {INFIDELITY_SAMPLES} draws, normalized"
            ),
            "infidelity_baseline_noise": (
                f"x - eps * (x - baseline), eps ~ N(0, {BASELINE_NOISE}^2), "
                f"{INFIDELITY_SAMPLES} draws, normalized"
            ),
            "sensitivity": (
                f"uniform radius {RADIUS} x background std, {SENSITIVITY_SAMPLES} draws, "
                f"first {min(SENSITIVITY_ROWS, len(x))} rows"
            ),
            "random_control": "seeded Gaussian attributions, each row scaled to the method's L2 norm",
        }
        return result
    finally:
        model.train(was_training)
        for m, flag in zip(layers, saved_maps, strict=True):
            m.record_maps = flag


def _importance(attributions: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    mean_abs = np.abs(attributions).mean(0)
    order = np.argsort(-mean_abs, kind="stable")
    return [{"feature": names[j], "importance": float(f"{mean_abs[j]:.{DIGITS}g}")} for j in order]


def summary(result: dict[str, Any], top: int = 5) -> dict[str, Any]:
    """A compact digest for a model card: per method the quality numbers and ratios; top features (tables)."""
    out: dict[str, Any] = {
        "kind": result["kind"],
        "rows": len(result["rows"]),
        "methods": {
            name: {
                "quality": dict(m["quality"]),
                "random": dict(m["random"]),
                "ratios": dict(m["ratios"]),
                "infidelity_matched": m.get("infidelity_matched", "infidelity"),
            }
            for name, m in result["methods"].items()
        },
        "skipped": dict(result.get("skipped", {})),
    }
    importance = result.get("global_importance") or {}
    if importance:
        first = next(iter(importance))
        out["top_features"] = {"method": first, "features": importance[first][:top]}
    return out
