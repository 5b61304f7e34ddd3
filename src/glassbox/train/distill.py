"""Knowledge distillation: train a model toward another model's next-token distributions.

A speculative draft is worth exactly as much as it agrees with its target,
so the draft should learn the target, not only the data (DistillSpec, Zhou
et al., ICLR 2024; the loss of Hinton et al. 2015). ``Distill`` takes over
each micro-batch's forward and backward: the per-example loss is

    (1 - weight) * CE(student, data) + weight * tau^2 * KL(teacher_tau || student_tau)

with ``KL`` the forward divergence at temperature ``tau``, summed over the
vocabulary and averaged over the example's scored positions like the
cross-entropy (``Trainer.loss_fn``). The teacher is a saved run's model,
frozen, in eval mode. Validation and early stopping stay on the data's
cross-entropy, so the run's metrics mean what they mean in any run; the
logged ``train_loss`` is the mixed loss above.

Recipe: ``distill: {teacher: runs/<lm>}`` (``DistillConfig``), e.g.

    glassbox train recipes/lm.yaml --set name=lm-draft --set model.depth=1 \\
        --set model.dim=128 --set distill.teacher=runs/<lm>

>>> import torch
>>> from glassbox.config import ModelConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn.models import build_model
>>> data = Dataset("toy", "text", "lm", torch.randint(0, 256, (4, 9)), torch.zeros(4, dtype=torch.long))
>>> teacher = build_model(ModelConfig(dim=16, depth=1, heads=2, max_len=16), data).eval()
>>> x, y = data.X[:, :-1], data.X[:, 1:]
>>> float(distill_losses(teacher(x), teacher(x), y, weight=1.0, temperature=1.0).abs().max()) < 1e-6
True
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from glassbox.errors import UserError
from glassbox.train.callbacks import Callback

if TYPE_CHECKING:
    from glassbox.train.callbacks import MicroBatch
    from glassbox.train.trainer import Trainer


def distill_losses(
    student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, *, weight: float, temperature: float
) -> torch.Tensor:
    """Per-example mixed loss ``(B,)`` from logits ``(B, T, V)`` and next-token targets ``(B, T)``.

    Positions whose target is -100 (a recall task's prompt) are left out of
    both terms, as the cross-entropy leaves them out.
    """
    scored = y != -100  # (B, T)
    per_pos = torch.zeros(y.shape, dtype=student.dtype, device=student.device)  # (B, T)
    if weight < 1:
        ce = nn.functional.cross_entropy(student.transpose(1, 2), y, reduction="none")  # (B, T)
        per_pos = per_pos + (1 - weight) * ce
    if weight > 0:
        log_q = (student / temperature).log_softmax(-1)  # (B, T, V)
        log_p = (teacher / temperature).log_softmax(-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, T)
        # tau^2 keeps the gradient's size independent of the temperature (Hinton et al.).
        per_pos = per_pos + weight * temperature**2 * kl
    per_pos = per_pos * scored
    return per_pos.sum(1) / scored.sum(1).clamp(min=1)  # (B,)


class Distill(Callback):
    """Replace the training loss by ``distill_losses`` against a frozen ``teacher``."""

    def __init__(self, teacher: nn.Module, weight: float = 1.0, temperature: float = 1.0) -> None:
        self.teacher = teacher
        self.weight = weight
        self.temperature = temperature

    def on_fit_start(self, trainer: Trainer) -> None:
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def forward_backward(self, trainer: Trainer, micro: MicroBatch) -> torch.Tensor:
        logits = trainer.model(micro.x)  # (b, T, V)
        with torch.no_grad():
            target = self.teacher(micro.x)  # (b, T, V)
        losses = distill_losses(logits, target, micro.y, weight=self.weight, temperature=self.temperature)
        loss = losses.sum() * micro.scale
        loss.backward()
        return loss.detach()


def distill_callback(config: Any, student_spec: dict[str, Any]) -> tuple[Distill, dict[str, Any]]:
    """The callback for a recipe's ``distill`` section, and the ledger record of its teacher.

    The teacher must read the same bytes and positions the student is trained on.
    """
    from glassbox.ledger.chain import file_sha256
    from glassbox.nn.models import WEIGHTS, load_model

    if student_spec["task"] != "lm":
        raise UserError(
            f"distill is for language models (next-token distributions); this is a {student_spec['task']}"
            " run: remove the distill section"
        )
    d = Path(config.teacher)
    teacher = load_model(d)
    if not getattr(teacher, "lm", False):
        raise UserError(f"distill.teacher={d} holds a {teacher.kind} classifier; give a language model's run")
    if teacher.tokenizer.max_len < student_spec["model"]["max_len"]:
        raise UserError(
            f"distill.teacher={d} has {teacher.tokenizer.max_len} positions, fewer than the model's"
            f" {student_spec['model']['max_len']}; train the teacher with model.max_len at least that"
        )
    record = {
        "teacher": str(d.resolve()),
        "teacher_weights_sha256": file_sha256(d / WEIGHTS),
        "weight": config.weight,
        "temperature": config.temperature,
    }
    return Distill(teacher, config.weight, config.temperature), record
