"""Baselines against brute force: exact Shapley by enumeration, per-sample gradients by torch.func."""

from __future__ import annotations

import copy
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.func import functional_call, grad, vmap

from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.valuation.baselines import knn_shapley, leave_one_out, loo_logistic, tracin_cp


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny ops on a shared CPU: intra-op threads spin and made the Transformer
    # smoke test 15x slower on two busy cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- KNN-Shapley


def _knn_utility(subset: tuple[int, ...], dist: np.ndarray, match: np.ndarray, k: int) -> float:
    """Jia et al.'s utility for one validation point: matching labels among the nearest, over K."""
    if not subset:
        return 0.0
    nearest = sorted(subset, key=lambda j: dist[j])[: min(k, len(subset))]
    return float(match[nearest].sum()) / k


def _brute_force_shapley(tX, ty, vX, vy, k: int) -> np.ndarray:
    n = len(tX)
    values = np.zeros(n)
    for x, label in zip(vX, vy, strict=True):
        dist = np.linalg.norm(tX - x, axis=1)
        match = (ty == label).astype(float)
        for i in range(n):
            others = [j for j in range(n) if j != i]
            for size in range(n):
                weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                for subset in itertools.combinations(others, size):
                    gain = _knn_utility((*subset, i), dist, match, k) - _knn_utility(subset, dist, match, k)
                    values[i] += weight * gain
    return values / len(vX)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_knn_shapley_equals_enumerated_shapley(k):
    rng = np.random.default_rng(k)
    tX, vX = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    ty, vy = rng.integers(0, 3, size=7), rng.integers(0, 3, size=4)
    got = knn_shapley(tX, ty, vX, vy, k=k)
    assert got.dtype == np.float64 and got.shape == (7,)
    np.testing.assert_allclose(got, _brute_force_shapley(tX, ty, vX, vy, k), rtol=1e-12, atol=1e-12)


def test_knn_shapley_blocks_give_the_same_answer(monkeypatch):
    import glassbox.valuation.baselines as baselines

    rng = np.random.default_rng(0)
    tX, vX = rng.normal(size=(50, 4)), rng.normal(size=(23, 4))
    ty, vy = rng.integers(0, 2, size=50), rng.integers(0, 2, size=23)
    whole = knn_shapley(tX, ty, vX, vy, k=3)
    monkeypatch.setattr(baselines, "_BLOCK_ELEMENTS", 4 * 50 * 5)  # 5 validation rows a block
    np.testing.assert_allclose(knn_shapley(tX, ty, vX, vy, k=3), whole, rtol=0, atol=1e-15)


def test_knn_shapley_ranks_flipped_labels_lowest():
    rng = np.random.default_rng(0)

    def blobs(n):
        y = rng.integers(0, 2, size=n)
        return rng.normal(size=(n, 2)) + np.where(y[:, None] == 1, 2.0, -2.0) * np.array([1.0, 0.0]), y

    tX, ty = blobs(300)
    vX, vy = blobs(100)
    flipped = rng.permutation(300)[:30]
    noisy = ty.copy()
    noisy[flipped] = 1 - noisy[flipped]
    values = knn_shapley(tX, noisy, vX, vy, k=5)
    is_flipped = np.zeros(300, dtype=bool)
    is_flipped[flipped] = True
    assert roc_auc_score(is_flipped, -values) > 0.9


