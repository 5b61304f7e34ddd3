"""Audio: spoken digits made on the machine, a supervised audio transformer, and pretraining with few labels.

Three measurements, each against a bar of issue 15:

- generation: the ``spoken-digits`` data set (recipes/spoken-digits.yaml's
  data: ~100 eSpeak NG voices, 7 accents, 3 takes per voice and word) made
  twice from nothing, each time in an empty cache: the seconds it takes
  (bar: under 120 s) and whether the two digests are equal (bar: yes);
- supervised: the recipe trained as it ships (``run_recipe``), test accuracy
  on voices never heard in training (bar: at least 0.95), and the report's
  robustness table: the same test clips with noise at 20, 10, 5 and 0 dB SNR;
- few labels: for each seed, one labeled clip per class per voice family of
  the training voices (3 families x 10 words = 30 labels). From scratch: the
  recipe's model trained on those 30 (early stopping on the full labeled
  validation split, which favours it). Pretrained: ``contrastive`` and
  ``masked`` on every training clip without its label, then a logistic
  regression probe on the frozen encoder's embeddings of the same 30 clips
  (``glassbox.ssl.fewshot.probe_predict``). Also the probe on the raw
  log-mel spectrograms. Bar: the better pretrained probe beats scratch by at
  least 10 points, mean over seeds.

One thread (the machine is shared). ``--quick``: 9 voices, 3 words, 1 seed,
2 epochs everywhere; what the test suite runs.

Example:
    python benchmarks/audio.py > audio.json      # ~25 min on a shared 2-core machine
    glassbox bench audio --quick --json
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RECIPE = Path(__file__).resolve().parents[1] / "src" / "glassbox" / "recipes" / "spoken-digits.yaml"
QUICK_DATA = ["data.audio.voices=9", "data.audio.takes=1", 'data.audio.words=["zero","one","two"]']


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/audio.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny data, one seed, two epochs")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the few-label comparison")
    p.add_argument("--methods", default="contrastive,masked")
    p.add_argument("--pretrain-epochs", type=int, default=40)
    p.add_argument("--scratch-epochs", type=int, default=200, help="one step per epoch at 30 labels")
    p.add_argument("--skip", default="", help="parts to leave out: generation, supervised, fewlabel")
    return p.parse_args(argv)


def recipe(sets: list[str]) -> Any:
    from glassbox.config import load_recipe

    return load_recipe(RECIPE, sets)


def generation(sets: list[str]) -> dict[str, Any]:
    """Make the data set twice in empty caches: seconds and digests."""
    from glassbox.data import load_dataset
    from glassbox.data.audio import _LAST_LOAD

    runs = []
    old = os.environ.get("GLASSBOX_CACHE")
    try:
        for _ in range(2):
            with tempfile.TemporaryDirectory() as cache:
                os.environ["GLASSBOX_CACHE"] = cache
                start = time.perf_counter()
                ds = load_dataset(recipe(sets).data)
                seconds = time.perf_counter() - start
                assert _LAST_LOAD["cached"] is False
                runs.append({
                    "seconds": round(seconds, 2), "synthesis_seconds": round(_LAST_LOAD["seconds"], 2),
                    "digest": ds.digest(), "rows": len(ds), "voices": len(set(ds.groups.tolist())),
                })  # fmt: skip
    finally:
        if old is None:
            os.environ.pop("GLASSBOX_CACHE", None)
        else:
            os.environ["GLASSBOX_CACHE"] = old
    return {"runs": runs, "identical": runs[0]["digest"] == runs[1]["digest"],
            "max_seconds": max(r["seconds"] for r in runs)}  # fmt: skip


def supervised(sets: list[str]) -> dict[str, Any]:
    """The recipe as it ships, in a temporary folder; its results and the report's audio.json."""
    import json

    from glassbox.pipeline import run_recipe

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run = run_recipe(recipe(sets), out, progress=False)
        seconds = time.perf_counter() - start
        meta = run.meta()
        audio = json.loads((run.path / "audio.json").read_text())
    noise = {
        ("clean" if r["snr"] is None else f"{r['snr']:g}dB"): round(r["accuracy"], 4)
        for r in audio["by_noise"]
    }
    return {
        "test_accuracy": round(meta["results"]["test_accuracy"], 4),
        "accuracy_by_snr": noise,
        "by_voice_family": audio["by"].get("voice_family"),
        "by_accent": audio["by"].get("accent"),
        "test_rows": audio["rows"],
        "best_epoch": meta.get("best_epoch"),
        "seconds": round(seconds, 1),
    }


def labeled_rows(train: Any, seed: int) -> np.ndarray:
    """Positions of one clip per class per voice family in ``train``, seeded."""
    from glassbox.data.splits import labeled_subset

    picked = []
    for k, family in enumerate(sorted(set(train.sensitive.tolist()))):
        rows = np.flatnonzero(train.sensitive == family)
        picked.append(rows[labeled_subset(train.y.numpy()[rows], per_class=1, seed=seed * 100 + k)])
    return np.sort(np.concatenate(picked))


LABEL_FRACTIONS = (0.01, 0.05, 1.0)  # the probe's labels besides the 30: a share of the training clips


