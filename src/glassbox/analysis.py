"""What a trained run is judged by: explanations, the fairness audit, the model card and the report.

Each of these is a function of the run folder, the run's data and its
saved model, so ``glassbox train`` (through ``pipeline``) and the later verbs
``glassbox explain RUN`` and ``glassbox audit RUN`` share one code path:
compute, write the JSON artifact through the run (into the ledger), then
rebuild ``report.html`` from what the folder holds. Before the report is
written the ledger is sealed, so the model card can quote a Merkle root that
covers the data, code, config, model and every analysis it describes.

>>> import tempfile
>>> from glassbox.config import load_recipe
>>> from glassbox.pipeline import run_recipe
>>> r = load_recipe(None, ["data.source=iris", "preset=fast", "train.epochs=2",
...                        "explain.sample=4", "explain.methods=[integrated_gradients]"])
>>> run = run_recipe(r, tempfile.mkdtemp(), progress=False)
>>> sorted(json.loads((run.path / "explanations.json").read_text())["methods"])
['integrated_gradients']
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glassbox.config import AuditConfig, ExplainConfig, Recipe, render
from glassbox.errors import UserError, did_you_mean
from glassbox.run import Run

if TYPE_CHECKING:
    from torch import nn

    from glassbox.data.base import Dataset

EXPLANATIONS = "explanations.json"
AUDIT = "audit.json"
MODEL_CARD = "model_card.json"
MAX_GROUPS = 20  # a numeric feature with more distinct values than this is not a group


def check_analyses(recipe: Recipe, data: dict[str, Any]) -> None:
    """Fail before any training when the recipe's explain/audit sections cannot run on this data."""
    test = data["test"]
    if recipe.explain is not None:
        _need("captum", "explanations")
        if test.kind not in ("tabular", "image") or test.task != "classification":
            raise UserError(
                f"explain: explanations cover tabular and image classifiers, not {test.kind} data;"
                " remove the explain: section"
            )
        rows = recipe.explain.rows or []
        if any(not 0 <= r < len(test) for r in rows):
            bad = next(r for r in rows if not 0 <= r < len(test))
            raise UserError(
                f"explain.rows: {bad} is not in the test split (0 to {len(test) - 1}); pick others"
            )
    if recipe.sensitivity is not None:
        sensitivity_kind(test)
    if recipe.audit is not None:
        _need("fairlearn", "the fairness audit")
        if test.task != "classification" or test.n_classes != 2:
            raise UserError(
                f"audit: the fairness audit is for binary classifiers; {test.name} has"
                f" {test.n_classes or 'no'} classes; remove the audit: section"
            )
        groups_for(test, recipe.audit.sensitive)


# -- sensitivity ----------------------------------------------------------------------------
SENSITIVITY = "sensitivity.json"


def sensitivity_kind(data: Any) -> str:
    """How a run's inputs are perturbed: bit flips for 0/1 tables, else resampling; patches for images."""
    if data.task != "classification" or data.kind not in ("tabular", "image"):
        raise UserError(
            f"sensitivity: is measured for tabular and image classifiers, not {data.kind} {data.task} data;"
            " remove the sensitivity: section"
        )
    if data.kind == "image":
        return "image"
    binary = bool(((data.X == 0) | (data.X == 1)).all())
    return "boolean" if binary else "tabular"


def sensitivity_tracker(recipe: Recipe, data: dict[str, Any]) -> Any:
    """The callback that follows the model's sensitivity on ``probes`` training rows at epoch ends."""
    import torch

    from glassbox.audit.sensitivity import SensitivityTracker

    cfg, train = recipe.sensitivity, data["train"]
    g = torch.Generator().manual_seed(recipe.seed)
    probe = train.X[torch.randperm(len(train), generator=g)[: cfg.probes]]
    kind = sensitivity_kind(train)
    return SensitivityTracker(
        probe, kind, pool=train.X, every=cfg.every, n_rows=cfg.probes, patch=cfg.patch, draws=cfg.draws,
        seed=recipe.seed,
    )  # fmt: skip


