"""In-run Data Shapley held to exact references: per-example gradients from torch.func, a full Hessian,
and Monte Carlo Shapley values of the step's true utility."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.func import functional_call, grad, vmap

from glassbox.config import ModelConfig, TrainConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.nn import build_model
from glassbox.nn.attention import reference_kernels
from glassbox.train import Callback, Trainer
from glassbox.valuation import InRunValuation

# -- data and models ----------------------------------------------------------------------


def _tabular(n: int = 24, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    return Dataset("tab", "tabular", "classification", X, y, feature_names=list("abcd"), classes=["n", "y"])


def _image(n: int = 20, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return Dataset("img", "image", "classification", X, y, classes=["a", "b", "c"])


def _text(n: int = 12, T: int = 9, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, 256, (n, T + 1), generator=g)
    return Dataset("txt", "text", "lm", X, torch.zeros(n, dtype=torch.long))


class ConvSeq(nn.Module):
    """A causal-LM-shaped model built from the layers the Transformer does not use: Conv1d, RMSNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 6, padding_idx=0)
        self.conv = nn.Conv1d(6, 5, 3, padding=1)
        self.norm = nn.RMSNorm(5, eps=1e-6)
        self.head = nn.Linear(5, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.embed(x).transpose(1, 2)).transpose(1, 2)  # (B, T, 5)
        return self.head(torch.tanh(self.norm(h)))  # (B, T, 256)


def _model(case: str) -> tuple[nn.Module, Dataset, Dataset]:
    cfg = dict(dim=8, depth=1, heads=2, dropout=0.0, mlp_ratio=1.0)
    if case == "tabular":
        tr, va = _tabular(), _tabular(10, seed=1)
        model = build_model(ModelConfig(**cfg), tr)
    elif case == "tabular-penalty":  # the table defaults' linear path and deep_penalty
        tr, va = _tabular(), _tabular(10, seed=1)
        model = build_model(ModelConfig(**cfg, linear_path=True, deep_penalty=0.5), tr)
    elif case == "image":
        tr, va = _image(), _image(8, seed=1)
        model = build_model(ModelConfig(**cfg, patch=2, conv_stem=True), tr)
    elif case == "image-merge":  # token merging (ToMe) between attention and MLP
        tr, va = _image(), _image(8, seed=1)
        model = build_model(ModelConfig(**cfg, patch=1, conv_stem=True, merge_r=3), tr)
    elif case.startswith("text-"):
        tr, va = _text(), _text(6, seed=1)
        kind = case.split("-")[1]
        model = build_model(ModelConfig(**cfg, attention=kind, chunk_size=4, window=3), tr)
    else:
        tr, va = _text(), _text(6, seed=1)
        tr.kind = va.kind = "sequence"  # the Trainer's LM path, on a model of our own
        model = ConvSeq()
    return model.double(), tr, va


# -- the reference: per-example gradients from torch.func -------------------------------------


def per_example_grads(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, scale: float) -> dict:
    model = trainer.model
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    task = trainer.task_

    def loss(ps: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (ps, buffers), (xi.unsqueeze(0),))
        return trainer.example_losses(logits, yi.unsqueeze(0), task).sum() * scale

    with reference_kernels():
        if getattr(model, "merge_r", 0) == 0:
            return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
        # Token merging scatters in place, which vmap cannot batch: one example at a time.
        rows = [grad(loss)(params, x[i], y[i]) for i in range(len(x))]
        return {k: torch.stack([r[k] for r in rows]) for k in params}


def val_grad(trainer: Trainer, val: Dataset) -> dict:
    model = trainer.model
    params = dict(model.named_parameters())
    x, y = trainer.inputs_targets(val.X, val.y, trainer.task_)
    with reference_kernels():
        loss = trainer.loss_fn(model(x), y, trainer.task_, reduction="none").mean()
    gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), gs, strict=True)}


class StepRecorder(Callback):
    """Before the valuation's step hook: the reference values of this step, and afterwards the measured."""

    def __init__(self, valuation: InRunValuation, val: Dataset) -> None:
        self.valuation, self.val = valuation, val
        self.expected: list[np.ndarray] = []
        self.measured: list[np.ndarray] = []
        self.grad_errors: list[float] = []

    def on_after_backward(self, trainer: Trainer, info) -> None:
        c = trainer.config
        x, y = trainer.inputs_targets(
            trainer.train_data_.X[info.indices], trainer.train_data_.y[info.indices], trainer.task_
        )
        scale = trainer.loss_scale(trainer.train_data_.y[info.indices], trainer.task_)
        pe = per_example_grads(trainer, x, y, scale)
        G = {k: g.sum(0) for k, g in pe.items()}
        named = dict(trainer.model.named_parameters())
        self.grad_errors.append(max(float((named[k].grad - G[k]).abs().max().detach()) for k in G))
        norm = math.sqrt(sum(float((g * g).sum()) for g in G.values()))
        clip = 1.0 if c.grad_clip is None else min(1.0, c.grad_clip / (norm + 1e-6))
        coef = self._coefficients(trainer, G, clip)
        gv = val_grad(trainer, self.val)
        ref = sum((pe[k] * (clip * coef[k] * gv[k])).flatten(1).sum(1) for k in pe)
        self.expected.append(ref.numpy())
        self._before = self.valuation.values_.copy()
        self._positions = info.indices.numpy()

    def _coefficients(self, trainer: Trainer, G: dict, clip: float) -> dict:
        opt, out = trainer.optimizer_, {}
        group = opt.param_groups[0]
        for k, p in trainer.model.named_parameters():
            if k not in G:
                continue
            if isinstance(opt, torch.optim.SGD):
                out[k] = group["lr"]
                continue
            st = opt.state.get(p, {})
            b1, b2 = group["betas"]
            t = int(st["step"]) + 1 if st else 1
            v = (1 - b2) * (clip * G[k]) ** 2 + (b2 * st["exp_avg_sq"] if st else 0)
            out[k] = group["lr"] * (1 - b1) / (1 - b1**t) / ((v / (1 - b2**t)).sqrt() + group["eps"])
        return out

    def on_step_end(self, trainer: Trainer, info) -> None:
        self.measured.append((self.valuation.values_ - self._before)[self._positions])


