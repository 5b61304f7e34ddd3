"""Quantum head against a classical head of the same size on breast-cancer reduced to 4 features.

For each seed (it sets the split, ``glassbox.data.split_dataset`` with 15 %
validation and 20 % test, and every initialization):

- the 30 features are standardized and reduced to 4 by PCA, both fitted on
  the training split only, and whitened (unit variance per component). PCA
  rather than the 4 best univariate (ANOVA F) features: those are
  near-duplicates (worst and mean concave points, worst perimeter, worst
  radius; mean |r| 0.87 on the training split), while the 4 components are
  uncorrelated and keep about 79 % of the variance; 4 features, so each
  qubit of a 4-qubit head has one to encode;
- each head, ``quantum`` (``glassbox.nn.quantum.QuantumHead``: RX angles in
  [0, pi], StronglyEntanglingLayers, <Z> per qubit, simulated on
  ``default.qubit`` with backprop), ``classical_small`` (``ClassicalHead``:
  the same layers around a parameter-matched MLP) and, for reference,
  ``linear``, is trained (a) as the classifier head of a glassbox
  Transformer (``model.head``) on the 4 features and (b) alone on the 4
  features, the head being the whole model;
- every fit uses the same ``TrainConfig``: AdamW, lr 0.01 (the circuit's
  angles move slowly at the default 1e-3), batch 64, the fixed number of
  epochs (no early stopping, so every fit runs them all), cosine schedule,
  the weights of the best validation accuracy kept; one torch thread.

Reported per setting and head: test accuracy and ROC AUC (mean, sample std
over seeds, per seed), trainable parameters (whole model and head) and
training seconds per epoch (wall time of ``Trainer.fit`` over the epochs,
validation included, after one untimed warm-up pass).

``--quick``: seed 0, 3 epochs; what tests/nn/test_quantum.py runs.

Example:
    python benchmarks/quantum.py > quantum.json     # ~30 s on a 2-core machine
    glassbox bench quantum --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

HEADS = ("quantum", "classical_small", "linear")
SETTINGS = ("transformer", "head_alone")
FEATURES = 4


def reduce_features(seed: int) -> tuple[Any, Any, Any]:
    """(train, val, test) of breast-cancer with its features replaced by 4 whitened principal components."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from glassbox.data import load_dataset, split_dataset

    train, val, test = split_dataset(load_dataset("breast-cancer"), 0.15, 0.2, seed)
    scaler = StandardScaler().fit(train.X.numpy())
    pca = PCA(FEATURES, whiten=True, random_state=seed).fit(scaler.transform(train.X.numpy()))
    names = [f"pc{i + 1}" for i in range(FEATURES)]

    def reduce(ds: Any) -> Any:
        z = pca.transform(scaler.transform(ds.X.numpy()))
        return replace(ds, X=torch.tensor(z, dtype=torch.float32), feature_names=names)

    return reduce(train), reduce(val), reduce(test)


def make_model(setting: str, head: str, train: Any, seed: int, qubits: int, layers: int) -> torch.nn.Module:
    from glassbox.config import ModelConfig
    from glassbox.nn import build_model
    from glassbox.nn.quantum import ClassicalHead, QuantumHead

    torch.manual_seed(seed)
    if setting == "transformer":
        cfg = ModelConfig(head=head, qubits=qubits, quantum_layers=layers)
        return build_model(cfg, train)
    n_classes = train.n_classes
    if head == "linear":
        return torch.nn.Linear(FEATURES, n_classes)
    cls = QuantumHead if head == "quantum" else ClassicalHead
    return cls(FEATURES, n_classes, qubits=qubits, layers=layers)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def fit_one(setting: str, head: str, seed: int, epochs: int, qubits: int, layers: int, lr: float) -> dict:
    from glassbox.config import TrainConfig
    from glassbox.train import Trainer

    train, val, test = reduce_features(seed)
    model = make_model(setting, head, train, seed, qubits, layers)
    cfg = TrainConfig(epochs=epochs, lr=lr, patience=None, threads=1)
    # One untimed pass in eval mode (no dropout, so no random numbers drawn): the circuit's
    # first call sets PennyLane up, which would otherwise be charged to the first seed's epochs.
    model.eval()
    model(train.X[:64]).sum().backward()
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    trainer = Trainer(model, cfg, seed=seed).fit(train, val)
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate(test)
    head_module = getattr(model, "head", model)
    return {
        "accuracy": float(metrics["accuracy"]),
        "auroc": float(metrics["auroc"]),
        "params": _params(model),
        "head_params": _params(head_module),
        "seconds_per_epoch": seconds / epochs,
        "best_epoch": trainer.best_epoch_,
    }


