"""Learning dynamics (Ren and Sutherland, ICLR 2025): how one update on x_u moves the predictions on x_o.

For one step the change in log-probabilities of a probe ``x_o`` is, to first
order, ``Delta log pi(x_o) = -eta A(x_o) K(x_o, x_u) G(x_u)``: ``A = I - 1 pi^T``
is the Jacobian of log-softmax at the probe, ``K`` the empirical neural
tangent kernel between the probe's and the batch's logits, and ``G = pi_u - e_y``
the residual of the loss at the batch. ``predicted_change`` computes exactly
this product, but as a Jacobian-vector product of ``log pi(x_o)`` along the
parameter update the optimizer really made: ``J_theta log pi(x_o) Delta theta``,
which for SGD is ``-eta J(x_o)^T ... = -eta A K G`` (the tests hold it to the
explicit ``A K G`` built from full Jacobians) and for Adam carries Adam's
preconditioning. It never forms ``K``, whose size is (probe logits) x (batch
logits): hopeless for a language model's 256-way outputs.

``DynamicsTracker`` is a training callback: before each step it snapshots
the parameters and the probe's log-probabilities, after it measures the
actual change and the predicted one, and logs per step the cosine between
the two, their norms, the residual norm ``|G|``, and on the probe the mean
probability of the argmax and the mean entropy. A small learning rate gives
a cosine near 1; where it falls, the step left the first-order regime.

>>> import torch
>>> from glassbox.config import ModelConfig, TrainConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn.models import build_model
>>> from glassbox.train import Trainer
>>> g = torch.Generator().manual_seed(0)
>>> data = Dataset("toy", "tabular", "classification", torch.randn(64, 4, generator=g),
...                torch.randint(0, 2, (64,), generator=g), feature_names=list("abcd"), classes=["n", "y"])
>>> model = build_model(ModelConfig(dim=16, depth=1, heads=2, dropout=0.0), data)
>>> tracker = DynamicsTracker(data.X[:8])
>>> cfg = TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=1e-3, momentum=0.0, patience=None)
>>> _ = Trainer(model, cfg, callbacks=[tracker]).fit(data, None)
>>> min(r["dyn_cosine"] for r in tracker.records_) > 0.99
True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from glassbox.train.callbacks import Callback

if TYPE_CHECKING:
    from glassbox.train.callbacks import StepInfo
    from glassbox.train.trainer import Trainer


def _log_probs(model: nn.Module, x: torch.Tensor, lm: bool) -> torch.Tensor:
    return torch.log_softmax(model(x[:, :-1] if lm else x), -1)  # (P, K) or (P, T, V)


def predicted_change(model: nn.Module, before: dict[str, torch.Tensor], delta: dict[str, torch.Tensor],
                     x: torch.Tensor, lm: bool = False) -> torch.Tensor:  # fmt: skip
    """``J_theta log pi(x) . delta`` at parameters ``before``: every log-probability's first-order change."""
    from torch.func import functional_call, jvp

    names = list(delta)
    buffers = dict(model.named_buffers())

    def f(*params: torch.Tensor) -> torch.Tensor:
        state = {**buffers, **dict(zip(names, params, strict=True))}
        logits = functional_call(model, state, (x[:, :-1] if lm else x,))
        return torch.log_softmax(logits, -1)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    # The fused CPU attention kernels have no forward-mode derivative; the math one is plain ops.
    with sdpa_kernel(SDPBackend.MATH):
        _, tangent = jvp(f, tuple(before[n] for n in names), tuple(delta[n] for n in names))
    return tangent


class DynamicsTracker(Callback):
    """Logs, per optimizer step, the predicted and actual change of the probe's log-probabilities.

    ``probe``: inputs ``x_o`` (rows of the training data's X; for an LM the
    windows of T + 1 bytes). ``every``: track every n-th step (each tracked
    step costs two probe forwards, a JVP and a parameter copy).
    """

    def __init__(self, probe: torch.Tensor, every: int = 1) -> None:
        self.probe = probe
        self.every = every
        self.records_: list[dict[str, Any]] = []
        self._before: dict[str, torch.Tensor] | None = None
        self._logp: torch.Tensor | None = None

    def _lm(self, trainer: Trainer) -> bool:
        return bool(getattr(trainer.model, "lm", False))

    def on_after_backward(self, trainer: Trainer, info: StepInfo) -> None:
        if info.step % self.every:
            return
        model = trainer.model
        was = model.training
        model.eval()  # dropout would make "the change" partly noise
        with torch.no_grad():
            self._logp = _log_probs(model, self.probe, self._lm(trainer))
            # G = pi_u - e_y at the batch: how far the batch's predictions are from its labels.
            logits = model(info.x)
            pi = logits.softmax(-1)
            onehot = torch.nn.functional.one_hot(info.y, pi.shape[-1]).to(pi.dtype)
            self._residual = float((pi - onehot).norm() / math.sqrt(len(info.y)))
        model.train(was)
        self._before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if self._before is None or self._logp is None:
            return
        model = trainer.model
        before, logp0 = self._before, self._logp
        self._before = self._logp = None
        params = dict(model.named_parameters())
        delta = {n: params[n].detach() - before[n] for n in before}
        was = model.training
        model.eval()
        lm = self._lm(trainer)
        with torch.no_grad():
            logp1 = _log_probs(model, self.probe, lm)
        predicted = predicted_change(model, before, delta, self.probe, lm).detach()
        model.train(was)
        actual = logp1 - logp0
        pred, act = predicted.flatten().double(), actual.flatten().double()
        cos = torch.nn.functional.cosine_similarity(pred, act, 0)
        probs = logp1.exp()
        record = {
            "step": info.step,
            "dyn_cosine": float(cos),
            "dyn_predicted_norm": float(predicted.norm()),
            "dyn_actual_norm": float(actual.norm()),
            "dyn_residual_norm": self._residual,
            "dyn_argmax_prob": float(probs.amax(-1).mean()),
            "dyn_entropy": float(-(probs * logp1).sum(-1).mean()),
        }
        self.records_.append(record)
        trainer.history_.append(record)  # into metrics.jsonl and the report's curves
