"""The valuation stage end to end: values.csv, baselines, the report section, cleaning, resume, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from glassbox.cli.main import main
from glassbox.config import load_recipe
from glassbox.pipeline import prepare_data, resume_run, run_recipe
from glassbox.train import Callback

BASE = [
    "data.source=wine",
    "model.dim=16",
    "model.depth=1",
    "model.dropout=0",
    "train.epochs=3",
    "train.batch_size=16",
    "train.patience=null",
    "train.threads=1",
    "data.label_noise=0.1",
    "valuation.method=inrun",
]


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def valued_run(tmp_path_factory):
    r = load_recipe(None, [*BASE, "valuation.baselines=[knn_shapley,loo]"])
    return run_recipe(r, tmp_path_factory.mktemp("runs"))


def test_values_csv_covers_every_training_row_with_its_label_and_noise_flag(valued_run):
    r = load_recipe(valued_run.path / "config.yaml")
    data = prepare_data(r)
    rows = read(valued_run.path / "values.csv")
    assert list(rows[0]) == ["index", "value", "label", "noisy"]
    train = data["train"]
    assert [int(x["index"]) for x in rows] == train.index.tolist()
    assert [x["label"] for x in rows] == [train.classes[int(c)] for c in train.y]
    flipped = set(json.loads((valued_run.path / "label_noise.json").read_text())["rows"])
    assert {int(x["index"]) for x in rows if x["noisy"] == "1"} == flipped
    assert all(np.isfinite(float(x["value"])) for x in rows)
    assert any(float(x["value"]) != 0 for x in rows)


def test_baselines_sit_beside_in_the_same_run_and_the_report_shows_them(valued_run):
    for name in ("values_knn_shapley.csv", "values_loo.csv"):
        assert len(read(valued_run.path / name)) == len(read(valued_run.path / "values.csv"))
    meta = valued_run.meta()["valuation"]
    assert set(meta["mislabel_auroc"]) == {"inrun", "knn_shapley", "loo"}
    html = (valued_run.path / "report.html").read_text()
    assert "Data values" in html and "KNN-Shapley" in html and "Leave-one-out" in html
    assert "In-run Data Shapley (first order, AdamW-aware)" in html


def test_drop_lowest_retrains_without_the_lowest_values_and_compares(valued_run, tmp_path, capsys):
    values = valued_run.path / "values.csv"
    out = tmp_path / "clean"
    argv = ["train", str(valued_run.path / "config.yaml"), "--out", str(out)]
    assert main([*argv, "--drop-lowest", "0.1", "--values", str(values)]) == 0
    (cleaned,) = list(out.iterdir())
    meta = json.loads((cleaned / "meta.json").read_text())
    rows = read(values)
    k = round(0.1 * len(rows))
    lowest = sorted(rows, key=lambda x: (float(x["value"]), int(x["index"])))[:k]
    assert meta["cleaning"]["dropped"] == k
    assert sorted(meta["cleaning"]["dropped_rows"]) == sorted(int(x["index"]) for x in lowest)
    assert meta["cleaning"]["flipped_dropped"] == sum(x["noisy"] == "1" for x in lowest)
    assert meta["data"]["train"] == len(rows) - k
    html = (cleaned / "report.html").read_text()
    assert "Cleaning: retrained without the lowest-valued data" in html
    assert valued_run.path.name in html  # the run it is compared with


class Kill(Callback):
    def on_step_end(self, trainer, info):
        if info.step == 7:
            raise KeyboardInterrupt


def test_resume_keeps_the_values_of_the_steps_before_the_kill(tmp_path):
    overrides = [*BASE, "train.checkpoint_every=5", "report.enabled=false"]
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(None, overrides), tmp_path / "killed", callbacks=[Kill()])
    (killed,) = list((tmp_path / "killed").iterdir())
    resumed = resume_run(killed)
    clean = run_recipe(load_recipe(None, overrides), tmp_path / "clean")
    a = [float(x["value"]) for x in read(resumed.path / "values.csv")]
    b = [float(x["value"]) for x in read(clean.path / "values.csv")]
    assert np.allclose(a, b, rtol=1e-5, atol=1e-9)
    assert resumed.meta()["valuation"]["steps"] == clean.meta()["valuation"]["steps"]


def _recipe_file(tmp_path: Path, *lines: str) -> str:
    p = tmp_path / "r.yaml"
    p.write_text("\n".join(["data:", "  source: wine", "train:", "  epochs: 1", *lines]) + "\n")
    return str(p)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--drop-lowest", "0.1"], "--values"),
        (["--values", "nowhere.csv"], "--drop-lowest"),
        (["--drop-lowest", "0.1", "--values", "nowhere.csv"], "values file not found"),
        (["--drop-lowest", "1.5", "--values", "VALUES"], "above 0 and below 1"),
        (["--drop-lowest", "0.1", "--values", "OTHER_SEED"], "another seed"),
        (["--drop-lowest", "0.1", "--values", "GARBLED"], "line 2"),
    ],
)
def test_bad_cleaning_input_is_one_line_exit_2(extra, needle, valued_run, tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("index,value,label,noisy\n0,1.0,a,0\n")
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("index,value,label,noisy\nzero,one,a,0\n")
    subst = {"VALUES": str(valued_run.path / "values.csv"), "OTHER_SEED": str(other), "GARBLED": str(garbled)}
    extra = [subst.get(a, a) for a in extra]
    out = tmp_path / "runs"
    argv = ["train", str(valued_run.path / "config.yaml"), "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not out.exists()  # refused before any run folder was made


@pytest.mark.parametrize(
    "lines, needle",
    [
        (["valuation:", "  baselines: [knn_shapley]"], "set valuation.method: inrun"),
        (None, "limited to 200 rows"),  # loo on digits' ~1,100 training rows
        (["valuation:", "  method: inrun", "  baselines: [inrun]"], "valuation.baselines"),
        (["valuation:", "  method: inrun", "  order: 3"], "valuation.order"),
        (["valuation:", "  methd: inrun"], "valuation.method"),
    ],
)
def test_bad_valuation_recipe_is_refused_before_training(lines, needle, tmp_path, capsys):
    if lines is None:
        path = tmp_path / "r.yaml"
        path.write_text("data:\n  source: digits\nvaluation:\n  method: inrun\n  baselines: [loo]\n")
        recipe = str(path)
    else:
        recipe = _recipe_file(tmp_path, *lines)
    out = tmp_path / "runs"
    assert main(["train", recipe, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not out.exists()


def test_language_model_data_gets_inrun_but_not_label_baselines(tmp_path, capsys):
    p = tmp_path / "r.yaml"
    p.write_text(
        "data:\n  source: parity\nvaluation:\n  method: inrun\n  baselines: [knn_shapley]\n"
        "train:\n  epochs: 1\n"
    )
    assert main(["train", str(p), "--out", str(tmp_path / "runs")]) == 2
    assert "language-model data" in capsys.readouterr().err


@pytest.mark.parametrize("epochs", [1, 3, 7, 12, 40])
def test_tracin_snapshots_are_spread_over_the_epochs_actually_run(epochs):
    from types import SimpleNamespace

    from glassbox.valuation.stage import EpochSnapshots

    model = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(model=model, optimizer_=torch.optim.SGD(model.parameters(), lr=0.1))
    snaps = EpochSnapshots(5)
    snaps.on_fit_start(trainer)
    for e in range(1, epochs + 1):  # as if early stopping ended training here
        snaps.on_epoch_end(trainer, e, {})
    snaps.on_fit_end(trainer)
    assert len(snaps.weights_) == min(5, epochs)
    assert snaps.epochs_[-1] >= epochs - max(1, epochs // 5)  # reaches the end of training
    assert snaps.epochs_[0] <= max(1, epochs // 4)  # and starts near its beginning