def _stats(xs: list[float]) -> dict[str, Any]:
    return {
        "mean": round(float(np.mean(xs)), 4),
        "std": round(float(np.std(xs, ddof=1)), 4) if len(xs) > 1 else 0.0,
        "per_seed": [round(float(x), 4) for x in xs],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting in SETTINGS:
        out[setting] = {}
        for head in HEADS:
            mine = [r for r in runs if r["setting"] == setting and r["head"] == head]
            if not mine:
                continue
            out[setting][head] = {
                "accuracy": _stats([r["accuracy"] for r in mine]),
                "auroc": _stats([r["auroc"] for r in mine]),
                "seconds_per_epoch": _stats([r["seconds_per_epoch"] for r in mine]),
                "params": mine[0]["params"],
                "head_params": mine[0]["head_params"],
            }
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _csv(kind: type) -> Any:
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="seed 0, 3 epochs")
    p.add_argument("--seeds", type=_csv(int), default=None, help="seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every fit (default 30)")
    p.add_argument("--lr", type=float, default=0.01, help="AdamW learning rate of every fit")
    p.add_argument("--qubits", type=int, default=FEATURES, help="qubits of both small heads")
    p.add_argument("--layers", type=int, default=2, help="circuit layers (and the classical head's size)")
    p.add_argument("--heads", type=_csv(str), default=list(HEADS), help=",".join(HEADS))
    args = p.parse_args(argv)
    unknown = [h for h in args.heads if h not in HEADS]
    if unknown:
        p.error(f"unknown head {unknown[0]}; choose from {', '.join(HEADS)}")
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    args.epochs = args.epochs or (3 if args.quick else 30)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    runs = []
    try:
        for seed in args.seeds:
            for setting in SETTINGS:
                for head in args.heads:
                    res = fit_one(setting, head, seed, args.epochs, args.qubits, args.layers, args.lr)
                    runs.append({"setting": setting, "head": head, "seed": seed, **res})
                    print(
                        f"[quantum] seed {seed} {setting} {head}: acc {res['accuracy']:.3f}"
                        f" auc {res['auroc']:.3f}, {res['seconds_per_epoch']:.2f} s/epoch",
                        file=sys.stderr,
                    )
    finally:
        torch.set_num_threads(threads)
    from glassbox.config import ModelConfig
    from glassbox.run import _git_commit

    model = ModelConfig(head="quantum", qubits=args.qubits, quantum_layers=args.layers)
    return {
        "benchmark": "quantum",
        "commit": _git_commit(),
        "settings": {
            "data": "breast-cancer, split 65/15/20 by seed, 4 whitened PCA components fitted on train",
            "seeds": args.seeds,
            "epochs": args.epochs,
            "optimizer": f"adamw, lr {args.lr}, batch 64, cosine, no early stopping, best val accuracy kept",
            "qubits": args.qubits,
            "layers": args.layers,
            "transformer": model.model_dump(include={"dim", "depth", "heads", "mlp_ratio", "dropout"}),
            "std": "sample (ddof 1) over seeds",
            "quick": args.quick,
        },
        "results": summarize(runs),
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": 1},
        "torch": torch.__version__,
        "pennylane": _version("pennylane"),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=2)
    print()
