"""``glassbox bench``: name checks and a tiny attention run through the CLI."""

from __future__ import annotations

import json

import pytest

from glassbox.cli.main import main


def test_unknown_benchmark_exits_2_with_a_suggestion(capsys) -> None:
    assert main(["bench", "atention"]) == 2
    assert "did you mean 'attention'?" in capsys.readouterr().err


def test_attention_json_tiny(capsys) -> None:
    argv = ["bench", "attention", "--json", "--lengths", "64,128", "--repeats", "1", "--budget", "0.5"]
    assert main([*argv, "--kinds", "softmax", "--crossover-lengths", ""]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kinds"][0] == "softmax" and set(res["results"]["softmax"]) == {"64", "128"}
    cell = res["results"]["softmax"]["128"]
    for key in ("fwd_ms", "fwdbwd_ms", "ratio_fwd_vs_softmax", "ratio_fwdbwd_vs_softmax", "peak_mb"):
        assert key in cell
    assert cell["ratio_fwdbwd_vs_softmax"] == 1.0 and cell["fwdbwd_ms"] > 0
    assert {"crossover", "machine", "settings"} <= set(res)


def test_attention_table_and_crossover_with_two_kinds(capsys) -> None:
    from glassbox.nn.attention import KINDS

    other = next((k for k in KINDS.names() if k not in ("softmax", "auto")), None)
    kinds = "softmax" if other is None else f"softmax,{other}"
    argv = ["bench", "attention", "--lengths", "64", "--repeats", "1", "--budget", "0.2", "--no-memory"]
    assert main([*argv, "--kinds", kinds, "--crossover-lengths", "64,128"]) == 0
    out = capsys.readouterr().out
    assert "fwd+bwd ms" in out and "softmax" in out
    if other is not None:
        assert f"{other} faster than softmax from" in out


def test_mqar_json_tiny(capsys) -> None:
    argv = ["bench", "mqar", "--json", "--kinds", "softmax", "--cells", "16x2,32x4", "--train-rows", "64"]
    sizes = ["--val-rows", "16", "--test-rows", "16", "--batch-size", "32", "--eval-every", "2"]
    assert main([*argv, *sizes, "--first-steps", "2", "--steps", "1", "--stop-at", "1.01"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["cells"] == ["16x2", "32x4"] and 0.0 <= res["accuracy"]["softmax"]["32x4"] <= 1.0
    steps = [res["results"]["softmax"][c]["steps"] for c in res["cells"]]
    assert steps == [2, 2]  # whole epochs of eval_every steps: 2 for the first stage, 1 rounds up to 2


@pytest.mark.slow
def test_valuation_quick_json(capsys) -> None:
    # The whole --quick run: digits, seed 0, 3 epochs, no TracIn, 2 repetitions of the overhead.
    # 28-42 s alone on the shared 2-core machine (74 s beside two other processes), hence slow.
    assert main(["bench", "valuation", "--quick", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["settings"]["quick"] and res["settings"]["seeds"] == [0]
    auroc = res["auroc"]["digits"]
    assert set(auroc) == {"inrun_sgd", "inrun_adamw", "knn_shapley"}
    assert all(0.0 <= auroc[m]["mean"] <= 1.0 and auroc[m]["per_seed"] == [auroc[m]["mean"]] for m in auroc)
    assert all(u["inrun_nonfinite"] == 0 for u in res["units"])
    for opt in ("sgd", "adamw"):
        c = res["cleaning"]["digits"][opt]
        assert c["dropped"] == round(0.1 * res["units"][0]["train_rows"])
        assert 0 <= c["flipped_dropped"]["mean"] <= c["dropped"]
        cells = res["overhead"]["digits"]["results"][opt]
        assert set(cells) == {"plain", "order1_vb8", "order2_vb8"}
        assert all(cells[k]["throughput_ratio"] > 0 for k in ("order1_vb8", "order2_vb8"))
    assert any(k.startswith("throughput digits sgd order1_vb8") for k in res["targets"])


def test_audio_quick_json(capsys, tmp_path, monkeypatch) -> None:
    pytest.importorskip("espeakng_loader", reason="spoken-digits needs the audio extra")
    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path))
    # 9 voices x 3 words, 2 epochs everywhere, one seed: every part of the benchmark, in seconds.
    assert main(["bench", "audio", "--quick", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["generation"]["identical"] and res["generation"]["runs"][0]["rows"] == 27
    assert set(res["supervised"]["accuracy_by_snr"]) == {"clean", "20dB", "10dB", "5dB", "0dB"}
    unit = res["fewlabel"]["units"][0]
    assert unit["labels"] <= 9 and {"scratch", "contrastive", "masked", "raw_logmel_probe"} <= set(unit)
    assert len(res["targets"]) == 4


def test_ssl_quick_json(capsys) -> None:
    # wine, seed 0, 5 pretraining epochs, 2 draws: every column of the table, in seconds.
    assert main(["bench", "ssl", "--quick", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    table = res["results"]["wine"]["table"]
    assert list(table) == ["1-shot", "5-shot", "1%", "5%", "10%", "100%"]
    cols = set(table["1-shot"]) - {"labels"}
    for feat in ("raw", "random", "contrastive", "vicreg", "masked"):
        assert {f"{feat}_probe", f"{feat}_prototype"} <= cols
    assert "supervised" in cols and table["1-shot"]["labels"] == 3
    assert all(0 <= table[s][c]["mean"] <= 1 for s in table for c in cols)


def test_every_registered_benchmark_has_its_script() -> None:
    from glassbox.cli.bench import BENCHMARKS, benchmarks_dir

    missing = [name for name, file in BENCHMARKS.items() if not (benchmarks_dir() / file).is_file()]
    assert not missing


def test_defaults_search_quick_json(capsys) -> None:
    assert main(["bench", "defaults", "--json", "--quick"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [s["factor"] for s in res["steps"]] == ["monitor", "label_smoothing"]
    assert set(res["chosen"]) == {"train.monitor", "train.label_smoothing"}
    # Scores are validation-only: every training reports its validation rows, none a test metric.
    for r in res["final"]["runs"]:
        assert {"val_accuracy", "val_loss"} <= set(r) and not any(k.startswith("test") for k in r)


def test_defaults_search_cv_scores_every_non_test_row_once_and_never_a_test_row(monkeypatch) -> None:
    import importlib.util

    import numpy as np

    from glassbox.cli.bench import benchmarks_dir
    from glassbox.config import load_recipe
    from glassbox.pipeline import prepare_data

    path = benchmarks_dir() / "defaults_search.py"
    spec = importlib.util.spec_from_file_location("defaults_search_cv", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seen = []

    def fake_fit_score(recipe, train, stop, scored, seed):  # records the rows instead of training
        seen.append((set(train.index.tolist()), set(stop.index.tolist()), set(scored.index.tolist())))
        return {"accuracy": 1.0, "loss": 0.0, "rows": len(scored), "best_epoch": 1}

    monkeypatch.setattr(mod, "_fit_score", fake_fit_score)
    monkeypatch.setattr(mod, "_logistic_accuracy", lambda train, scored: 1.0)
    out = mod.train_one("wine", 3, {}, folds=4)
    data = prepare_data(load_recipe(None, ["data.source=wine", "seed=3"]))
    non_test = set(np.concatenate([data["train"].index, data["val"].index]).tolist())
    scored = [s for _, _, s in seen]
    assert len(seen) == 4 and sum(len(s) for s in scored) == len(non_test) == out["val_rows"]
    assert set().union(*scored) == non_test  # every non-test row scored exactly once
    for fit, stop, s in seen:
        assert not (fit & stop) and not (fit & s) and not (stop & s)
        assert not ((fit | stop | s) & set(data["test"].index.tolist()))  # the test rows never appear
