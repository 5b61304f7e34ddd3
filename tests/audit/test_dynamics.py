"""The learning-dynamics tracker: its prediction is exactly -eta A K G for SGD, and first-order accurate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glassbox.audit.dynamics import DynamicsTracker, predicted_change
from glassbox.config import ModelConfig, TrainConfig
from glassbox.data.base import Dataset
from glassbox.nn.models import build_model
from glassbox.train import Trainer


def test_prediction_is_minus_eta_A_K_G_built_from_full_jacobians() -> None:
    from torch.func import functional_call, jacrev

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    xo, xu = torch.randn(6, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    yu = torch.randint(0, 4, (8,))
    eta = 0.05
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = list(theta)

    def logits(params: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (x,))

    def flat_jac(x: torch.Tensor) -> torch.Tensor:  # (N * K, n_params)
        jac = jacrev(logits)(theta, x)
        return torch.cat([jac[n].reshape(x.shape[0] * 4, -1) for n in names], 1)

    K = flat_jac(xo) @ flat_jac(xu).T  # (P K, B K): the empirical NTK
    pi_o = logits(theta, xo).softmax(-1)
    eye = torch.eye(4, dtype=torch.float64)
    A = torch.block_diag(*[eye - pi_o[i][None, :].expand(4, 4) for i in range(6)])  # d log softmax / d z
    pi_u = logits(theta, xu).softmax(-1)
    G = ((pi_u - nn.functional.one_hot(yu, 4)) / 8).reshape(-1)  # d(mean CE)/d logits
    expected = -eta * (A @ K @ G).reshape(6, 4)

    loss = nn.functional.cross_entropy(model(xu), yu)
    grads = torch.autograd.grad(loss, [p for _, p in model.named_parameters()])
    delta = {n: -eta * g for n, g in zip(names, grads, strict=True)}  # one SGD step
    got = predicted_change(model, theta, delta, xo)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def _data(n: int = 96) -> Dataset:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 4, generator=g)
    y = (X[:, 0] + X[:, 1] > 0).long()
    return Dataset("toy", "tabular", "classification", X, y, feature_names=list("abcd"), classes=["n", "y"])


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 1e-3), ("adamw", 1e-4)])
def test_small_steps_are_predicted_with_cosine_above_099(optimizer: str, lr: float) -> None:
    data = _data()
    model = build_model(ModelConfig(dim=16, depth=1, heads=2, dropout=0.0), data)
    tracker = DynamicsTracker(data.X[:16])
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer=optimizer, lr=lr, momentum=0.0, patience=None)
    Trainer(model, cfg, callbacks=[tracker]).fit(data, None)
    assert len(tracker.records_) == 12
    assert min(r["dyn_cosine"] for r in tracker.records_) >= 0.99
    r = tracker.records_[-1]
    assert 0.5 <= r["dyn_argmax_prob"] <= 1 and 0 <= r["dyn_entropy"] <= 0.7 and r["dyn_residual_norm"] > 0


def test_a_large_step_leaves_the_first_order_regime() -> None:
    data = _data()
    model = build_model(ModelConfig(dim=16, depth=1, heads=2, dropout=0.0), data)
    tracker = DynamicsTracker(data.X[:16])
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=5.0, momentum=0.0, grad_clip=None,
                      patience=None, warmup=0.0)  # fmt: skip
    Trainer(model, cfg, callbacks=[tracker]).fit(data, None)
    assert min(r["dyn_cosine"] for r in tracker.records_) < 0.99  # the check above can fail


def test_language_model_probe() -> None:
    text = Dataset("t", "text", "lm", torch.randint(0, 256, (32, 17)), torch.zeros(32, dtype=torch.long))
    model = build_model(ModelConfig(dim=16, depth=1, heads=2, dropout=0.0, max_len=32), text)
    tracker = DynamicsTracker(text.X[:4])
    cfg = TrainConfig(epochs=1, batch_size=8, optimizer="sgd", lr=1e-3, momentum=0.0, patience=None)
    Trainer(model, cfg, callbacks=[tracker]).fit(text, None)
    assert min(r["dyn_cosine"] for r in tracker.records_) >= 0.99


def test_recipe_dynamics_section_lands_in_metrics_and_report(tmp_path) -> None:
    from glassbox.config import load_recipe
    from glassbox.ledger import verify_run
    from glassbox.pipeline import run_recipe

    recipe = load_recipe(None, ["data.source=iris", "preset=fast", "train.epochs=2", "train.optimizer=sgd",
                                "train.lr=0.001", "train.momentum=0", "dynamics.probes=8"])  # fmt: skip
    run = run_recipe(recipe, tmp_path, progress=False)
    records = [r for r in run.metrics() if "dyn_cosine" in r]
    assert len(records) >= 2
    assert min(r["dyn_cosine"] for r in records) >= 0.99
    html = (run.path / "report.html").read_text()
    assert "Learning dynamics" in html and "Predicted vs actual change" in html
    assert verify_run(run.path).ok


def test_dpo_squeezes_mass_onto_the_argmax(tmp_path) -> None:
    from glassbox.config import load_recipe
    from glassbox.ledger import verify_run
    from glassbox.pipeline import run_recipe

    recipe = load_recipe(None, ["data.source=python-corpus", "data.max_bytes=20000", "data.seq_len=64",
                                "model.dim=32", "model.depth=1", "model.heads=2", "model.max_len=128",
                                "train.epochs=1", "dynamics.dpo_steps=15", "dynamics.every=10"])  # fmt: skip
    run = run_recipe(recipe, tmp_path, progress=False)
    import json

    recs = json.loads((run.path / "dpo_squeeze.json").read_text())
    first, last = recs[0], recs[-1]
    assert last["logp_rejected"] < first["logp_rejected"] - 0.2  # DPO pushes the rejected responses down
    assert last["argmax_prob_rejected"] > first["argmax_prob_rejected"]  # and the mass goes to the argmax
    html = (run.path / "report.html").read_text()
    assert "squeezing effect" in html
    assert verify_run(run.path).ok
