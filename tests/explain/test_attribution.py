import pytest
import torch

from glassbox.config import ModelConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.explain import explain
from glassbox.explain.attribution import ig_once, integrated_gradients
from glassbox.nn import build_model

torch.set_num_threads(1)


def _tiny(seed=0, n=30, f=4, dtype=torch.float64):
    torch.manual_seed(seed)
    data = Dataset(
        "toy",
        "tabular",
        "classification",
        torch.randn(n, f),
        torch.randint(0, 2, (n,)),
        feature_names=[f"f{j}" for j in range(f)],
        classes=["no", "yes"],
    )
    model = build_model(ModelConfig(dim=8, depth=2, heads=2, attention="softmax", dropout=0.0), data)
    return model.to(dtype).eval(), data


def test_ig_on_a_linear_model_is_exact():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).double()
    x, b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    attr, info = integrated_gradients(model, x, b, t, tol=1e-4)  # Captum keeps step weights in float32
    expected = (x - b) * model.weight[t].detach()
    assert torch.allclose(attr, expected, atol=1e-6)
    assert info["steps"] == 32 and info["converged"]


def test_ig_completeness_and_doubling_stops_at_first_sufficient_step():
    model, data = _tiny()
    x = data.X[:10].double()
    b = data.X.double().mean(0, keepdim=True).expand_as(x)
    t = model(x).argmax(1)
    tol = 1e-7
    attr, info = integrated_gradients(model, x, b, t, tol=tol, max_steps=1024)
    hist = info["history"]
    assert [h["steps"] for h in hist] == [32 * 2**i for i in range(len(hist))]
    assert all(h["max_delta"] >= tol for h in hist[:-1])
    if info["converged"]:
        assert hist[-1]["max_delta"] < tol
    with torch.no_grad():
        gap = model(x).gather(1, t[:, None])[:, 0] - model(b).gather(1, t[:, None])[:, 0]
    assert float((attr.sum(1) - gap).abs().max()) <= info["max_delta"] + 1e-12
    # An independent run at the previous step count really was not enough.
    if len(hist) > 1:
        _, delta = ig_once(model, x, b, t, info["steps"] // 2)
        assert float(delta.max()) >= tol


def test_ig_reports_non_convergence():
    model, data = _tiny()
    x = data.X[:4].double()
    b = torch.zeros_like(x)
    _, info = integrated_gradients(model, x, b, model(x).argmax(1), tol=0.0, max_steps=64)
    assert not info["converged"] and info["steps"] == 64 and "max_steps" in info["message"]


def test_bad_inputs_name_the_problem():
    model, data = _tiny(dtype=torch.float32)
    with pytest.raises(UserError, match="integrated_gradients"):
        explain(model, data, background=data, methods=["integrated_gradient"])
    with pytest.raises(UserError, match=r"0 to 29"):
        explain(model, data, background=data, rows=[30])
    text = Dataset("t", "text", "lm", torch.randint(0, 256, (8, 9)), torch.zeros(8, dtype=torch.long))
    lm = build_model(ModelConfig(dim=8, depth=1, heads=2, max_len=16), text)
    with pytest.raises(UserError, match="tabular and image"):
        explain(lm, text, background=text)


def test_model_mode_and_record_maps_are_restored():
    model, data = _tiny(dtype=torch.float32)
    model.train()
    out = explain(model, data, background=data, rows=[0, 3], methods=["deeplift", "grad_rollout"])
    assert model.training
    assert not any(getattr(m, "record_maps", False) for m in model.modules())
    assert out["rows"] == [0, 3] and out["source_rows"] == [0, 3]
    assert len(out["methods"]["deeplift"]["attributions"]) == 2


def test_non_softmax_attention_skips_rollouts_with_a_reason():
    torch.manual_seed(0)
    data = Dataset(
        "toy",
        "tabular",
        "classification",
        torch.randn(20, 3),
        torch.randint(0, 2, (20,)),
        feature_names=list("abc"),
        classes=["no", "yes"],
    )
    model = build_model(ModelConfig(dim=8, depth=1, heads=2, attention="linear"), data)
    out = explain(model, data, background=data, sample=3, methods=["deeplift", "rollout", "grad_rollout"])
    assert set(out["skipped"]) == {"rollout", "grad_rollout"} and "softmax" in out["skipped"]["rollout"]
    assert "deeplift" in out["methods"]
