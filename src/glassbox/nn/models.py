"""The Transformer: tokenizer, a stack of blocks, a final norm and a head.

One class serves every kind of data. Tabular and image models classify from
the CLS token; text models are causal byte-level language models with a
KV-cached ``decode_step`` for generation.

``build_model`` makes a fresh model for a dataset and records in
``model.spec_`` everything needed to rebuild it without the data;
``save_model`` / ``load_model`` store that spec as ``model.json`` next to the
weights in ``model.safetensors``.

>>> import torch
>>> from glassbox.config import ModelConfig
>>> from glassbox.data.base import Dataset
>>> data = Dataset("toy", "tabular", "classification", torch.randn(20, 3),
...                torch.randint(0, 2, (20,)), feature_names=["a", "b", "c"], classes=["no", "yes"])
>>> model = build_model(ModelConfig(dim=16, depth=1, heads=2), data)
>>> model(data.X[:5]).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from pydantic import ValidationError
from torch import nn

from glassbox.config import ModelConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.nn.attention import KINDS, State
from glassbox.nn.blocks import Block
from glassbox.nn.kinds.auto import resolve_auto
from glassbox.nn.tokenizers import TOKENIZERS
from glassbox.run import atomic_path, atomic_write_text

WEIGHTS = "model.safetensors"
SPEC = "model.json"
SPEC_FORMAT = 1  # bump when the spec's meaning changes, so old files fail loudly
VOCAB = 256  # byte-level text: every byte is a token


class Transformer(nn.Module):
    """``forward(x)`` gives logits: ``(B, n_classes)`` for classification, ``(B, T, 256)`` for text.

    Text models read ``(B, T)`` byte ids, i.e. ``dataset.X[:, :-1]``, and
    predict ``dataset.X[:, 1:]``.
    """

    def __init__(self, cfg: ModelConfig, kind: str, input_shape: tuple[int, ...], n_outputs: int) -> None:
        super().__init__()
        self.kind = kind
        self.lm = kind in ("text", "sequence")  # both are causal token models
        self.tokenizer = TOKENIZERS.build(kind, cfg=cfg, input_shape=input_shape)
        self.drop = nn.Dropout(cfg.dropout)
        options = {"window": cfg.window, "chunk_size": cfg.chunk_size, "feature_map": cfg.feature_map}
        self.blocks = nn.ModuleList(
            Block(
                cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.attention, causal=self.lm, options=options
            )
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.head: nn.Module
        if cfg.head == "linear":
            self.head = nn.Linear(cfg.dim, n_outputs)
        elif self.lm:  # _check refuses this first; a hand-edited spec reaches here
            raise UserError(f"model.head={cfg.head} is for classifiers; {kind} models need model.head=linear")
        else:
            # PennyLane itself is imported only when a QuantumHead is built, so linear models never need it.
            from glassbox.nn.quantum import ClassicalHead, QuantumHead

            small = QuantumHead if cfg.head == "quantum" else ClassicalHead
            self.head = small(cfg.dim, n_outputs, qubits=cfg.qubits, layers=cfg.quantum_layers)
        # Wide and deep (ModelConfig.linear_path): logistic regression on the standardized features.
        self.linear: nn.Linear | None = None
        self.deep_penalty = cfg.deep_penalty
        # (B,) the last training forward's deep_penalty per row, until take_penalty reads it
        self.penalty_: torch.Tensor | None = None
        if cfg.linear_path:
            self.linear = nn.Linear(input_shape[0], n_outputs)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        self.spec_: dict[str, Any] = {}  # filled by build_model / model_from_spec
        self.merge_r = 0
        self.set_merge(cfg.merge_r)

    def train(self, mode: bool = True) -> Transformer:
        self.penalty_ = None  # eval() after training leaves no autograd graph on the model
        return super().train(mode)

    def set_merge(self, r: int) -> Transformer:
        """Merge ``r`` tokens in every block from now on (ToMe); 0 turns merging off.

        Works off the shelf on a model trained without merging. The spec
        follows, so a saved model merges as it was last set to.
        """
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise UserError(f"model.merge_r must be a whole number >= 0, got {r!r}")
        if r > 0 and self.lm:
            raise UserError(
                f"model.merge_r={r}: token merging is for tabular and image encoders; "
                f"{self.kind} models are causal and cannot merge tokens; set model.merge_r=0"
            )
        self.merge_r = r
        if "model" in self.spec_:
            self.spec_["model"]["merge_r"] = r
        return self

    def encode(
        self, x: torch.Tensor, states: list[State] | None = None, offset: int = 0
    ) -> tuple[torch.Tensor, list[State] | None]:
        """Final-normed token features ``(B, N, dim)`` and the blocks' updated states.

        With merging on (``set_merge``) fewer tokens come out, CLS still first.
        """
        h = self.drop(self.tokenizer(x, offset=offset))  # (B, N, dim)
        if self.merge_r > 0 and states is None:
            # ToMe: tokens shrink block by block; sizes count what each one stands for.
            size: torch.Tensor | None = None
            for block in self.blocks:
                h, size = block.forward_merging(h, size, self.merge_r, protect_cls=self.tokenizer.has_cls)
            return self.norm(h), None  # (B, N', dim), CLS still first
        new_states: list[State] | None = None if states is None else []
        for i, block in enumerate(self.blocks):
            h, s = block(h, None if states is None else states[i])
            if new_states is not None:
                new_states.append(s)
        return self.norm(h), new_states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.encode(x)
        if self.lm:
            return self.head(h)  # (B, T, 256)
        logits = self.head(h[:, 0])  # (B, n_classes), from the CLS token
        if self.linear is not None:
            if self.deep_penalty > 0 and self.training and torch.is_grad_enabled():
                self.penalty_ = self.deep_penalty * logits.pow(2).mean(-1)  # (B,)
            elif self.penalty_ is not None:  # (no assignment otherwise: torch.export refuses one)
                self.penalty_ = None  # a forward that leaves none (eval, no_grad) clears a stale one
            logits = logits + self.linear(self.tokenizer.standardize(x))  # (B, n_classes)
        return logits

    def decode_step(
        self, tokens: torch.Tensor, states: list[State] | None = None, offset: int = 0
    ) -> tuple[torch.Tensor, list[State]]:
        """Feed ``tokens`` ``(B, T)`` at absolute positions ``offset..offset+T-1``.

        Pass ``states=None`` (and ``offset=0``) for the prompt, then the
        returned states with the next tokens. Returns ``(logits (B, T, 256), states)``.
        """
        if not self.lm:
            raise ValueError("decode_step is for text models; this one classifies")
        if states is None:
            states = [{} for _ in self.blocks]
        h, new_states = self.encode(tokens, states, offset)
        assert new_states is not None
        return self.head(h), new_states

    def generate(
        self,
        prompt_ids: torch.Tensor | list[int] | bytes,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """See ``glassbox.nn.lm.generate``."""
        from glassbox.nn.lm import generate

        return generate(self, prompt_ids, max_new_tokens, temperature, top_k, generator)


def take_penalty(model: nn.Module, rows: int) -> torch.Tensor | float:
    """The last training forward's penalty on its first ``rows`` rows, ``(rows,)``, or 0; read once.

    ``ModelConfig.deep_penalty`` is a term of each row's training loss that the logits alone do not
    carry, so the forward leaves it on the model (as mixture-of-experts layers leave their
    auxiliary loss) and the training loop adds it to the rows' losses. Rows past ``rows`` (the
    validation rows that in-run valuation appends to a batch) get none. Clearing it on read keeps
    no autograd graph alive on the model, which would also break ``copy.deepcopy``.
    """
    penalty = getattr(model, "penalty_", None)
    if penalty is None:
        return 0.0
    model.penalty_ = None
    return penalty[:rows]


def _check(config: ModelConfig, dataset: Dataset) -> None:
    if config.dim % config.heads:
        fits = [h for h in range(1, min(config.dim, 16) + 1) if config.dim % h == 0]
        raise UserError(
            f"model.dim={config.dim} is not divisible by model.heads={config.heads}; "
            f"choose heads from {', '.join(map(str, fits))} or change model.dim"
        )
    if config.attention not in KINDS:
        try:
            KINDS.get(config.attention)
        except UserError as err:
            raise UserError(f"model.attention: {err}") from None
    want = {"tabular": 2, "image": 4, "text": 2, "sequence": 2, "audio": 2}
    if dataset.kind not in want:
        raise UserError(f"no model for data kind '{dataset.kind}'; valid: {', '.join(want)}")
    if dataset.X.ndim != want[dataset.kind]:
        raise ValueError(f"{dataset.kind} data must be {want[dataset.kind]}-D, got {tuple(dataset.X.shape)}")
    if (dataset.task == "lm") != (dataset.kind in ("text", "sequence")):
        raise ValueError(f"{dataset.kind} data with task '{dataset.task}' is not supported")
    if dataset.kind == "sequence" and dataset.X.shape[1] > config.max_len:
        raise UserError(
            f"sequences of {dataset.X.shape[1]} tokens are longer than model.max_len={config.max_len}; "
            "raise model.max_len"
        )
    if dataset.kind == "text" and dataset.X.shape[1] - 1 > config.max_len:
        raise UserError(
            f"text windows of {dataset.X.shape[1] - 1} bytes are longer than model.max_len={config.max_len}; "
            "raise model.max_len or lower data.seq_len"
        )
    if config.head != "linear" and dataset.task != "classification":
        raise UserError(
            f"model.head={config.head} is a classifier head; {dataset.kind} models predict the next token"
            " through a linear head, so set model.head=linear"
        )
    if config.linear_path and (dataset.kind != "tabular" or dataset.task != "classification"):
        raise UserError(
            f"model.linear_path is for tabular classifiers (a linear map of the features to the classes);"
            f" this is {dataset.kind} data, so set model.linear_path=false"
        )
    if dataset.task == "classification" and dataset.n_classes < 1:
        raise UserError(f"dataset '{dataset.name}' has no classes to predict")


def _sequence_length(config: ModelConfig, dataset: Dataset) -> int:
    """Tokens per example the blocks see (before any merging): what ``auto`` decides by."""
    if dataset.kind == "tabular":
        return dataset.X.shape[1] + 1  # one per feature, plus CLS
    if dataset.kind == "image":
        _, H, W = dataset.X.shape[1:]
        return (H // config.patch) * (W // config.patch) + 1
    if dataset.kind == "text":
        return dataset.X.shape[1] - 1  # windows hold T + 1 bytes
    if dataset.kind == "audio":
        from glassbox.nn.audio import audio_tokens

        return audio_tokens(config, dataset.X.shape[1])
    return dataset.X.shape[1]


def build_model(config: ModelConfig, dataset: Dataset) -> Transformer:
    """A fresh model for ``dataset`` (its training split), input statistics set from ``dataset.X``."""
    _check(config, dataset)
    shape = list(dataset.X.shape[1:])
    tokens = _sequence_length(config, dataset)
    # "auto" is decided here, once, and the concrete kind written into the
    # spec: a saved model keeps its kind even if a later release moves the crossover.
    attention = resolve_auto(tokens) if config.attention == "auto" else config.attention
    spec: dict[str, Any] = {
        "format": SPEC_FORMAT,
        "model": config.model_dump(mode="json"),
        "dataset": dataset.name,
        "kind": dataset.kind,
        "task": dataset.task,
        "n_features": shape[0] if dataset.kind == "tabular" else None,
        "image_shape": shape if dataset.kind == "image" else None,
        "audio_samples": shape[0] if dataset.kind == "audio" else None,
        "classes": [str(c) for c in dataset.classes],
        "feature_names": [str(f) for f in dataset.feature_names],
        "tokens": tokens,
        "attention": attention,
    }
    model = model_from_spec(spec)
    with torch.no_grad():
        model.tokenizer.fit(dataset.X)
    return model


def model_from_spec(spec: dict[str, Any]) -> Transformer:
    """The architecture ``spec`` describes, freshly initialised (load weights into it next)."""
    if spec.get("format") != SPEC_FORMAT:
        raise UserError(
            f"model spec format {spec.get('format')!r} is not {SPEC_FORMAT}; "
            "the model was saved by another glassbox version, retrain it"
        )
    try:
        cfg = ModelConfig(**spec["model"])
    except (ValidationError, KeyError, TypeError) as err:
        raise UserError(f"the model spec has no valid 'model' section: {err}") from None
    if cfg.attention == "auto":
        cfg = cfg.model_copy(update={"attention": spec["attention"]})
    kind = spec["kind"]
    if kind == "tabular":
        input_shape: tuple[int, ...] = (int(spec["n_features"]),)
    elif kind == "image":
        input_shape = tuple(int(s) for s in spec["image_shape"])
    elif kind == "audio":
        input_shape = (int(spec["audio_samples"]),)
    else:
        input_shape = ()
    n_outputs = VOCAB if spec["task"] == "lm" else len(spec["classes"])
    model = Transformer(cfg, kind, input_shape, n_outputs)
    model.spec_ = json.loads(json.dumps(spec))  # a private, plain-JSON copy
    return model


def save_model(model: Transformer, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; returns the folder."""
    if not model.spec_:
        raise ValueError("model has no spec_; make it with build_model or model_from_spec")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    # safetensors' save_model, unlike save_file, drops aliases of tied tensors
    # (save_file refuses shared storage) and load_model restores them.
    with atomic_path(d / WEIGHTS) as tmp:
        safetensors.torch.save_model(model, str(tmp), force_contiguous=True)
    atomic_write_text(d / SPEC, json.dumps(model.spec_, indent=2) + "\n")
    return d


def load_model(directory: str | Path) -> Transformer:
    """The model saved in ``directory`` by ``save_model``, in eval mode on the CPU."""
    d = Path(directory)
    for name in (SPEC, WEIGHTS):
        if not (d / name).is_file():
            raise UserError(f"no {name} in {d}; give the folder a run saved its model to")
    try:
        spec = json.loads((d / SPEC).read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{d / SPEC} is not valid JSON ({err}); the file is damaged") from None
    model = model_from_spec(spec)
    try:
        safetensors.torch.load_model(model, str(d / WEIGHTS), strict=True)
    except RuntimeError as err:
        raise UserError(f"{d / WEIGHTS} does not match {d / SPEC}: {err}") from None
    return model.eval()
