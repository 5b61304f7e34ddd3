"""run_recipe: a Recipe, stage by stage, inside a Run folder.

Stages: load and check the data (before any folder exists, so bad input
leaves nothing behind), split, optionally flip labels, optionally drop the
lowest-valued rows of an earlier run (cleaning), build the model, train with
checkpoints (and the valuation stage's callbacks), evaluate on the held-out
test split, save the model, write predictions, values and the report. Later
capabilities (ledger, export) join as callbacks and stages here, never
inside the Trainer.

>>> import tempfile
>>> from glassbox.config import load_recipe
>>> r = load_recipe(None, ["data.source=iris", "preset=fast", "train.epochs=2", "report.enabled=false"])
>>> run = run_recipe(r, tempfile.mkdtemp())
>>> run.meta()["status"]
'completed'
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

from glassbox.analysis import check_analyses
from glassbox.config import Recipe, load_recipe, render
from glassbox.ledger.chain import file_sha256
from glassbox.run import Run, _git_commit
from glassbox.train.callbacks import Callback

CHECKPOINTS = "checkpoints"


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(recipe: Recipe, clean: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load, split and (if asked) corrupt and clean the data; everything here is seeded by the recipe.

    ``clean`` (``{"values": path, "fraction": f}``) drops the lowest-valued
    fraction of the training rows, as ``glassbox train --drop-lowest`` asks.
    """
    from glassbox.data import flip_labels, load_dataset, split_dataset

    d = recipe.data
    full = load_dataset(d)
    train, val, test = split_dataset(full, d.val_fraction, d.test_fraction, seed=recipe.seed)
    flipped = None
    if d.label_noise > 0:
        train, positions = flip_labels(train, d.label_noise, seed=recipe.seed)
        flipped = train.index[positions].tolist()  # source row ids, so they survive any later subset
    cleaning = None
    if clean is not None:
        from glassbox.valuation.cleaning import drop_lowest

        train, cleaning = drop_lowest(train, clean["values"], clean["fraction"])
        if flipped is not None:
            cleaning["flipped_dropped"] = len(set(cleaning["dropped_rows"]) & set(flipped))
    pool = train  # every training row, labels or not: what pretraining reads
    if d.label_fraction < 1:
        from glassbox.data.splits import labeled_subset
        from glassbox.errors import UserError

        if train.task != "classification":
            raise UserError(
                f"data.label_fraction={d.label_fraction} is for classification; {train.task} data has no"
                " labels to withhold: set data.label_fraction=1"
            )
        train = train.subset(labeled_subset(train.y.numpy(), fraction=d.label_fraction, seed=recipe.seed))
    return {
        "full": full,
        "train": train,
        "val": val,
        "test": test,
        "pool": pool,
        "flipped": flipped,
        "cleaning": cleaning,
    }