def _fit(case: str, train_cfg: dict, steps: int = 1, **valuation):
    model, tr, va = _model(case)
    inrun = InRunValuation(val_batch=len(va), **valuation)
    rec = StepRecorder(inrun, va)
    # augment off: the per-example reference gradients are of the stored rows, not of random views.
    cfg = TrainConfig(
        epochs=1,
        warmup=0.0,
        schedule="constant",
        patience=None,
        max_steps_per_epoch=steps,
        augment="none",
        **train_cfg,
    )
    Trainer(model, cfg, callbacks=[rec, inrun], seed=0).fit(tr, va)
    return rec, inrun


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


SGD = dict(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, grad_clip=None, batch_size=8)
KINDS = ["softmax", "linear", "sliding", "gla", "deltanet"]
CASES = ["tabular", "tabular-penalty", "image", "image-merge", *[f"text-{k}" for k in KINDS], "convseq"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ghost", ["never", "always"])
def test_first_order_sgd_equals_per_example_gradients(case: str, ghost: str) -> None:
    rec, inrun = _fit(case, SGD, ghost=ghost)
    assert rec.grad_errors[0] < 1e-10  # the rebuilt training gradient is autograd's
    assert _rel(rec.measured[0], rec.expected[0]) < 1e-5
    if ghost == "always" and case != "convseq":
        assert "ghost" in inrun.layers_.values()


@pytest.mark.parametrize("case", ["tabular", "tabular-penalty", "image", "text-gla"])
def test_adam_values_with_clipping_class_weights_and_accumulation(case: str) -> None:
    cfg = dict(optimizer="adamw", lr=0.01, weight_decay=0.01, grad_clip=0.05, batch_size=8, accumulate=3)
    if case != "text-gla":
        cfg["class_weight"] = "balanced"
    rec, _ = _fit(case, cfg, steps=3)
    assert max(rec.grad_errors) < 1e-10
    for measured, expected in zip(rec.measured, rec.expected, strict=True):
        assert _rel(measured, expected) < 1e-5


def test_sgd_momentum_scales_the_fresh_gradient_after_the_first_step() -> None:
    cfg = dict(SGD, momentum=0.9)
    rec, _ = _fit("tabular", cfg, steps=2)
    # step 1: the buffer starts as the gradient itself; step 2: (1 - dampening) = 1 of it again.
    for measured, expected in zip(rec.measured, rec.expected, strict=True):
        assert _rel(measured, expected) < 1e-5


def test_step_coefficients_reproduce_adams_actual_update() -> None:
    """Sum of the per-example updates plus the non-data part (momentum, decay) is Adam's real step."""
    from glassbox.valuation import step_coefficients

    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        (w**3).sum().backward()
        st = copy.deepcopy(opt.state.get(w, {}))
        coef = step_coefficients(opt, {w: w.grad})[w]
        before = w.detach().clone()
        opt.step()
        b1 = opt.param_groups[0]["betas"][0]
        t = int(st["step"]) + 1 if st else 1
        carry = b1 * st["exp_avg"] if st else 0
        denom = coef / ((1 - b1) * 0.1 / (1 - b1**t))  # 1 / (sqrt(v_hat) + eps)
        predicted = before * (1 - 0.1 * 0.1) - coef * w.grad - 0.1 / (1 - b1**t) * carry * denom
        assert torch.allclose(w.detach(), predicted, rtol=1e-12, atol=1e-14)


# -- second order: against the full Hessian ---------------------------------------------------


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))


