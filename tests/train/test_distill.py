"""Distillation: the loss against independent references, and a student that moves toward its teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glassbox.config import ModelConfig, TrainConfig, load_recipe
from glassbox.data.base import Dataset
from glassbox.nn.models import build_model
from glassbox.pipeline import run_recipe
from glassbox.train import Trainer
from glassbox.train.distill import Distill, distill_losses

TEXT = Dataset("toy", "text", "lm", torch.randint(0, 256, (48, 17)), torch.zeros(48, dtype=torch.long))


def _lm(seed: int, dim: int = 16) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(dim=dim, depth=1, heads=2, max_len=32, dropout=0.0), TEXT)


def test_the_two_terms_equal_cross_entropy_and_kl_div() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, 11, generator=g), torch.randn(3, 5, 11, generator=g)
    y = torch.randint(0, 11, (3, 5), generator=g)
    y[1, :2] = -100  # a recall prompt's positions: scored by neither term
    ce = Trainer(_lm(0), TrainConfig()).loss_fn(s, y, "lm", reduction="none")
    torch.testing.assert_close(distill_losses(s, t, y, weight=0.0, temperature=2.0), ce)
    tau = 2.0
    kl = torch.nn.functional.kl_div(
        (s / tau).log_softmax(-1), (t / tau).log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)  # (3, 5)
    kl = tau**2 * (kl * (y != -100)).sum(1) / (y != -100).sum(1)
    torch.testing.assert_close(distill_losses(s, t, y, weight=1.0, temperature=tau), kl)
    mixed = distill_losses(s, t, y, weight=0.25, temperature=tau)
    torch.testing.assert_close(mixed, 0.75 * ce + 0.25 * kl)


def test_the_callback_leaves_the_gradient_of_its_loss() -> None:
    student, teacher = _lm(1), _lm(2).eval()
    trainer = Trainer(student, TrainConfig(batch_size=8), callbacks=[Distill(teacher, 0.5, 1.5)])
    trainer.task_ = "lm"
    x, y = TEXT.X[:4, :-1], TEXT.X[:4, 1:]

    class Micro:
        pass

    micro = Micro()
    micro.x, micro.y, micro.scale = x, y, 1 / 8
    loss = trainer.callbacks[0].forward_backward(trainer, micro)
    got = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    want = distill_losses(student(x), teacher(x).detach(), y, weight=0.5, temperature=1.5).sum() / 8
    want.backward()
    torch.testing.assert_close(loss, want.detach())
    for a, p in zip(got, student.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is not trained


TINY = ["data.source=python-corpus", "data.max_bytes=12000", "data.seq_len=32", "model.dim=32",
        "model.depth=1", "model.heads=2", "model.max_len=64", "train.epochs=2", "report.enabled=false",
        "train.batch_size=16"]  # fmt: skip


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = load_recipe(None, [*TINY, "model.dim=48", "seed=3"])
    return run_recipe(recipe, tmp_path_factory.mktemp("teacher"), progress=False).path


def _kl_to(teacher_dir: Path, student_dir: Path) -> float:
    from glassbox.nn import load_model

    teacher, student = load_model(teacher_dir), load_model(student_dir)
    x = torch.tensor([list(b"def main(argv):\n    parser = argparse.ArgumentParser(description=")[:48]])
    with torch.no_grad():
        return float(distill_losses(student(x), teacher(x), x, weight=1.0, temperature=1.0).mean())


def test_a_distilled_student_agrees_with_its_teacher_more(teacher_run: Path, tmp_path: Path) -> None:
    plain = run_recipe(load_recipe(None, TINY), tmp_path / "plain", progress=False).path
    sets = [*TINY, f"distill.teacher={teacher_run}"]
    taught = run_recipe(load_recipe(None, sets), tmp_path / "taught", progress=False).path
    assert _kl_to(teacher_run, taught) < 0.8 * _kl_to(teacher_run, plain)
    entries = [json.loads(line) for line in (taught / "ledger.jsonl").read_text().splitlines()]
    record = next(e for e in entries if e["kind"] == "distill")
    assert record["data"]["teacher"] == str(teacher_run.resolve())
    assert len(record["data"]["teacher_weights_sha256"]) == 64
