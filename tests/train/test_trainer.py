from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glassbox.config import ModelConfig, TrainConfig
from glassbox.data import load_dataset, split_dataset
from glassbox.errors import UserError
from glassbox.nn import build_model
from glassbox.train import Callback, Trainer, distributed
from glassbox.train.metrics import classification_metrics, higher_is_better
from glassbox.train.trainer import _lr_lambda


@pytest.fixture(scope="module")
def iris():
    return split_dataset(load_dataset("iris"), 0.2, 0.2, seed=0)


def small(train, **cfg):
    return build_model(ModelConfig(dim=16, depth=1, dropout=0.0), train), TrainConfig(**cfg)


class Recorder(Callback):
    def __init__(self):
        self.events = []
        self.seen = []

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_after_backward(self, trainer, info):
        # gradients exist, the step has not happened yet
        assert any(p.grad is not None for p in trainer.model.parameters())
        self.events.append("after_backward")

    def on_step_end(self, trainer, info):
        self.seen.append(info.indices.clone())
        assert torch.equal(info.source_ids, trainer.train_data_.index[info.indices])
        assert info.optimizer is trainer.optimizer_
        self.events.append("step_end")

    def on_epoch_end(self, trainer, epoch, metrics):
        self.events.append(f"epoch_end{epoch}")

    def on_fit_end(self, trainer):
        self.events.append("fit_end")


def test_callbacks_see_every_example_once_per_epoch(iris):
    train, val, _ = iris
    model, cfg = small(train, epochs=2, batch_size=32, patience=None)
    rec = Recorder()
    Trainer(model, cfg, callbacks=[rec]).fit(train, val)
    per_epoch = math.ceil(len(train) / 32)
    assert rec.events[0] == "fit_start" and rec.events[-1] == "fit_end"
    assert rec.events.count("step_end") == 2 * per_epoch
    first_epoch = torch.cat(rec.seen[:per_epoch])
    assert sorted(first_epoch.tolist()) == list(range(len(train)))


def test_training_learns_iris(iris):
    train, val, test = iris
    model, cfg = small(train, epochs=30, batch_size=16, lr=3e-3)
    trainer = Trainer(model, cfg).fit(train, val)
    assert trainer.evaluate(test)["accuracy"] >= 0.85
    assert trainer.best_epoch_ is not None


def test_early_stopping_restores_best_weights(iris):
    train, val, _ = iris
    # lr tiny: nothing improves after the first epoch, so patience 2 stops at epoch 3
    model, cfg = small(train, epochs=50, lr=1e-9, warmup=0.0, patience=2, monitor="val_accuracy")
    trainer = Trainer(model, cfg).fit(train, val)
    assert trainer.stopped_early_
    epochs = [r["epoch"] for r in trainer.history_ if "val_accuracy" in r]
    assert len(epochs) < 50
    assert trainer.evaluate(val)["accuracy"] == pytest.approx(trainer.best_metric_)


def test_sgd_and_constant_schedule(iris):
    train, val, _ = iris
    model, cfg = small(train, epochs=1, optimizer="sgd", schedule="constant", warmup=0.0)
    trainer = Trainer(model, cfg).fit(train, val)
    assert isinstance(trainer.optimizer_, torch.optim.SGD)
    lrs = {r["lr"] for r in trainer.history_ if "lr" in r}
    assert lrs == {cfg.lr}


def test_warmup_then_cosine_shape():
    f = _lr_lambda(total=100, warmup_steps=10, schedule="cosine")
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)


def test_unknown_monitor_is_a_user_error(iris):
    train, val, _ = iris
    model, cfg = small(train, epochs=1, monitor="val_auroc")  # iris has 3 classes: no AUROC
    with pytest.raises(UserError, match="train.monitor"):
        Trainer(model, cfg).fit(train, val)


def test_diverging_loss_is_a_user_error(iris):
    train, val, _ = iris
    model, cfg = small(train, epochs=3, lr=1e6, warmup=0.0, grad_clip=None)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)
    with pytest.raises(UserError, match="lower train.lr"):
        Trainer(model, cfg).fit(train, val)


def test_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.6 + rng.random(200) * 0.5, 0, 1)
    prob = np.stack([1 - p1, p1], axis=1)
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    m = classification_metrics(y, prob)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, prob.argmax(1)))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["loss"] == pytest.approx(log_loss(y, np.clip(prob, 1e-12, 1)), rel=1e-6)
    assert higher_is_better("val_accuracy") and not higher_is_better("val_loss")


