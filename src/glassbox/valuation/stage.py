"""The valuation stage of a run: what a recipe's ``valuation:`` section adds around training.

Before training it checks that the asked-for methods fit the data (so a bad
combination fails before any folder exists) and hands the Trainer its
callbacks: ``InRunValuation`` for in-run values, ``EpochSnapshots`` for
TracIn's checkpoints. After training it computes the baselines, writes
``values.csv`` (the main method) and ``values_<baseline>.csv`` into the run
folder, and returns what the report shows.

``values.csv`` columns: ``index`` (0-based row of the source data; for a CSV
the data row after the header), ``value`` (positive helps, negative hurts),
``label`` (the training label, after any flipping), ``noisy`` (1 where
``data.label_noise`` flipped that row's label, else 0).

>>> import tempfile
>>> from glassbox.config import load_recipe
>>> from glassbox.pipeline import run_recipe
>>> r = load_recipe(None, ["data.source=iris", "preset=fast", "train.epochs=2", "report.enabled=false",
...                        "valuation.method=inrun", "valuation.baselines=[knn_shapley]"])
>>> run = run_recipe(r, tempfile.mkdtemp())
>>> (run.path / "values.csv").read_text().splitlines()[0]
'index,value,label,noisy'
>>> sorted(run.meta()["valuation"]["files"])
['values.csv', 'values_knn_shapley.csv']
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from glassbox.errors import UserError
from glassbox.train.callbacks import Callback

if TYPE_CHECKING:
    from glassbox.config import ValuationConfig
    from glassbox.data.base import Dataset
    from glassbox.run import Run
    from glassbox.train.trainer import Trainer

LOO_MAX_ROWS = 200  # leave-one-out retrains once per row


class EpochSnapshots(Callback):
    """Keeps ``count`` copies of the weights, evenly spaced over the epochs actually run, with their lr.

    TracIn-CP sums gradient alignments over such checkpoints. Early stopping
    means the number of epochs is unknown in advance, so snapshots are taken
    every ``every`` epochs and, whenever more than ``2 * count`` pile up,
    every other one is dropped and ``every`` doubles; at the end ``count``
    evenly spaced ones remain. Kept in memory (and in the trainer's
    checkpoints, so ``--resume`` keeps them too).
    """

    def __init__(self, count: int) -> None:
        self.count = count

    def on_fit_start(self, trainer: Trainer) -> None:
        self.every = 1
        self.weights_: list[dict[str, torch.Tensor]] = []
        self.lrs_: list[float] = []
        self.epochs_: list[int] = []

    def _take(self, trainer: Trainer, epoch: int) -> None:
        self.weights_.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        self.lrs_.append(float(trainer.optimizer_.param_groups[0]["lr"]))
        self.epochs_.append(epoch)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch % self.every:
            return
        self._take(trainer, epoch)
        if len(self.weights_) > 2 * self.count:
            self.weights_, self.lrs_, self.epochs_ = self.weights_[1::2], self.lrs_[1::2], self.epochs_[1::2]
            self.every *= 2

    def on_fit_end(self, trainer: Trainer) -> None:
        if not self.weights_:  # no epoch finished: the final weights
            self._take(trainer, 0)
        if len(self.weights_) > self.count:
            keep = np.unique(np.linspace(0, len(self.weights_) - 1, self.count).round().astype(int))
            self.weights_ = [self.weights_[i] for i in keep]
            self.lrs_ = [self.lrs_[i] for i in keep]
            self.epochs_ = [self.epochs_[i] for i in keep]

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights_, "lrs": self.lrs_, "epochs": self.epochs_, "every": self.every}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights_, self.lrs_ = list(state["weights"]), list(state["lrs"])
        self.epochs_, self.every = list(state["epochs"]), int(state["every"])


@dataclass
class ValuationResult:
    """What the stage found: values per method (aligned with the training rows), for files and report."""

    values: dict[str, np.ndarray]
    primary: str
    noisy: np.ndarray | None  # (N,) bool, or None when no labels were flipped
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def features(data: Dataset, like: Dataset) -> np.ndarray:
    """Rows as flat float vectors standardized by ``like``'s statistics: what KNN-Shapley measures."""
    X = data.X.reshape(len(data), -1).double().numpy()
    ref = like.X.reshape(len(like), -1).double().numpy()
    mean, std = ref.mean(0), ref.std(0)
    return (X - mean) / np.where(std > 1e-12, std, 1.0)