def fraction_rows(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified, seeded share of the rows, at least one per class."""
    rng = np.random.default_rng(seed * 7 + 1)
    picked = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        picked.append(rng.choice(rows, size=max(1, round(fraction * len(rows))), replace=False))
    return np.sort(np.concatenate(picked))


def fewlabel_unit(sets: list[str], seed: int, methods: list[str], pretrain_epochs: int,
                  scratch_epochs: int) -> dict[str, Any]:  # fmt: skip
    """One seed: scratch on the few labels, and each pretrained encoder probed with them."""
    from glassbox.config import PretrainConfig
    from glassbox.nn import build_model
    from glassbox.pipeline import _seed_everything, prepare_data
    from glassbox.ssl import pretrain
    from glassbox.ssl.base import embed
    from glassbox.ssl.fewshot import probe_predict, raw_features
    from glassbox.train import Trainer

    r = recipe([*sets, f"seed={seed}"])
    data = prepare_data(r)
    train, val, test = data["train"], data["val"], data["test"]
    rows = labeled_rows(train, seed)
    y_tr, y_te = train.y.numpy(), test.y.numpy()
    out: dict[str, Any] = {
        "seed": seed,
        "labels": len(rows),
        "train_clips": len(train),
        "test_clips": len(test),
    }

    _seed_everything(seed)
    model = build_model(r.model, train)  # input statistics from every training clip, labels unused
    cfg = r.train.model_copy(update={"epochs": scratch_epochs, "batch_size": len(rows), "patience": 40})
    start = time.perf_counter()
    trainer = Trainer(model, cfg, seed=seed).fit(train.subset(rows), val)
    seconds = round(time.perf_counter() - start, 1)
    accuracy = round(trainer.evaluate(test)["accuracy"], 4)
    out["scratch"] = {"accuracy": accuracy, "best_epoch": trainer.best_epoch_, "seconds": seconds}

    raw_tr, raw_te = raw_features(model, train.X), raw_features(model, test.X)
    raw_pred = probe_predict(raw_tr[rows], y_tr[rows], raw_te, pool=raw_tr)
    out["raw_logmel_probe"] = {"accuracy": round(float((raw_pred == y_te).mean()), 4)}
    for method in methods:
        _seed_everything(seed)
        model = build_model(r.model, train)
        pcfg = PretrainConfig(method=method, epochs=pretrain_epochs, batch_size=128)
        start = time.perf_counter()
        history = pretrain(model, train.X, pcfg, seed=seed)
        seconds = time.perf_counter() - start
        Ztr, Zte = embed(model, train.X).numpy(), embed(model, test.X).numpy()
        acc = float((probe_predict(Ztr[rows], y_tr[rows], Zte, pool=Ztr) == y_te).mean())
        full = float((probe_predict(Ztr, y_tr, Zte, pool=Ztr) == y_te).mean())
        by_fraction = {}
        for frac in LABEL_FRACTIONS:
            part = fraction_rows(y_tr, frac, seed)
            pred = probe_predict(Ztr[part], y_tr[part], Zte, pool=Ztr)
            hit = round(float((pred == y_te).mean()), 4)
            by_fraction[f"{frac:g}"] = {"labels": len(part), "accuracy": hit}
        out[method] = {
            "probe_accuracy": round(acc, 4), "probe_all_labels": round(full, 4),
            "probe_by_label_fraction": by_fraction,
            "final_loss": round(history[-1]["pretrain_loss"], 4), "seconds": round(seconds, 1),
        }  # fmt: skip
    return out


def summarize(units: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, Any]:
        return {"mean": round(float(np.mean(values)), 4),
                "std": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else 0.0,
                "per_seed": values}  # fmt: skip

    summary = {"scratch": stats([u["scratch"]["accuracy"] for u in units]),
               "raw_logmel_probe": stats([u["raw_logmel_probe"]["accuracy"] for u in units])}  # fmt: skip
    for m in methods:
        summary[m] = stats([u[m]["probe_accuracy"] for u in units])
        summary[f"{m}_minus_scratch"] = round(summary[m]["mean"] - summary["scratch"]["mean"], 4)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    skip = {s for s in args.skip.split(",") if s}
    methods = [m for m in args.methods.split(",") if m]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    sets = [*QUICK_DATA, "train.epochs=2"] if args.quick else []
    p_epochs = 2 if args.quick else args.pretrain_epochs
    s_epochs = 2 if args.quick else args.scratch_epochs
    start = time.perf_counter()
    res: dict[str, Any] = {"benchmark": "audio"}
    try:
        if "generation" not in skip:
            res["generation"] = generation(sets)
        if "supervised" not in skip:
            res["supervised"] = supervised(sets)
        if "fewlabel" not in skip:
            units = [fewlabel_unit(sets, s, methods, p_epochs, s_epochs) for s in seeds]
            res["fewlabel"] = {"units": units, "summary": summarize(units, methods)}
    finally:
        torch.set_num_threads(threads)
    targets = {}
    if "generation" in res:
        targets["generation under 120 s"] = res["generation"]["max_seconds"] < 120
        targets["same seed, same data (digest)"] = res["generation"]["identical"]
    if "supervised" in res:
        targets["held-out voices accuracy >= 0.95"] = res["supervised"]["test_accuracy"] >= 0.95
    if "fewlabel" in res:
        gain = max(res["fewlabel"]["summary"][f"{m}_minus_scratch"] for m in methods)
        targets["pretraining beats scratch by >= 10 points at 1 label/class/family"] = gain >= 0.10
    from glassbox.run import _git_commit

    res.update({
        "targets": targets,
        "settings": {"quick": args.quick, "seeds": seeds, "methods": methods, "pretrain_epochs": p_epochs,
                     "scratch_epochs": s_epochs, "recipe": str(RECIPE.name), "overrides": sets, "threads": 1},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__},
        "commit": _git_commit(),
        "seconds": round(time.perf_counter() - start, 1),
    })  # fmt: skip
    return res


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