def test_knn_shapley_validates_inputs():
    X, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="k must be"):
        knn_shapley(X, y, X, y, k=0)
    with pytest.raises(ValueError, match="k must be"):
        knn_shapley(X, y, X, y, k=True)
    with pytest.raises(ValueError, match="train_X must be 2-D"):
        knn_shapley(np.zeros(4), y, X, y)
    with pytest.raises(ValueError, match="features"):
        knn_shapley(X, y, np.zeros((4, 3)), y)
    with pytest.raises(ValueError, match="val_y must be 1-D"):
        knn_shapley(X, y, X, np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        knn_shapley(np.full((4, 2), np.nan), y, X, y)


# --------------------------------------------------------------------------- TracIn-CP


def _toy(n: int, seed: int, dtype=torch.float64) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(
        "toy",
        "tabular",
        "classification",
        torch.randn(n, 4, generator=g, dtype=dtype),
        torch.randint(0, 3, (n,), generator=g),
        classes=["a", "b", "c"],
    )


def _manual_tracin(net, states, lrs, train, val, modules=None) -> np.ndarray:
    """sum_c lr_c G_train G_val^T 1, from torch.func per-sample gradients of these modules' parameters."""
    total = torch.zeros(len(train), dtype=torch.float64)
    for state, lr in zip(states, lrs, strict=True):
        counts = {n: v.detach() for n, v in state.items() if modules is None or n.split(".")[0] in modules}
        fixed = {n: v.detach() for n, v in state.items() if n not in counts}

        def loss(params, x, y, fixed=fixed):
            out = functional_call(net, {**fixed, **params}, (x[None],))
            return nn.functional.cross_entropy(out, y[None])

        per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
        gt, gv = per_sample(counts, train.X, train.y), per_sample(counts, val.X, val.y)
        flat_t = torch.cat([gt[n].reshape(len(train), -1) for n in counts], dim=1)
        flat_v = torch.cat([gv[n].reshape(len(val), -1) for n in counts], dim=1)
        total += lr * flat_t @ flat_v.sum(dim=0)
    return total.numpy()


# layers -> the modules whose parameters count; ["3"] is the hooked path on the
# last layer alone (the usual TracIn shortcut), ["1", "3"] the per-row loop on
# a LayerNorm and a Linear.
_LAYER_CASES = {"all": None, "linear": {"0", "3"}, ("3",): {"3"}, ("1", "3"): {"1", "3"}}


@pytest.mark.parametrize("layers", list(_LAYER_CASES))
def test_tracin_cp_equals_per_sample_gradients(layers):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)).double()
    first = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    second = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)  # the model's own weights, which the call must give back
    before = copy.deepcopy(net.state_dict())
    train, val = _toy(20, 1), _toy(7, 2)
    arg = list(layers) if isinstance(layers, tuple) else layers

    got = tracin_cp(net, [first, second], [0.3, 0.05], train, val, batch_size=3, layers=arg)

    expected = _manual_tracin(net, [first, second], [0.3, 0.05], train, val, _LAYER_CASES[layers])
    assert got.dtype == np.float64 and got.shape == (20,)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    for p in net.parameters():
        assert p.requires_grad and p.grad is None and not hasattr(p, "sample_grad")


def test_tracin_cp_custom_loss_must_be_per_example():
    net = nn.Sequential(nn.Linear(4, 3)).double()
    train, val = _toy(6, 1), _toy(3, 2)
    halved = tracin_cp(
        net,
        [net.state_dict()],
        [1.0],
        train,
        val,
        loss_fn=lambda out, y: 0.5 * nn.functional.cross_entropy(out, y, reduction="none"),
    )
    plain = tracin_cp(net, [net.state_dict()], [1.0], train, val)
    np.testing.assert_allclose(halved, plain / 4, rtol=1e-12)
    with pytest.raises(ValueError, match="one loss per example"):
        tracin_cp(net, [net.state_dict()], [1.0], train, val, loss_fn=nn.functional.cross_entropy)


def test_tracin_cp_refuses_language_model_data():
    net = nn.Linear(4, 3)
    lm = Dataset(
        "toy-lm", "sequence", "lm", torch.randint(0, 256, (4, 8)), torch.zeros(4, 8, dtype=torch.long)
    )
    with pytest.raises(UserError, match="'lm' task"):
        tracin_cp(net, [net.state_dict()], [0.1], lm, lm)


def test_tracin_cp_checks_its_arguments():
    net = nn.Linear(4, 3).double()
    data = _toy(4, 0)
    with pytest.raises(ValueError, match="1 checkpoints but 2 learning rates"):
        tracin_cp(net, [net.state_dict()], [0.1, 0.2], data, data)
    with pytest.raises(ValueError, match="at least one checkpoint"):
        tracin_cp(net, [], [], data, data)
    with pytest.raises(ValueError, match="not found"):
        tracin_cp(net, [net.state_dict()], [0.1], data, data, layers=["nope"])
    with pytest.raises(ValueError, match="'all', 'linear' or a list"):
        tracin_cp(net, [net.state_dict()], [0.1], data, data, layers="linaer")