class ValuationStage:
    """Checks, callbacks and outputs of one run's valuation section."""

    def __init__(self, cfg: ValuationConfig, train: Dataset, val: Dataset, seed: int = 0) -> None:
        self.cfg, self.train, self.val, self.seed = cfg, train, val, seed
        methods = [cfg.method, *cfg.baselines]
        if cfg.method == "none":
            if cfg.baselines:
                raise UserError(
                    "valuation.baselines are compared against a main method; set valuation.method: inrun"
                )
            return
        if cfg.method in cfg.baselines:
            raise UserError(f"valuation.baselines lists '{cfg.method}', which is already valuation.method")
        if len(val) == 0:
            raise UserError("data valuation measures against validation data; set data.val_fraction above 0")
        gradient_free = {"knn_shapley", "tracin", "loo"} & set(methods)
        if train.task != "classification" and gradient_free:
            raise UserError(
                f"valuation: {', '.join(sorted(gradient_free))} need class labels, but '{train.name}' is "
                "language-model data; use valuation.method: inrun with no baselines"
            )
        if "loo" in methods and len(train) > LOO_MAX_ROWS:
            raise UserError(
                f"valuation.baselines: loo retrains once per training row and is limited to "
                f"{LOO_MAX_ROWS} rows; this run has {len(train)}: drop loo or use knn_shapley"
            )
        if "tracin" in methods:
            try:
                import captum  # noqa: F401
            except ImportError:
                raise UserError(
                    "valuation.baselines: tracin needs Captum; install the explain extra: "
                    "pip install -c constraints.txt -e '.[explain]'"
                ) from None
        self.inrun = None
        self.snapshots = EpochSnapshots(cfg.tracin_checkpoints) if "tracin" in methods else None

    @property
    def enabled(self) -> bool:
        return self.cfg.method != "none"

    def callbacks(self) -> list[Callback]:
        if not self.enabled:
            return []
        from glassbox.valuation.inrun import InRunValuation

        out: list[Callback] = []
        if self.cfg.method == "inrun":
            c = self.cfg
            self.inrun = InRunValuation(
                order=c.order, val_batch=c.val_batch, ghost=c.ghost, seed=self.seed, val=self.val
            )
            out.append(self.inrun)
        if self.snapshots is not None:
            out.append(self.snapshots)
        return out

    def finish(self, run: Run, trainer: Trainer, flipped: list[int] | None) -> ValuationResult | None:
        """Compute what is left, write the CSV files, record a summary in meta.json."""
        if not self.enabled:
            return None
        c, train = self.cfg, self.train
        values: dict[str, np.ndarray] = {}
        notes: list[str] = []
        for method in [c.method, *c.baselines]:
            values[method] = self._compute(method, trainer)
        if self.inrun is not None:
            optimizer = type(trainer.optimizer_).__name__
            notes.append(
                f"In-run Data Shapley ({'second' if c.order == 2 else 'first'} order, {optimizer}-aware): "
                f"each value is the sum over {self.inrun.steps_} training steps of the example's share of "
                f"the drop in validation loss its update caused, {c.val_batch} validation rows per step."
            )
        if "tracin" in values and self.snapshots is not None:
            taken = ", ".join(map(str, self.snapshots.epochs_))
            notes.append(f"TracIn-CP over {len(self.snapshots.weights_)} checkpoints (after epochs {taken}).")
        if "knn_shapley" in values:
            notes.append(f"KNN-Shapley with K = {c.knn_k} on standardized inputs.")
        noisy = None
        if flipped:
            flipped_set = set(flipped)
            noisy = np.array([int(r) in flipped_set for r in train.index.tolist()])
        files = {}
        for method, v in values.items():
            name = "values.csv" if method == c.method else f"values_{method}.csv"
            run.write_text(name, values_csv(v, train, noisy))
            files[name] = method
        summary: dict[str, Any] = {"method": c.method, "files": files, "notes": notes}
        if self.inrun is not None:
            summary.update(order=c.order, steps=self.inrun.steps_, val_batch=c.val_batch)
        if noisy is not None and 0 < noisy.sum() < len(noisy):
            from sklearn.metrics import roc_auc_score

            summary["mislabel_auroc"] = {
                m: float(roc_auc_score(noisy, -np.nan_to_num(v))) for m, v in values.items()
            }
        run.update_meta(valuation=summary)
        return ValuationResult(values, c.method, noisy, notes, summary)

    def _compute(self, method: str, trainer: Trainer) -> np.ndarray:
        from glassbox.valuation import baselines

        train, val = self.train, self.val
        if method == "inrun":
            assert self.inrun is not None
            return self.inrun.values_.copy()
        if method == "knn_shapley":
            return baselines.knn_shapley(
                features(train, train), train.y.numpy(), features(val, train), val.y.numpy(), k=self.cfg.knn_k
            )
        if method == "tracin":
            assert self.snapshots is not None
            snaps = self.snapshots
            return baselines.tracin_cp(trainer.model, snaps.weights_, snaps.lrs_, train, val)
        if method == "loo":
            return baselines.loo_logistic(
                features(train, train), train.y.numpy(), features(val, train), val.y.numpy()
            )
        raise ValueError(f"unknown valuation method {method!r}")


def values_csv(values: np.ndarray, train: Dataset, noisy: np.ndarray | None) -> str:
    """``values.csv``: index (source row), value, label, noisy (1 where the label was flipped)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "value", "label", "noisy"])
    classification = train.task == "classification"
    for i, (rid, v) in enumerate(zip(train.index.tolist(), values.tolist(), strict=True)):
        label = train.classes[int(train.y[i])] if classification else ""
        w.writerow([rid, f"{v:.9g}", label, int(bool(noisy[i])) if noisy is not None else 0])
    return buf.getvalue()