def _tiny_step(order: int, optimizer: str = "sgd", lr: float = 0.5):
    torch.manual_seed(0)
    model = Tiny().double()
    tr, va = _tabular(8, seed=2), _tabular(6, seed=3)
    tr.X, va.X = tr.X[:, :3], va.X[:, :3]
    inrun = InRunValuation(order=order, val_batch=len(va))
    cfg = TrainConfig(
        epochs=1,
        batch_size=8,
        optimizer=optimizer,
        lr=lr,
        momentum=0.0,
        weight_decay=0.0,
        warmup=0.0,
        schedule="constant",
        grad_clip=None,
        patience=None,
    )
    start = copy.deepcopy(model)
    Trainer(model, cfg, callbacks=[inrun], seed=0).fit(tr, va)
    return start, tr, va, inrun


def _flat_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor):
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def f(theta: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        ps, i = {}, 0
        for k, s in zip(names, shapes, strict=True):
            n = math.prod(s)
            ps[k] = theta[i : i + n].view(s)
            i += n
        return nn.functional.cross_entropy(functional_call(model, ps, (X,)), y, reduction=reduction)

    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    return f, theta


def _per_example_flat(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = []
    for i in range(len(X)):
        f, theta = _flat_loss(model, X[i : i + 1], y[i : i + 1])
        rows.append(torch.func.grad(f)(theta))
    return torch.stack(rows)  # (B, P)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_second_order_term_equals_its_direct_computation(optimizer: str) -> None:
    start, tr, va, inrun2 = _tiny_step(2, optimizer)
    _, _, _, inrun1 = _tiny_step(1, optimizer)
    f_val, theta = _flat_loss(start, va.X, va.y)
    H = torch.autograd.functional.hessian(f_val, theta)  # (P, P), the exact validation Hessian
    g = _per_example_flat(start, tr.X, tr.y) / len(tr)  # (B, P): each example's term of the mean loss
    lr = 0.5
    if optimizer == "sgd":
        P = torch.ones_like(theta)
    else:  # first Adam step: v = (1 - b2) g^2, bias-corrected to g^2
        G = g.sum(0)
        P = 1.0 / (G.abs() + 1e-8)
    U = lr * P * g  # (B, P) per-example updates
    direct = -0.5 * U @ (H @ U.sum(0))  # the Shapley value of the quadratic term
    second = inrun2.values_ - inrun1.values_
    assert _rel(second, direct.numpy()) < 1e-5


def test_monte_carlo_shapley_of_one_step_agrees() -> None:
    """Spearman >= 0.99 between one step's in-run values and permutation-sampled Shapley values
    of that step's true utility, the drop in validation loss caused by a subset's updates."""
    lr = 0.1  # a step small enough for the Taylor expansion; at 0.5 both orders misrank a pair
    start, tr, va, inrun2 = _tiny_step(2, lr=lr)
    _, _, _, inrun1 = _tiny_step(1, lr=lr)
    f_val, theta = _flat_loss(start, va.X, va.y)
    U = lr * _per_example_flat(start, tr.X, tr.y) / len(tr)  # (B, P)
    base = float(f_val(theta))
    rng = np.random.default_rng(0)
    B, perms = len(tr), 1000
    phi = np.zeros(B)
    order = np.stack([rng.permutation(B) for _ in range(perms)])  # (perms, B)
    # The weights after each prefix of each permutation, all evaluated in one vmap.
    prefix = theta - torch.cumsum(U[torch.from_numpy(order)], dim=1)  # (perms, B, P)
    with torch.no_grad():
        util = base - vmap(f_val)(prefix.reshape(-1, len(theta))).reshape(perms, B).numpy()
    gain = np.diff(np.concatenate([np.zeros((perms, 1)), util], axis=1), axis=1)  # marginal contributions
    np.add.at(phi, order.ravel(), gain.ravel())
    phi /= perms
    assert spearmanr(inrun1.values_, phi).statistic >= 0.99
    assert spearmanr(inrun2.values_, phi).statistic >= 0.99
    # and the Hessian term brings the values themselves closer to the true Shapley values
    assert _rel(inrun2.values_, phi) < 0.5 * _rel(inrun1.values_, phi)


# -- refusal ----------------------------------------------------------------------------------


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.mix = nn.Bilinear(2, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.mix(h, h)


def test_unsupported_layer_is_refused_at_attach_time_by_name() -> None:
    tr, va = _tabular(), _tabular(6, seed=1)
    inrun = InRunValuation()
    trainer = Trainer(Odd().double(), TrainConfig(epochs=1, batch_size=8), callbacks=[inrun])
    with pytest.raises(UserError, match=r"layer 'mix' \(Bilinear\)"):
        trainer.fit(tr, va)
    assert not hasattr(inrun, "values_")  # refused before any step


def test_grouped_convolution_is_refused() -> None:
    model = nn.Sequential(nn.Conv1d(4, 4, 3, groups=2))
    from glassbox.valuation.inrun import attach_layers

    with pytest.raises(UserError, match=r"layer '0' \(Conv1d\): groups=2"):
        attach_layers(model)


def test_no_validation_rows_is_a_user_error() -> None:
    tr = _tabular()
    model = build_model(ModelConfig(dim=8, depth=1, heads=2), tr).double()
    with pytest.raises(UserError, match="val_fraction"):
        Trainer(model, TrainConfig(epochs=1), callbacks=[InRunValuation()]).fit(tr, None)