def _tree_sha256(root: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """One hash over the files under ``root``: sorted relative paths and their contents' hashes."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        if suffixes is None or p.suffix in suffixes:
            h.update(f"{p.relative_to(root).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def code_fingerprint() -> dict[str, Any]:
    """Which glassbox made the run: version, git commit, and a hash over its installed sources."""
    import glassbox

    return {
        "glassbox_version": glassbox.__version__,
        "git_commit": _git_commit(),
        "sources_sha256": _tree_sha256(Path(glassbox.__file__).parent, (".py", ".yaml", ".j2")),
    }


def record_provenance(run: Run, recipe: Recipe, data: dict[str, Any]) -> None:
    """The code and dataset entries of the ledger: what made the run and exactly which rows it used.

    The dataset entry hashes every split as the model saw it (after label
    noise and cleaning) and ``splits.json`` lists their source row ids, so a
    reviewer can rebuild the data and compare digests. A user's own file is
    hashed as it was on disk.
    """
    import platform

    import torch

    run.record(
        "code", data={**code_fingerprint(), "python": platform.python_version(), "torch": torch.__version__}
    )
    splits = {name: data[name] for name in ("train", "val", "test")}
    if data.get("pool") is not None and data["pool"] is not data["train"]:
        splits["pool"] = data["pool"]  # data.label_fraction < 1: training rows with and without labels
    source = recipe.data.source
    info: dict[str, Any] = {
        "source": source,
        "digests": {name: d.digest() for name, d in splits.items()},
        "rows": {name: len(d) for name, d in splits.items()},
        "label_noise": recipe.data.label_noise,
    }
    for prefix in ("csv:", "text:", "images:"):
        if source.startswith(prefix):
            path = Path(source[len(prefix) :]).expanduser()
            info["source_sha256"] = _tree_sha256(path) if path.is_dir() else file_sha256(path)
    if data["cleaning"] is not None:
        info["cleaning"] = {k: data["cleaning"][k] for k in ("values", "fraction", "dropped")}
    run.write_json(
        "splits.json",
        {name: {"rows": len(d), "source_rows": d.index.tolist()} for name, d in splits.items()},
        about=info,
    )


def _predictions_csv(test: Any, prob: Any) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "label", "predicted", *[f"p_{c}" for c in test.classes]])
    for rid, y, p in zip(test.index.tolist(), test.y.tolist(), prob, strict=True):
        w.writerow([rid, test.classes[y], test.classes[int(p.argmax())], *[f"{v:.6g}" for v in p]])
    return buf.getvalue()


def run_recipe(
    recipe: Recipe,
    out: str | Path = "runs",
    *,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
    clean: dict[str, Any] | None = None,
    init: str | Path | None = None,
) -> Run:
    """Run a recipe in a new folder under ``out``; returns the finished Run.

    ``clean``: ``{"values": "runs/<run>/values.csv", "fraction": 0.1}`` retrains
    without the lowest-valued tenth of the training rows (see glassbox.valuation.cleaning).
    ``init``: a run folder (from ``glassbox pretrain``) whose encoder the model starts from.
    """
    from glassbox.train import distributed
    from glassbox.valuation.stage import ValuationStage

    d = distributed.init()  # under torchrun: join the job; otherwise one process
    data = prepare_data(recipe, clean)  # bad data fails here, before any run folder exists
    _check_ssl(recipe, data, init)  # and a pretrain section or --init that cannot apply
    _check_distributed(recipe, d)
    stage = ValuationStage(recipe.valuation, data["train"], data["val"], recipe.seed)  # and bad valuation
    check_analyses(recipe, data)  # and explain/audit sections that cannot run on this data
    if not d.main:  # a worker: rank 0 makes the folder, this rank trains its shards beside it
        run_path = Path(distributed.broadcast_object(None))
        _train_worker(run_path, recipe, data, stage, resume=False, init=init)
        return Run(run_path)
    run = Run.create(out, recipe.name, seed=recipe.seed, recipe=recipe.name, world_size=d.world)
    _announce(run, d)
    with run:
        run.write_text("config.yaml", render(recipe))
        record_provenance(run, recipe, data)
        if data["flipped"] is not None:
            run.write_json("label_noise.json", {"fraction": recipe.data.label_noise, "rows": data["flipped"]})
        if data["cleaning"] is not None:
            run.update_meta(cleaning=data["cleaning"])
        _train_and_report(run, recipe, data, stage, callbacks or [], progress, resume=False, init=init)
    return run


def _check_distributed(recipe: Recipe, d: Any) -> None:
    from glassbox.errors import UserError

    if d.active and recipe.tune is not None:
        raise UserError(
            "tune: (preset: best) searches in one process; run the search without --nproc, then train"
            " its config_tuned.yaml with --nproc N"
        )
    if d.active and recipe.pretrain is not None:
        raise UserError(
            "pretrain: runs in one process; pretrain first (glassbox pretrain RECIPE), then train"
            " with --init RUN --nproc N and --set pretrain=null"
        )
    if d.active and recipe.distill is not None:
        raise UserError("distill: trains in one process; run it without --nproc")


def _announce(run: Run, d: Any) -> None:
    """Under torchrun: tell the other ranks, and the launcher, where the run folder is."""
    import os

    from glassbox.train import distributed

    if not d.active:
        return
    distributed.broadcast_object(str(run.path))
    run_file = os.environ.get(distributed.RUN_FILE_ENV)
    if run_file:
        Path(run_file).write_text(str(run.path))


def _train_worker(
    run_path: Path, recipe: Recipe, data: dict[str, Any], stage: Any, *, resume: bool, init: Any
) -> None:
    """What a rank other than 0 does: train its shard of every step, write only its own log."""
    import torch

    from glassbox.nn import build_model
    from glassbox.train import Trainer, distributed

    handler = distributed.rank_log(run_path)
    try:
        if recipe.train.threads is not None:
            torch.set_num_threads(recipe.train.threads)
        _seed_everything(recipe.seed)
        model = build_model(recipe.model, data["pool"])
        if init is not None:
            from glassbox.ssl.stage import load_encoder

            load_encoder(model, init)
        if recipe.train.head_only:
            from glassbox.ssl.stage import freeze_encoder

            freeze_encoder(model)
        callbacks = [distributed.StepLog(), *stage.callbacks()]
        trainer = Trainer(model, recipe.train, callbacks=callbacks, seed=recipe.seed,
                          checkpoint_dir=run_path / CHECKPOINTS)  # fmt: skip
        trainer.fit(data["train"], data["val"], resume=resume)
    finally:
        distributed.close_log(handler)
    distributed.shutdown()  # with rank 0, which then records every rank's log


def _check_ssl(recipe: Recipe, data: dict[str, Any], init: str | Path | None) -> None:
    if recipe.pretrain is not None:
        from glassbox.ssl.base import check_kind

        check_kind(recipe.pretrain.method, data["train"].kind)
    if init is not None:
        from glassbox.ssl.stage import check_init

        check_init(init, recipe, data["train"])


def run_pretrain(recipe: Recipe, out: str | Path = "runs", *, progress: bool | None = None) -> Run:
    """``glassbox pretrain``: pretrain the recipe's encoder on its unlabeled training rows, nothing else.

    The run folder holds the encoder (``model.safetensors``, with an untrained
    head), ``pretrain.json``, a few-shot table (``fewshot.json``: 1 and 5
    labels per class) and the report; ``glassbox train RECIPE --init RUN``
    fine-tunes from it. Without a ``pretrain:`` section the defaults apply.
    """
    import torch

    from glassbox.config import PretrainConfig
    from glassbox.nn import build_model, save_model
    from glassbox.ssl.stage import run_pretraining

    if recipe.pretrain is None:
        recipe = recipe.model_copy(update={"pretrain": PretrainConfig()})
    data = prepare_data(recipe)
    _check_ssl(recipe, data, None)
    run = Run.create(out, f"{recipe.name}-pretrain", seed=recipe.seed, recipe=recipe.name, kind="pretrain")
    with run:
        run.write_text("config.yaml", render(recipe))
        record_provenance(run, recipe, data)
        if recipe.train.threads is not None:
            torch.set_num_threads(recipe.train.threads)
        _seed_everything(recipe.seed)
        model = build_model(recipe.model, data["pool"])
        record = run_pretraining(run, recipe, model, data["pool"], progress)
        save_model(model, run.path)
        run.record("model", ["model.safetensors", "model.json"])
        summary = {k: record[k] for k in ("method", "rows", "seconds")}
        summary["final_loss"] = record["history"][-1]["pretrain_loss"] if record["history"] else None
        run.update_meta(pretrain=summary)
        if data["train"].task == "classification":
            from glassbox.ssl.fewshot import FEWSHOT_FILE, fewshot_report

            shots = [k for k in (1, 5) if k <= int(data["pool"].y.bincount().min())]
            table = fewshot_report(model, data["pool"], data["test"], shots, seed=recipe.seed)
            run.write_json(FEWSHOT_FILE, table)
        if recipe.report.enabled:
            from glassbox.analysis import write_pretrain_report

            write_pretrain_report(run, recipe, data)
    return run


def resume_run(
    run_dir: str | Path, *, callbacks: list[Callback] | None = None, progress: bool | None = None
) -> Run:
    """Continue a killed run from its latest checkpoint, in its own folder, with its own recipe."""
    from glassbox.errors import UserError
    from glassbox.train.checkpoint import latest_checkpoint
    from glassbox.valuation.stage import ValuationStage

    run = Run(run_dir)
    if not (run.path / "config.yaml").exists() or not (run.path / "meta.json").exists():
        raise UserError(f"{run_dir} is not a glassbox run folder (no config.yaml/meta.json); give runs/<run>")
    if run.meta().get("status") == "completed":
        raise UserError(f"{run_dir} already completed; there is nothing to resume")
    if latest_checkpoint(run.path / CHECKPOINTS) is None:
        raise UserError(
            f"{run_dir} has no checkpoint to resume from; start the run afresh with glassbox train"
        )
    recipe = load_recipe(run.path / "config.yaml")
    cleaning = run.meta().get("cleaning")
    clean = None if cleaning is None else {"values": cleaning["values"], "fraction": cleaning["fraction"]}
    from glassbox.train import distributed

    d = distributed.init()
    data = prepare_data(recipe, clean)
    stage = ValuationStage(recipe.valuation, data["train"], data["val"], recipe.seed)
    if not d.main:
        distributed.broadcast_object(None)
        _train_worker(run.path, recipe, data, stage, resume=True, init=None)
        return run
    run.update_meta(status="running", resumed=True, error=None, world_size=d.world)
    _announce(run, d)
    with run:
        _train_and_report(run, recipe, data, stage, callbacks or [], progress, resume=True)
    return run


def _train_and_report(
    run: Run,
    recipe: Recipe,
    data: dict[str, Any],
    stage: Any,
    callbacks: list[Callback],
    progress: bool | None,
    resume: bool,
    init: str | Path | None = None,
) -> None:
    import torch

    from glassbox.nn import build_model, save_model
    from glassbox.train import ProgressBar, RunLogger, Trainer

    if recipe.train.threads is not None:
        torch.set_num_threads(recipe.train.threads)
    _seed_everything(recipe.seed)
    train, val, test = data["train"], data["val"], data["test"]
    if recipe.tune is not None and not resume:
        from glassbox.tune import apply_best, search

        result = search(recipe, train, progress=progress)  # the training split alone
        run.write_json("tune.json", result, about={"best_params": result["best_params"]})
        recipe = apply_best(recipe, result)
        run.write_text("config_tuned.yaml", render(recipe))
    elif recipe.tune is not None and (run.path / "config_tuned.yaml").is_file():
        from glassbox.config import load_recipe_text

        recipe = load_recipe_text((run.path / "config_tuned.yaml").read_text())  # what was searched
    # Input statistics from every training row: with data.label_fraction < 1 the
    # labeled few would give a poor estimate, and the unlabeled rows are known anyway.
    model = build_model(recipe.model, data["pool"])
    if init is not None:
        from glassbox.ssl.stage import load_encoder

        run.record("init", data=load_encoder(model, init))
    if recipe.pretrain is not None and not resume:  # a resumed run's checkpoint holds the result
        from glassbox.ssl.stage import run_pretraining

        run_pretraining(run, recipe, model, data["pool"], progress)
    if recipe.train.head_only:
        from glassbox.ssl.stage import freeze_encoder

        freeze_encoder(model)
    if recipe.sensitivity is not None:
        from glassbox.analysis import sensitivity_tracker

        callbacks = [*callbacks, sensitivity_tracker(recipe, data)]
    if recipe.distill is not None:
        from glassbox.train.distill import distill_callback

        distill, teacher = distill_callback(recipe.distill, model.spec_)
        if not resume:  # a resumed run recorded its teacher when it started
            run.record("distill", data=teacher)  # what the model learnt from, beside its data
        callbacks = [*callbacks, distill]
    if recipe.dynamics is not None:
        from glassbox.audit.dynamics import DynamicsTracker

        g = torch.Generator().manual_seed(recipe.seed)
        probe = train.X[torch.randperm(len(train), generator=g)[: recipe.dynamics.probes]]
        callbacks = [*callbacks, DynamicsTracker(probe, recipe.dynamics.every)]
    from glassbox.train import distributed

    d = distributed.current()
    handler = distributed.rank_log(run.path) if d.active else None
    steplog = [distributed.StepLog()] if d.active else []
    trainer = Trainer(
        model,
        recipe.train,
        callbacks=[RunLogger(run), ProgressBar(progress), *steplog, *stage.callbacks(), *callbacks],
        seed=recipe.seed,
        checkpoint_dir=run.path / CHECKPOINTS,
    )
    import time

    fit_start = time.perf_counter()
    try:
        trainer.fit(train, val, resume=resume)
    finally:
        if handler is not None:
            distributed.close_log(handler)
    if d.active:
        distributed.shutdown()  # every rank's log is closed; the rest is rank 0's alone
        logs = sorted(p.relative_to(run.path).as_posix() for p in (run.path / "logs").glob("rank*.log"))
        run.record("artifact", logs, data={"world_size": d.world})

    test_metrics = trainer.evaluate(test)
    run.log(
        {"split": "test", "step": trainer.global_step_, **{f"test_{k}": v for k, v in test_metrics.items()}}
    )
    save_model(model, run.path)
    run.record("model", ["model.safetensors", "model.json"])
    if recipe.dynamics is not None and recipe.dynamics.dpo_steps and test.task == "lm":
        import copy

        from glassbox.audit.squeeze import dpo_squeeze

        prompts = test.X[:8, : min(24, test.X.shape[1] // 2)]
        steps = recipe.dynamics.dpo_steps
        records = dpo_squeeze(copy.deepcopy(model), prompts, steps=steps, seed=recipe.seed)
        run.write_json("dpo_squeeze.json", records)
    stage.finish(run, trainer, data["flipped"])  # values*.csv; the report reads them back
    fit_seconds = time.perf_counter() - fit_start
    if train.task == "classification":
        prob = trainer.predict_proba(test)
        run.write_text("predictions.csv", _predictions_csv(test, prob))
        if recipe.report.baselines and train.kind in ("tabular", "image"):
            from glassbox.baselines import BASELINES_FILE, comparison, fit_baselines, scores

            mine = scores(test.y.numpy(), prob, test.n_classes)
            rows = fit_baselines(train, test, seed=recipe.seed)
            record = {"glassbox": {"test": mine, "fit_seconds": round(fit_seconds, 2)}, "baselines": rows,
                      "comparison": comparison(mine, rows)}  # fmt: skip
            run.write_json(BASELINES_FILE, record)
    run.update_meta(
        results={f"test_{k}": v for k, v in test_metrics.items()},
        best_epoch=trainer.best_epoch_,
        stopped_early=trainer.stopped_early_,
        steps=trainer.global_step_,
        data={"train": len(train), "val": len(val), "test": len(test)},
    )
    if recipe.sensitivity is not None:
        from glassbox.analysis import SENSITIVITY, measure_sensitivity

        run.write_json(SENSITIVITY, measure_sensitivity(recipe, model, data))
    if recipe.model.head == "quantum" and train.task == "classification":
        run.write_json("quantum_twin.json", _classical_twin(recipe, data, model, test_metrics, trainer))
    if recipe.explain is not None:
        from glassbox.analysis import EXPLANATIONS, explain_model

        run.write_json(EXPLANATIONS, explain_model(recipe.explain, model, data, recipe.seed))
    if recipe.audit is not None:
        from glassbox.analysis import AUDIT, audit_model

        run.write_json(AUDIT, audit_model(recipe.audit, model, data, recipe.seed))
    if recipe.report.enabled:
        from glassbox.analysis import write_run_report

        write_run_report(run, recipe, data)
    # Checkpoints exist to survive a kill; a completed run's weights are model.safetensors.
    run.remove(CHECKPOINTS)


def _classical_twin(recipe: Recipe, data: dict[str, Any], model: Any, metrics: dict, trainer: Any) -> dict:
    """A quantum head is always reported beside a classical head of the same size on the same features.

    The twin is the same recipe with ``model.head: classical_small`` (same
    input layer, squashing and output layer; a small MLP with about as many
    parameters as the circuit), trained on the same rows with the same seed.
    """
    import time

    import torch

    from glassbox.nn import build_model
    from glassbox.train import Trainer

    twin_recipe = recipe.model_copy(
        update={"model": recipe.model.model_copy(update={"head": "classical_small"})}
    )
    _seed_everything(recipe.seed)
    twin = build_model(twin_recipe.model, data["pool"])
    start = time.perf_counter()
    twin_trainer = Trainer(twin, recipe.train, seed=recipe.seed).fit(data["train"], data["val"])
    seconds = time.perf_counter() - start
    twin_metrics = twin_trainer.evaluate(data["test"])

    def head_params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.head.parameters())

    return {
        "quantum": {
            "test": metrics, "head_parameters": head_params(model), "best_epoch": trainer.best_epoch_,
            "qubits": recipe.model.qubits, "layers": recipe.model.quantum_layers,
        },
        "classical_small": {
            "test": twin_metrics, "head_parameters": head_params(twin),
            "best_epoch": twin_trainer.best_epoch_, "train_seconds": round(seconds, 2),
        },
    }  # fmt: skip


def report_sections(run: Run, data: dict[str, Any], valuation: Any, test_metrics: dict) -> list[dict]:
    """The valuation and cleaning sections of the report, when those stages ran."""
    from glassbox.report.valuation import cleaning_section, valuation_section

    sections = []
    train = data["train"]
    if valuation is not None:
        labels = [train.classes[int(c)] for c in train.y.tolist()] if train.classes else [""] * len(train)
        sections.append(
            valuation_section(
                valuation.values,
                source_ids=train.index.numpy(),
                labels=labels,
                noisy=valuation.noisy,
                kind=train.kind,
                examples=train.X.numpy() if train.kind in ("image", "tabular") else None,
                feature_names=train.feature_names,
                primary=valuation.primary,
                notes=valuation.notes,
            )
        )
    cleaning = data["cleaning"]
    if cleaning is not None:
        base_dir = Path(cleaning["values"]).resolve().parent
        base_results: dict[str, Any] = {}
        if (base_dir / "meta.json").is_file():
            base_results = Run(base_dir).meta().get("results", {})
        sections.append(
            cleaning_section(
                base={"run": base_dir.name, "results": base_results},
                cleaned={"run": run.path.name, "results": {f"test_{k}": v for k, v in test_metrics.items()}},
                fraction=cleaning["fraction"],
                dropped=cleaning["dropped"],
                flipped_dropped=cleaning.get("flipped_dropped"),
            )
        )
    return sections


def run_seeds(recipe: Recipe, out: str | Path, n: int, **kwargs: Any) -> dict[str, Any]:
    """``glassbox train RECIPE --seeds N``: the recipe at seeds s, s+1, ..., each its own run folder.

    Returns (and writes to ``out/<time>-<name>-seeds<N>.json``) the mean,
    sample standard deviation and per-seed values of every test metric, for
    glassbox's model and for each baseline.
    """
    import datetime

    import numpy as np

    from glassbox.run import atomic_write_json

    per: dict[str, dict[str, list[float]]] = {}
    folders = []
    for s in range(recipe.seed, recipe.seed + n):
        run = run_recipe(recipe.model_copy(update={"seed": s}), out, **kwargs)
        folders.append(str(run.path))
        meta = run.meta()
        for k, v in meta.get("results", {}).items():
            per.setdefault("glassbox", {}).setdefault(k.removeprefix("test_"), []).append(float(v))
        base = run.path / "baselines.json"
        if base.is_file():
            import json

            record = json.loads(base.read_text())
            for row in record["baselines"]:
                for k, v in row["test"].items():
                    if v is not None:
                        per.setdefault(row["name"], {}).setdefault(k, []).append(float(v))
            for k in ("balanced_accuracy", "log_loss", "roc_auc"):
                v = record["glassbox"]["test"].get(k)
                if v is not None:
                    per["glassbox"].setdefault(k, []).append(float(v))
    summary = {
        model: {
            k: {
                "mean": float(np.mean(v)),
                "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "per_seed": [round(x, 6) for x in v],
            }
            for k, v in metrics.items()
            if v
        }
        for model, metrics in per.items()
    }
    result = {"recipe": recipe.name, "seeds": list(range(recipe.seed, recipe.seed + n)), "runs": folders,
              "summary": summary}  # fmt: skip
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(out) / f"{stamp}-{recipe.name}-seeds{n}.json"
    atomic_write_json(path, result)
    result["file"] = str(path)
    return result
