"""The pretraining stage of a run, starting a model from a pretrained run, and the linear probe.

What the pipeline calls: ``run_pretraining`` pretrains the run's model on
its unlabeled pool and writes ``pretrain.json``; ``check_init`` and
``load_encoder`` start a model from another run's encoder (``glassbox train
--init RUN``); ``freeze_encoder`` turns training into a linear probe
(``train.head_only``).

>>> import torch
>>> from glassbox.config import ModelConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn import build_model
>>> data = Dataset("toy", "tabular", "classification", torch.randn(16, 3), torch.randint(0, 2, (16,)),
...                feature_names=list("abc"), classes=["no", "yes"])
>>> model = freeze_encoder(build_model(ModelConfig(dim=8, depth=1, heads=2), data))
>>> sorted(n for n, p in model.named_parameters() if p.requires_grad)
['head.bias', 'head.weight']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glassbox.errors import UserError

PRETRAIN_FILE = "pretrain.json"
# What --init leaves fresh: the classifier head and the tables' linear path.
HEAD = ("head.", "linear.")
# What must agree between the pretrained run and the new one for its encoder
# weights to mean the same thing; classes and the head may differ.
_ARCH = ("dim", "depth", "heads", "mlp_ratio", "attention", "patch", "conv_stem", "max_len")


def run_pretraining(run: Any, recipe: Any, model: nn.Module, pool: Any, progress: bool | None = None) -> dict:
    """Pretrain ``model`` on ``pool``'s inputs (labels unused) as ``recipe.pretrain`` says; record it."""
    from glassbox.ssl.pretrain import pretrain, unlabeled_rows

    cfg = recipe.pretrain
    rows = unlabeled_rows(len(pool), cfg.unlabeled, recipe.seed)
    history = pretrain(model, pool.X[rows], cfg, seed=recipe.seed, progress=progress)
    record = {
        "method": cfg.method,
        "rows": len(rows),
        "source_rows": pool.index[rows].tolist(),
        "seconds": history[-1]["seconds"] if history else 0.0,
        "history": history,
    }
    run.write_json(PRETRAIN_FILE, record, about={"method": cfg.method, "rows": len(rows)})
    return record


def _spec(run_dir: Path) -> dict[str, Any]:
    from glassbox.nn.models import SPEC

    path = run_dir / SPEC
    if not path.is_file():
        raise UserError(f"--init {run_dir}: no {SPEC} there; give a run folder that saved a model")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"--init {run_dir}: {path} is not valid JSON ({err})") from None


def check_init(run_dir: str | Path, recipe: Any, dataset: Any) -> None:
    """Refuse, before any folder is made, an init run whose encoder does not fit this recipe's model."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError(f"--init {run_dir}: no such run folder; give runs/<run> from glassbox pretrain")
    spec = _spec(d)
    if recipe.pretrain is not None:
        raise UserError(
            "--init starts from a pretrained encoder and the recipe has a pretrain: section too;"
            " drop one of them (--set pretrain=null)"
        )
    if spec.get("kind") != dataset.kind:
        raise UserError(
            f"--init {run_dir} holds a {spec.get('kind')} model; this recipe's data is {dataset.kind}"
        )
    mine = recipe.model.model_dump(mode="json")
    theirs = spec.get("model", {})
    keys = (*_ARCH, "audio") if dataset.kind == "audio" else _ARCH  # the tokenizer's features must agree
    for key in keys:
        if key == "attention" and mine[key] == "auto":
            continue  # auto resolves by length, the same for the same data
        if theirs.get(key) != mine[key]:
            raise UserError(
                f"--init {run_dir}: its model.{key} is {theirs.get(key)!r}, this recipe's is {mine[key]!r};"
                f" set --set model.{key}={theirs.get(key)} to match the pretrained encoder"
            )
    shape = list(dataset.X.shape[1:])
    want = shape[0] if dataset.kind == "tabular" else shape
    got = spec.get("n_features") if dataset.kind == "tabular" else spec.get("image_shape")
    if dataset.kind == "audio":
        want, got = shape[0], spec.get("audio_samples")
    if dataset.kind in ("tabular", "image", "audio") and got != want:
        raise UserError(
            f"--init {run_dir}: its model reads inputs of shape {got}, this data has {want};"
            " pretrain on the same data source"
        )


def load_encoder(model: nn.Module, run_dir: str | Path) -> dict[str, Any]:
    """Copy every weight but the classifier head from ``run_dir``'s model into ``model``; returns a record."""
    import safetensors.torch

    from glassbox.ledger.chain import file_sha256
    from glassbox.nn.models import WEIGHTS

    d = Path(run_dir)
    theirs = safetensors.torch.load_file(str(d / WEIGHTS))
    mine = model.state_dict()
    encoder = {k: v for k, v in theirs.items() if not k.startswith(HEAD)}
    missing = [k for k in mine if not k.startswith(HEAD) and k not in encoder]
    extra = [k for k in encoder if k not in mine]
    if missing or extra:
        raise UserError(
            f"--init {run_dir}: its weights do not fit this model (missing {missing[:3]},"
            f" unexpected {extra[:3]}); pretrain with the same model settings"
        )
    for k, v in encoder.items():
        if v.shape != mine[k].shape:
            raise UserError(
                f"--init {run_dir}: weight {k} has shape {tuple(v.shape)},"
                f" the model wants {tuple(mine[k].shape)}"
            )
    model.load_state_dict({**mine, **encoder})
    return {"from": str(d.resolve()), "weights_sha256": file_sha256(d / WEIGHTS), "tensors": len(encoder)}


class _FrozenEncoder:
    """``model.train()`` that keeps everything but the head in eval mode (no dropout in the features)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.original = model.train

    def __call__(self, mode: bool = True) -> nn.Module:
        self.original(mode)
        for name, child in self.model.named_children():
            if name != "head":
                child.eval()
        return self.model


def freeze_encoder(model: nn.Module) -> nn.Module:
    """Make ``model`` a linear probe: only ``head`` trains, the rest stays fixed and in eval mode."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head."))
    linear = getattr(model, "linear", None)
    if linear is not None:  # a probe reads the encoder alone: the tables' linear path stays at zero
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.zero_()
    model.train = _FrozenEncoder(model)  # type: ignore[method-assign]
    return model
