import numpy as np
import torch

from glassbox.config import ModelConfig
from glassbox.data.base import Dataset
from glassbox.explain import explain, summary
from glassbox.nn import build_model
from glassbox.report.explain import explain_section

torch.set_num_threads(1)


def test_tabular_section_renders():
    torch.manual_seed(0)
    data = Dataset(
        "toy",
        "tabular",
        "classification",
        torch.randn(30, 4),
        torch.randint(0, 2, (30,)),
        feature_names=["a<b", "b", "c", "d"],
        classes=["no", "yes"],
    )
    model = build_model(ModelConfig(dim=8, depth=1, heads=2, attention="softmax"), data)
    out = explain(model, data, background=data, sample=6, kernel_shap_samples=30)
    html = explain_section(out)["html"]
    for name in (
        "Integrated Gradients",
        "DeepLift",
        "KernelSHAP",
        "Attention rollout",
        "Gradient-weighted rollout",
    ):
        assert name in html
    assert "data:image/png;base64," in html and "a&lt;b" in html and "a<b" not in html
    s = summary(out)
    assert len(s["top_features"]["features"]) == 4 and set(s["methods"]) == set(out["methods"])


def test_image_section_renders_heatmaps():
    torch.manual_seed(0)
    data = Dataset(
        "img",
        "image",
        "classification",
        torch.rand(12, 1, 4, 4),
        torch.randint(0, 2, (12,)),
        classes=["a", "b"],
    )
    model = build_model(
        ModelConfig(dim=8, depth=1, heads=2, patch=2, conv_stem=True, attention="softmax"), data
    )
    out = explain(model, data, background=data, sample=3)
    assert "kernel_shap" not in out["methods"]
    images = data.X[out["rows"]].numpy()
    html = explain_section(out, images=images)["html"]
    assert html.count("data:image/png;base64,") == 2 and 'id="explain-heatmaps"' in html
    assert "Attention rollout" in html
    assert np.asarray(out["methods"]["rollout"]["attributions"]).shape == (3, 1, 4, 4)