def measure_sensitivity(recipe: Recipe, model: nn.Module, data: dict[str, Any]) -> dict[str, Any]:
    """The trained model's average sensitivity on ``rows`` test rows (replacements from training rows)."""
    import torch

    from glassbox.audit.sensitivity import average_sensitivity, predict_fn

    cfg, test = recipe.sensitivity, data["test"]
    kind = sensitivity_kind(test)
    result = average_sensitivity(
        predict_fn(model), test.X, kind, n_rows=cfg.rows, pool=data["train"].X, patch=cfg.patch,
        draws=cfg.draws, generator=torch.Generator().manual_seed(recipe.seed),
    )  # fmt: skip
    result["positions"] = "features" if test.kind == "tabular" else f"{cfg.patch}x{cfg.patch} patches"
    return result


# -- explanations -------------------------------------------------------------------------
def explain_model(cfg: ExplainConfig, model: nn.Module, data: dict[str, Any], seed: int) -> dict[str, Any]:
    """Explain test predictions as ``cfg`` says (``glassbox.explain.explain``); needs the explain extra."""
    _need("captum", "explanations")
    from glassbox.explain import explain

    test = data["test"]
    return explain(
        model,
        test,
        background=data["train"],
        rows=cfg.rows,
        sample=cfg.sample,
        methods=list(cfg.methods) if cfg.methods is not None else None,
        seed=seed,
        completeness_tol=cfg.completeness_tol,
        max_steps=cfg.max_steps,
        kernel_shap_samples=cfg.kernel_shap_samples,
    )


# -- fairness audit ---------------------------------------------------------------------
def groups_for(data: Dataset, name: str | None) -> tuple[str, np.ndarray]:
    """The group of every row by column ``name``: the held-out sensitive column, or a feature.

    A one-hot family ``col=value`` reads back as ``col``; a numeric feature
    with at most ``MAX_GROUPS`` distinct values is its own grouping.
    """
    if name is None:
        if data.sensitive_name is None:
            raise UserError(
                f"{data.name} has no sensitive column; name one with --sensitive COLUMN or audit.sensitive"
                " (for a CSV, hold it out of the features with data.sensitive)"
            )
        name = data.sensitive_name
    if name == data.sensitive_name and data.sensitive is not None:
        return name, np.asarray(data.sensitive).astype(str)
    names = list(data.feature_names)
    if name in names and data.kind == "tabular":
        col = data.X[:, names.index(name)].numpy()
        distinct = np.unique(col)
        if len(distinct) > MAX_GROUPS:
            raise UserError(
                f"feature '{name}' has {len(distinct)} distinct values; audit groups need a categorical"
                f" column (at most {MAX_GROUPS} values): bin it in your CSV first"
            )
        return name, np.array([f"{v:g}" for v in col])
    family = [j for j, f in enumerate(names) if f.startswith(name + "=")]
    if family and data.kind == "tabular":
        onehot = data.X[:, family].numpy()
        values = np.array([names[j].split("=", 1)[1] for j in family])
        return name, values[onehot.argmax(1)]
    options = sorted(
        {*([data.sensitive_name] if data.sensitive_name else []), *(f.split("=")[0] for f in names)}
    )
    raise UserError(f"no column '{name}' to audit by: {did_you_mean(name, options)}")


def audit_model(cfg: AuditConfig, model: nn.Module, data: dict[str, Any], seed: int) -> dict[str, Any]:
    """Audit test predictions by group (``glassbox.audit.fairness_audit``); needs the explain extra."""
    _need("fairlearn", "the fairness audit")
    from glassbox.audit import fairness_audit
    from glassbox.train.trainer import predict_proba

    test, val = data["test"], data["val"]
    if test.task != "classification" or test.n_classes != 2:
        raise UserError(
            f"the fairness audit is for binary classifiers; {test.name} has {test.n_classes or 'no'} classes"
        )
    positive = cfg.positive if cfg.positive is not None else test.classes[1]
    if positive not in test.classes:
        raise UserError(f"audit.positive '{positive}' is not a class: {did_you_mean(positive, test.classes)}")
    k = test.classes.index(positive)
    name, groups = groups_for(test, cfg.sensitive)
    _, val_groups = groups_for(val, name)
    result = fairness_audit(
        (test.y.numpy() == k).astype(int),
        predict_proba(model, test)[:, k],
        groups,
        val_y=(val.y.numpy() == k).astype(int),
        val_score=predict_proba(model, val)[:, k],
        val_groups=val_groups,
        threshold=cfg.threshold,
        n_boot=cfg.n_boot,
        seed=seed,
        sensitive_name=name,
        positive=positive,
        objective=cfg.objective,
    )
    return result


