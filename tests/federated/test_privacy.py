from __future__ import annotations

import copy
import json

import opacus.optimizers.optimizer as dp_optimizer
import pytest
import torch
from opacus.accountants import RDPAccountant
from torch.func import functional_call, grad, vmap

from glassbox.config import PrivacyConfig, TrainConfig, load_recipe
from glassbox.data.base import Dataset
from glassbox.federated.privacy import dp_sgd_train
from glassbox.federated.task import client_data, load_data, local_train
from glassbox.nn import build_model
from glassbox.nn.models import take_penalty
from glassbox.pipeline import prepare_data

LOCAL = PrivacyConfig(mode="local")


def setup(overrides: list[str], rows: int | None = None):
    r = load_recipe(None, ["model.dim=16", "model.depth=1", "model.heads=2", *overrides])
    d = prepare_data(r)
    train = d["train"] if rows is None else d["train"].subset(range(rows))
    torch.manual_seed(0)
    return build_model(r.model, d["train"]), train


TABULAR = ["data.source=iris"]
IMAGE = ["data.source=digits", "model.conv_stem=true", "model.patch=4"]


@pytest.fixture
def no_noise(monkeypatch):
    """DP-SGD's Gaussian noise switched off, leaving the clipped mean gradient exactly."""
    monkeypatch.setattr(
        dp_optimizer, "_generate_noise", lambda std, reference, **kw: torch.zeros_like(reference)
    )