def test_tracin_cp_without_captum_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.influence", None)  # makes the import fail
    net = nn.Linear(4, 3).double()
    data = _toy(4, 0)
    with pytest.raises(UserError, match=r"pip install -c constraints.txt -e '\.\[explain\]'"):
        tracin_cp(net, [net.state_dict()], [0.1], data, data)


def test_tracin_cp_runs_on_a_glassbox_transformer():
    from glassbox.config import ModelConfig
    from glassbox.data import load_dataset, split_dataset
    from glassbox.nn import build_model

    train, val, _ = split_dataset(load_dataset("digits"), 0.15, 0.2, seed=0)
    train, val = train.subset(range(100)), val.subset(range(30))
    torch.manual_seed(0)
    model = build_model(ModelConfig(dim=32, depth=1, heads=2, dropout=0.0), train)
    first = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    checkpoints = [first, copy.deepcopy(model.state_dict())]
    for layers in ("all", "linear"):
        values = tracin_cp(model, checkpoints, [0.01, 0.005], train, val, layers=layers)
        assert values.shape == (100,) and values.dtype == np.float64
        assert np.isfinite(values).all() and np.abs(values).max() > 0


# --------------------------------------------------------------------------- leave-one-out


def test_leave_one_out_of_an_additive_utility_is_the_weights():
    weights = np.array([0.5, -1.25, 2.0, 0.0, 3.75])  # dyadic, so the subtraction is exact
    calls = []

    def fit_and_score(keep):
        calls.append(keep.sum())
        return float(weights[keep].sum())

    np.testing.assert_array_equal(leave_one_out(fit_and_score, 5), weights)
    assert calls == [5, 4, 4, 4, 4, 4]


def test_leave_one_out_of_a_duplicated_point_is_zero():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0], [-3.0, 3.0]])
    y = np.array([0, 0, 1, 1])
    vX, vy = np.array([[0.2, 0.1], [2.5, 3.0]]), np.array([0, 1])

    def one_nn_accuracy(keep):
        kX, ky = X[keep], y[keep]
        nearest = np.linalg.norm(vX[:, None] - kX[None], axis=-1).argmin(axis=1)
        return float((ky[nearest] == vy).mean())

    values = leave_one_out(one_nn_accuracy, 4)
    assert values[0] == values[1] == 0.0  # the twin still answers for it
    assert values[2] == 0.5 and values[3] == 0.0


def test_leave_one_out_refuses_big_sets():
    def never(keep):
        raise AssertionError("must refuse before fitting anything")

    with pytest.raises(UserError, match=r"retrains 202 models.*inrun.*knn_shapley"):
        leave_one_out(never, 201)
    with pytest.raises(UserError, match="retrains 11 models"):
        leave_one_out(never, 10, max_n=5)


def test_loo_logistic_is_deterministic_and_finds_the_flipped_row():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 15)
    X = rng.normal(size=(30, 2)) + np.where(y[:, None] == 1, 1.5, -1.5)
    vy = np.repeat([0, 1], 10)
    vX = rng.normal(size=(20, 2)) + np.where(vy[:, None] == 1, 1.5, -1.5)
    noisy = y.copy()
    noisy[3] = 1  # deep inside class 0's blob, labelled 1
    values = loo_logistic(X, noisy, vX, vy)
    assert values.shape == (30,) and values.dtype == np.float64
    np.testing.assert_array_equal(values, loo_logistic(X, noisy, vX, vy))
    assert values.argmin() == 3 and values[3] < 0


def test_loo_logistic_survives_a_class_losing_its_only_row():
    X = np.array([[-2.0], [-1.0], [1.0], [2.0], [5.0]])
    y = np.array([0, 0, 1, 1, 2])
    values = loo_logistic(X, y, np.array([[-1.5], [1.5], [5.0]]), np.array([0, 1, 2]))
    assert np.isfinite(values).all()
    assert values.argmax() == 4  # without it, class 2 is predicted with probability zero