def _need(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} need {module}: pip install 'glassbox[explain]'")


# -- the report ---------------------------------------------------------------------------
def _read_json(run: Run, name: str) -> Any:
    path = run.path / name
    return json.loads(path.read_text()) if path.is_file() else None


def _predictions(run: Run, test: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Labels and probabilities of the test rows, from predictions.csv."""
    path = run.path / "predictions.csv"
    if not path.is_file() or test.task != "classification":
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    prob = np.array([[float(r[f"p_{c}"]) for c in test.classes] for r in rows])
    return test.y.numpy(), prob


def valuation_from_run(run: Run, train: Dataset) -> Any:
    """The valuation result the report shows, read back from values*.csv and meta.json."""
    from glassbox.valuation.cleaning import read_values
    from glassbox.valuation.stage import ValuationResult

    summary = run.meta().get("valuation")
    if not summary:
        return None
    ids = train.index.tolist()
    values: dict[str, np.ndarray] = {}
    noisy = None
    for name, method in summary["files"].items():
        by_row = read_values(run.path / name)
        values[method] = np.array([by_row[r] for r in ids])
    noise = _read_json(run, "label_noise.json")
    if noise is not None:
        flipped = set(noise["rows"])
        noisy = np.array([r in flipped for r in ids])
    return ValuationResult(values, summary["method"], noisy, summary.get("notes", []), summary)


def write_run_report(
    run: Run, recipe: Recipe, data: dict[str, Any], extra_sections: list[dict] | None = None
) -> None:
    """Rebuild ``report.html`` (and ``model_card.json``) from what the run folder holds.

    ``extra_sections`` (``write_report``'s section dicts) follow the run's own
    analyses; ``glassbox.report.federated`` adds the federation's this way.
    """
    from glassbox.audit.modelcard import model_card
    from glassbox.pipeline import report_sections
    from glassbox.report import write_report
    from glassbox.report.modelcard import card_section

    train, val, test = data["train"], data["val"], data["test"]
    meta = run.meta()
    results = meta.get("results", {})
    test_metrics = {k.removeprefix("test_"): v for k, v in results.items()}
    valuation = valuation_from_run(run, train)
    baselines = _read_json(run, "baselines.json")
    explanations = _read_json(run, EXPLANATIONS)
    audit = _read_json(run, AUDIT)
    sections = report_sections(run, data, valuation, test_metrics)
    if explanations is not None:
        from glassbox.report.explain import explain_section

        images = test.X[explanations["rows"]].numpy() if test.kind == "image" else None
        sections.append(explain_section(explanations, images=images))
    if audit is not None:
        from glassbox.report.audit import audit_section

        sections.append(audit_section(audit))
    if test.task == "lm" and (run.path / "model.json").is_file():
        from glassbox.nn import load_model
        from glassbox.report.lm import lm_facts, lm_section

        facts = lm_facts(load_model(run.path), test, recipe.data.source, recipe.data.max_bytes, recipe.seed)
        sections.append(lm_section({**facts, "test_bits_per_byte": results.get("test_bits_per_byte")}))
    sens = _read_json(run, SENSITIVITY)
    if sens is not None:
        from glassbox.report.sensitivity import sensitivity_section

        curve = [r for r in run.metrics() if "sensitivity" in r]
        sections.append(sensitivity_section(sens, curve))
    twin = _read_json(run, "quantum_twin.json")
    if twin is not None:
        from glassbox.report.quantum import twin_section

        sections.append(twin_section(twin))
    if test.kind == "audio":
        from glassbox.report.audio import audio_report

        audio = audio_report(run, data, recipe.seed)
        if audio is not None:
            sections.append(audio)
    pretrained = _read_json(run, "pretrain.json")
    if pretrained is not None:
        from glassbox.report.ssl import pretrain_section

        sections.append(pretrain_section(pretrained, _read_json(run, "fewshot.json")))
    history = run.metrics()
    if any("dyn_cosine" in r for r in history):
        from glassbox.report.dynamics import dynamics_section

        sections.append(dynamics_section([r for r in history if "dyn_cosine" in r]))
    squeeze = _read_json(run, "dpo_squeeze.json")
    if squeeze:
        from glassbox.report.dynamics import squeeze_section

        sections.append(squeeze_section(squeeze))
    export = _read_json(run, "export/export.json")
    if export is not None:
        from glassbox.report.edge import edge_section

        sections.append(edge_section(export, _read_json(run, "export/report.json")))
    if extra_sections is None and run.meta().get("kind") == "federated":
        # A federated run's own sections, also when explain or audit rebuild its report later.
        from glassbox.report.federated import federated_sections

        extra_sections = federated_sections(run, recipe, data)
    sections += extra_sections or []
    # The card quotes the tree head sealed now: it covers everything above the report.
    head = run.seal()
    card = model_card(
        recipe=recipe.model_dump(mode="json"),
        meta=meta,
        data={
            "summary": data["full"].summary(),
            "splits": {"train": len(train), "val": len(val), "test": len(test)},
        },
        ledger=_ledger_facts(run, head),
        valuation=None if valuation is None else valuation.summary,
        explanations=None if explanations is None else _explain_summary(explanations),
        audit=None if audit is None else _audit_summary(audit),
        baselines=baselines,
    )
    run.write_json(MODEL_CARD, card)
    if baselines is not None:
        from glassbox.report.baselines import baselines_section

        sections.insert(0, baselines_section(baselines))
    sections.insert(0, card_section(card))
    summary = data["full"].summary()
    summary["splits"] = {"train": len(train), "val": len(val), "test": len(test)}
    if data["flipped"] is not None:
        summary["label_noise"] = f"{len(data['flipped'])} training labels flipped (label_noise.json)"
    predictions = _predictions(run, test)
    with run.artifact("report.html") as tmp:
        write_report(
            tmp,
            title=recipe.report.title or recipe.name,
            config_yaml=render(recipe),
            data_summary=summary,
            history=[r for r in run.metrics() if r.get("split") != "test"],
            test_metrics=test_metrics,
            y_true=None if predictions is None else predictions[0],
            y_prob=None if predictions is None else predictions[1],
            classes=train.classes or None,
            meta=run.meta(),
            extra_sections=sections,
        )


def write_pretrain_report(run: Run, recipe: Recipe, data: dict[str, Any]) -> None:
    """``report.html`` of a ``glassbox pretrain`` run: data, configuration, the pretraining section."""
    from glassbox.nn import load_model
    from glassbox.report import write_report
    from glassbox.report.ssl import encoder_figures, pretrain_section

    record = _read_json(run, "pretrain.json") or {}
    figures = encoder_figures(load_model(run.path), data["test"], data["pool"], recipe.pretrain, recipe.seed)
    summary = data["full"].summary()
    summary["unlabeled rows"] = f"{record.get('rows')} training rows, labels unused"
    run.seal()
    with run.artifact("report.html") as tmp:
        write_report(
            tmp,
            title=f"{recipe.report.title or recipe.name}: pretrained encoder",
            config_yaml=render(recipe),
            data_summary=summary,
            history=[],
            test_metrics={},
            meta=run.meta(),
            extra_sections=[pretrain_section(record, _read_json(run, "fewshot.json"), figures)],
        )


def _explain_summary(result: dict[str, Any]) -> dict[str, Any]:
    from glassbox.explain import summary

    return summary(result)


def _audit_summary(result: dict[str, Any]) -> dict[str, Any]:
    from glassbox.audit import summary

    return summary(result)


def _ledger_facts(run: Run, head: dict[str, Any]) -> dict[str, Any]:
    """What the model card says about provenance: the tree head, the key, the dataset entry's hash."""
    from glassbox.ledger.chain import PUBLIC, sha256_hex

    line, entry = _dataset_entry(run)
    return {
        "tree_head_entry": head["seq"],
        "tree_size": head["data"]["size"],
        "merkle_root": head["data"]["root"],
        "public_key_sha256": head["data"]["key"],
        "public_key_pem": (run.path / PUBLIC).read_text().strip(),
        "dataset_entry": None if entry is None else entry["seq"],
        "dataset_entry_sha256": None if line is None else sha256_hex(line),
        "data_digests": None if entry is None else entry.get("data", {}).get("digests"),
    }


# -- the later verbs ----------------------------------------------------------------------
def open_run(path: str | Path) -> tuple[Run, Recipe, dict[str, Any], nn.Module]:
    """A finished run folder with its recipe, its data (rebuilt exactly) and its saved model."""
    from glassbox.config import load_recipe
    from glassbox.nn import load_model
    from glassbox.pipeline import prepare_data

    run = Run.open(path)
    if run.meta().get("status") != "completed":
        raise UserError(f"{path} did not complete (status {run.meta().get('status')}); finish it first")
    recipe = load_recipe(run.path / "config.yaml")
    cleaning = run.meta().get("cleaning")
    clean = None if cleaning is None else {"values": cleaning["values"], "fraction": cleaning["fraction"]}
    data = prepare_data(recipe, clean)
    _, entry = _dataset_entry(run)
    digests = None if entry is None else entry.get("data", {}).get("digests")
    if digests is not None:
        now = {name: data[name].digest() for name in digests if data.get(name) is not None}
        if now != digests:
            changed = ", ".join(n for n in now if now[n] != digests.get(n))
            raise UserError(
                f"the data rebuilt from {run.path / 'config.yaml'} differs from what the run trained on"
                f" ({changed}); the source changed since: restore it, or train a new run"
            )
    return run, recipe, data, load_model(run.path)


def rerun(path: str | Path, section: str, options: dict[str, Any]) -> tuple[Run, dict[str, Any]]:
    """``glassbox explain|audit RUN``: the run's ``section`` (explain or audit) with ``options`` on top.

    Computes it, writes its JSON into the run (signed into the ledger),
    rebuilds the report and seals the ledger; returns the run and the result.
    """
    from pydantic import ValidationError

    from glassbox.config import validation_error

    run, recipe, data, model = open_run(path)
    model_cls = ExplainConfig if section == "explain" else AuditConfig
    current = getattr(recipe, section)
    base = current.model_dump() if current is not None else {}
    try:
        cfg = model_cls.model_validate({**base, **options})
    except ValidationError as err:
        raise validation_error(err, f"glassbox {section}") from None
    other = "audit" if section == "explain" else "explain"
    recipe = recipe.model_copy(update={section: cfg})
    check_analyses(recipe.model_copy(update={other: None}), data)
    with run:
        if section == "explain":
            name, result = EXPLANATIONS, explain_model(cfg, model, data, recipe.seed)
        else:
            name, result = AUDIT, audit_model(cfg, model, data, recipe.seed)
        run.write_json(name, result)
        if recipe.report.enabled:
            write_run_report(run, recipe, data)
    return run, result


def _dataset_entry(run: Run) -> tuple[bytes | None, dict[str, Any] | None]:
    """The ledger's last dataset entry with the splits' digests, as its stored line and parsed.

    Other dataset entries (label_noise.json, a federated run's partition.json) hold no digests.
    """
    from glassbox.ledger.chain import LEDGER

    for line in reversed((run.path / LEDGER).read_bytes().split(b"\n")):
        entry = json.loads(line) if line else None
        if entry is not None and entry["kind"] == "dataset" and "digests" in (entry.get("data") or {}):
            return line, entry
    return None, None


def fewshot_run(path: str | Path, shots: str, draws: int = 10) -> list[dict[str, Any]]:
    """``glassbox fewshot RUN``: the few-shot table of the run's encoder, written into the run.

    ``shots`` is ``"1"`` or ``"1,5,10"``. The labeled rows are drawn from all
    training rows (with ``data.label_fraction`` < 1, including those the run
    trained without labels: this measures the encoder, not the run).
    """
    from glassbox.ssl.fewshot import FEWSHOT_FILE, fewshot_report

    try:
        ks = sorted({int(k) for k in shots.split(",") if k.strip()})
    except ValueError:
        raise UserError(
            f"--shots {shots!r}: give whole numbers of labels per class, e.g. --shots 1,5"
        ) from None
    if not ks or ks[0] < 1:
        raise UserError(f"--shots {shots!r}: give at least one number >= 1, e.g. --shots 1,5")
    run, recipe, data, model = open_run(path)
    pool = data["pool"]
    if pool.task != "classification":
        raise UserError(f"{path} is a {pool.task} run; few-shot evaluation needs a classification data set")
    fewest = int(pool.y.bincount().min())
    if ks[-1] > fewest:
        raise UserError(
            f"--shots {ks[-1]}: the smallest class has {fewest} training rows; ask for at most {fewest}"
        )
    with run:
        table = fewshot_report(model, pool, data["test"], ks, draws=draws, seed=recipe.seed)
        run.write_json(FEWSHOT_FILE, table)
        if recipe.report.enabled:
            if run.meta().get("kind") == "pretrain":
                write_pretrain_report(run, recipe, data)
            else:
                write_run_report(run, recipe, data)
    return table