def clipped_sgd_reference(model, train: Dataset, lr: float, clip: float | None):
    """One SGD step on the mean of per-example gradients, each clipped to ``clip``: torch.func, float64.

    With ``clip=None`` returns the per-example gradient norms instead, to choose a clip that bites.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, x, y):
        logits = functional_call(model, {**p, **buffers}, (x[None],))
        # the table defaults' model.deep_penalty on this row, if any (checked by hand in tests/nn)
        penalty = take_penalty(model, 1)
        ce = torch.nn.functional.cross_entropy(logits, y[None])
        return ce + (penalty.sum() if torch.is_tensor(penalty) else penalty)

    try:
        g = vmap(grad(loss), in_dims=(None, 0, 0))(params, train.X, train.y)  # each (B, *shape)
    except RuntimeError as err:  # gla's chunked kernel branches on the data, which vmap cannot batch
        assert "vmap" in str(err)
        rows = [grad(loss)(params, x, y) for x, y in zip(train.X, train.y, strict=True)]
        g = {k: torch.stack([r[k] for r in rows]) for k in params}
    norms = torch.stack([v.flatten(1).norm(dim=1) for v in g.values()], dim=1).norm(dim=1)  # (B,)
    if clip is None:
        return norms
    # Opacus's clip factor C / (norm + 1e-6), its guard against a zero gradient, taken
    # over as is so the comparison can be to float64 precision.
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    return {k: params[k] - lr * torch.einsum("b,b...->...", factor, g[k]) / len(train.X) for k in params}


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap over fused attention, reference only
@pytest.mark.parametrize(
    "overrides",
    [TABULAR, IMAGE, [*TABULAR, "model.attention=gla"], [*TABULAR, "model.attention=deltanet"]],
    ids=["tabular", "image-conv-stem", "gla", "deltanet"],  # the last two: two-input per-head norms
)
def test_one_step_is_sgd_on_the_mean_clipped_per_example_gradient(overrides, no_noise):
    model, train = setup([*overrides, "model.dropout=0"], rows=12)
    model.double()
    train = Dataset(train.name, train.kind, train.task, train.X.double(), train.y, classes=train.classes)
    norms = clipped_sgd_reference(model, train, 0.0, None)
    clip = float(norms.median())  # about half the examples are clipped, half are not
    assert (norms > clip * 1.01).any() and (norms < clip * 0.99).any()
    lr = 0.5
    expected = clipped_sgd_reference(model, train, lr, clip)
    # batch_size >= rows: sample rate 1, so the one Poisson batch is every row.
    cfg = TrainConfig(epochs=1, batch_size=len(train), optimizer="sgd", lr=lr, momentum=0.0, weight_decay=0.0)
    cfg = cfg.model_copy(update={"warmup": 0.0, "schedule": "constant"})
    priv = PrivacyConfig(mode="local", max_grad_norm=clip, noise_multiplier=1.0)
    state, steps, _, _, _ = dp_sgd_train(model, cfg, train, priv, seed=0, history=[])
    assert steps == 1
    for k, want in expected.items():
        torch.testing.assert_close(state[k], want, rtol=1e-10, atol=1e-12)


def test_epsilon_composes_over_rounds_as_opacus_accounts_it():
    model, train = setup(TABULAR, rows=40)
    cfg = TrainConfig(epochs=1, batch_size=8)
    _, steps1, _, h1, eps1 = dp_sgd_train(model, cfg, train, LOCAL, seed=0, history=[])
    h1 = json.loads(json.dumps(h1))  # as Flower's context.state keeps it between rounds
    _, steps2, _, h2, eps2 = dp_sgd_train(model, cfg, train, LOCAL, seed=1, history=h1)
    q = 8 / len(train)
    assert h2 == [[1.0, q, steps1 + steps2]]  # same sigma and rate: Opacus merges the rounds
    direct = RDPAccountant()
    direct.history = [(1.0, q, steps1 + steps2)]
    assert eps2 == pytest.approx(direct.get_epsilon(LOCAL.delta), rel=1e-12)
    assert 0 < eps1 < eps2
    # A different sigma in a later round is kept as its own entry and still composes.
    louder = PrivacyConfig(mode="local", noise_multiplier=2.0)
    _, _, _, h3, eps3 = dp_sgd_train(model, cfg, train, louder, seed=2, history=h2)
    assert h3 == [*h2, [2.0, q, steps1]]
    direct.history = [tuple(h) for h in h3]
    assert eps3 == pytest.approx(direct.get_epsilon(LOCAL.delta), rel=1e-12) and eps3 > eps2
    # More noise per step, less privacy spent over the same steps.
    _, _, _, _, eps_loud = dp_sgd_train(model, cfg, train, louder, seed=0, history=[])
    assert eps_loud < eps1


def test_returns_the_models_own_keys_and_leaves_it_a_plain_module():
    model, train = setup(TABULAR)
    keys = list(model.state_dict())
    state, *_ = dp_sgd_train(model, TrainConfig(epochs=1, batch_size=32), train, LOCAL, seed=0, history=[])
    assert list(state) == keys and not any(k.startswith("_module.") for k in state)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v)
    assert not model.training
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not hasattr(m, "activations")
    assert not any(hasattr(p, "grad_sample") or hasattr(p, "summed_grad") for p in model.parameters())
    with torch.no_grad():
        assert model(train.X[:5]).shape == (5, train.n_classes)
    # The same model can be wrapped again next round.
    dp_sgd_train(model, TrainConfig(epochs=1, batch_size=32), train, LOCAL, seed=1, history=[])


def test_a_federated_round_on_the_digits_image_model():
    """recipes/digits.yaml (conv stem, GroupNorm) through task.local_train, privacy.mode local."""
    r = load_recipe(
        "recipes/digits.yaml",
        ["federated.clients=12", "federated.privacy.mode=local", "model.dim=32", "model.depth=1"],
    )
    data = load_data(r)
    train, _ = client_data(r, data, 0)
    torch.manual_seed(0)
    model = build_model(r.model, data["train"])
    global_state = copy.deepcopy(model.state_dict())
    result = local_train(r, model, global_state, train, server_round=1, pid=0, privacy_history=[])
    assert result.steps >= 1 and result.metrics["epsilon"] > 0
    assert set(result.state) == set(global_state)
    assert any(not torch.equal(result.state[k], global_state[k]) for k in global_state)
    assert all(torch.isfinite(v).all() for v in result.state.values())
    assert result.privacy["history"][0][2] == result.steps


def test_same_seed_same_result():
    model, train = setup(TABULAR, rows=40)  # dropout on: its stream is seeded too
    twin = copy.deepcopy(model)
    cfg = TrainConfig(epochs=1, batch_size=8)
    rng = torch.get_rng_state()
    a = dp_sgd_train(model, cfg, train, LOCAL, seed=7, history=[])
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's global stream is left alone
    b = dp_sgd_train(twin, cfg, train, LOCAL, seed=7, history=[])
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and a[1:] == b[1:]
    c = dp_sgd_train(copy.deepcopy(twin), cfg, train, LOCAL, seed=8, history=[])
    assert any(not torch.equal(b[0][k], c[0][k]) for k in b[0])


def test_empty_poisson_batches_still_take_a_noisy_step():
    model, train = setup(TABULAR, rows=8)
    before = copy.deepcopy(model.state_dict())
    # Sample rate 1/8 over 8 rows: about a third of the batches are empty.
    state, steps, loss, history, _ = dp_sgd_train(
        model, TrainConfig(epochs=3, batch_size=1, optimizer="sgd"), train, LOCAL, seed=0, history=[]
    )
    assert steps == 24 and history == [[1.0, 1 / 8, 24]]
    assert torch.isfinite(torch.tensor(loss))
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not torch.equal(state["head.weight"], before["head.weight"])