def test_balanced_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    from glassbox.data.base import Dataset

    y = torch.tensor([0] * 90 + [1] * 8 + [2] * 2)
    ds = Dataset("t", "tabular", "classification", torch.zeros(100, 1), y, classes=["a", "b", "c"])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y.numpy())
    assert torch.allclose(Trainer.balanced_weights(ds), torch.tensor(expected, dtype=torch.float32))


def test_balanced_weights_raise_minority_recall():
    from glassbox.data.base import Dataset

    g = torch.Generator().manual_seed(0)
    n = 2000
    y = (torch.rand(n, generator=g) < 0.05).long()
    x = torch.randn(n, 2, generator=g) + y[:, None] * 1.2  # overlapping classes
    ds = Dataset("imb", "tabular", "classification", x, y, classes=["no", "yes"])
    train, _val, test = split_dataset(ds, 0.2, 0.3, seed=0)
    recalls = {}
    for cw in ("none", "balanced"):
        model, cfg = small(train, epochs=5, batch_size=64, lr=3e-3, class_weight=cw, patience=None)
        trainer = Trainer(model, cfg, seed=0).fit(train, None)
        pred = trainer.predict_proba(test).argmax(1)
        recalls[cw] = (pred[test.y.numpy() == 1] == 1).mean()
    assert recalls["balanced"] > recalls["none"] + 0.2


@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_gradient_accumulation_gives_the_same_steps_as_one_batch(class_weight):
    from glassbox.data import load_dataset

    train, val, _ = split_dataset(load_dataset("wine"), 0.2, 0.2, seed=0)
    train.X, val.X = train.X.double(), val.X.double()
    weights = []
    for accumulate in (1, 3):
        model, cfg = small(train, epochs=2, batch_size=20, accumulate=accumulate, class_weight=class_weight)
        model = model.double()
        Trainer(model, cfg, seed=0).fit(train, val)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], rtol=1e-9, atol=1e-12)


def test_only_one_callback_may_own_the_backward():
    from glassbox.data import load_dataset
    from glassbox.train import Callback

    class Own(Callback):
        def forward_backward(self, trainer, micro):
            return trainer.forward_backward(micro)

    train, val, _ = split_dataset(load_dataset("iris"), 0.2, 0.2, seed=0)
    model, cfg = small(train, epochs=1)
    assert Trainer(model, cfg, callbacks=[Own()]).fit(train, val).global_step_ > 0
    with pytest.raises(ValueError, match="only one callback"):
        Trainer(model, cfg, callbacks=[Own(), Own()]).fit(train, val)


def test_label_smoothing_enters_the_training_loss_only(iris):
    train = iris[0]
    model, cfg = small(train, label_smoothing=0.1)
    t = Trainer(model, cfg)
    t.class_weights_ = None
    logits = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    logp = logits.log_softmax(-1)
    # (1 - eps) * CE(label) + eps * mean over classes of -log p: the smoothed target's cross-entropy.
    expected = -(0.9 * logp[torch.arange(5), y] + 0.1 * logp.mean(-1))
    assert torch.allclose(t.example_losses(logits, y, "classification"), expected, atol=1e-6)
    plain = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(t.loss_fn(logits, y, "classification", reduction="none"), plain)


def test_images_are_augmented_while_training_and_reproducibly():
    train, _, _ = split_dataset(load_dataset("digits"), 0.2, 0.2, seed=0)
    model = build_model(ModelConfig(dim=16, depth=1, patch=2), train)
    idx = torch.arange(8)

    def views(augment):  # "auto" on images: warped; "none": the stored rows
        t = Trainer(model, TrainConfig(augment=augment), seed=3)
        t.dist_, t.class_weights_, t.global_step_ = distributed.current(), None, 5
        return t._micro_batches(train, idx, "classification")[0].x

    a, b, plain = views("auto"), views("auto"), views("none")
    assert torch.equal(plain, train.X[idx])
    assert torch.equal(a, b) and a.shape == plain.shape and not torch.equal(a, plain)
    # A table is never warped, whatever the setting.
    tab = split_dataset(load_dataset("iris"), 0.2, 0.2, seed=0)[0]
    t = Trainer(build_model(ModelConfig(dim=16, depth=1), tab), TrainConfig(augment="auto"))
    assert not t._augments(tab)
