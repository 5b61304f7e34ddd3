import torch

from glassbox.config import ModelConfig
from glassbox.data.base import Dataset
from glassbox.explain.rollout import grad_rollout, maps_and_grads, rollout, rollout_attributions
from glassbox.nn import build_model

torch.set_num_threads(1)


def _model():
    torch.manual_seed(0)
    data = Dataset(
        "toy",
        "tabular",
        "classification",
        torch.randn(20, 5),
        torch.randint(0, 3, (20,)),
        feature_names=list("abcde"),
        classes=["a", "b", "c"],
    )
    model = build_model(ModelConfig(dim=8, depth=2, heads=2, attention="softmax", dropout=0.0), data)
    return model.double().eval(), data.X[:4].double()


def test_rollout_matches_a_naive_reference_and_rows_sum_to_one():
    model, x = _model()
    t = model(x).argmax(1)
    maps, _ = maps_and_grads(model, x, t, grads=False)
    r = rollout(maps)
    T = x.shape[1] + 1
    for b in range(len(x)):
        ref = torch.eye(T, dtype=torch.float64)
        for a in maps:
            m = sum(a[b, h] for h in range(a.shape[1])) / a.shape[1] + torch.eye(T, dtype=torch.float64)
            m = m / m.sum(1, keepdim=True)
            ref = m @ ref
        assert torch.allclose(r[b], ref, atol=1e-12)
    assert torch.allclose(r.sum(-1), torch.ones(len(x), T, dtype=torch.float64))
    attr = rollout_attributions(model, x, t, gradient=False)
    assert torch.allclose(attr, r[:, 0, 1:])


def test_grad_rollout_matches_a_naive_reference():
    model, x = _model()
    t = model(x).argmax(1)
    layers = [blk.attn for blk in model.blocks]
    for m in layers:
        m.record_maps = True
    try:
        y = model(x).gather(1, t[:, None]).sum()
        maps = [m.maps for m in layers]
        for a in maps:
            a.retain_grad()
        y.backward()
        grads = [a.grad for a in maps]
    finally:
        for m in layers:
            m.record_maps = False
    T = x.shape[1] + 1
    attr = rollout_attributions(model, x, t, gradient=True)
    for b in range(len(x)):
        R = torch.eye(T, dtype=torch.float64)
        for a, g in zip(maps, grads, strict=True):
            cam = (g[b] * a[b]).detach()
            cam = torch.where(cam > 0, cam, torch.zeros_like(cam)).mean(0)
            R = R + cam @ R
        assert torch.allclose(attr[b], R[0, 1:], atol=1e-12)
    m2, g2 = maps_and_grads(model, x, t, grads=True)
    assert torch.allclose(grad_rollout(m2, g2)[:, 0, 1:], attr)


def test_image_patches_spread_over_pixels():
    torch.manual_seed(0)
    data = Dataset(
        "img",
        "image",
        "classification",
        torch.rand(10, 1, 4, 4),
        torch.randint(0, 2, (10,)),
        classes=["a", "b"],
    )
    model = build_model(ModelConfig(dim=8, depth=1, heads=2, patch=2, attention="softmax"), data).eval()
    x = data.X[:3]
    t = model(x).argmax(1)
    attr = rollout_attributions(model, x, t, gradient=False)
    maps, _ = maps_and_grads(model, x, t, grads=False)
    cls = rollout(maps)[:, 0, 1:]  # (B, 4 patches)
    assert attr.shape == x.shape
    assert torch.allclose(attr[:, 0, :2, :2].sum((1, 2)), cls[:, 0], atol=1e-6)  # top-left patch
    assert torch.allclose(attr[:, 0, 2:, 2:], cls[:, 3, None, None].expand(-1, 2, 2) / 4, atol=1e-7)
