"""glassbox pretrain, train --init / head_only, fewshot: run folders that verify, weights that carry over."""

import json

import pytest
import safetensors.torch
import torch

from glassbox.cli.main import main

FAST = ["--set", "model.dim=16", "--set", "model.depth=1", "--set", "model.heads=2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    argv = ["pretrain", "digits", *FAST, "--set", "pretrain.epochs=2", "--out", str(out), "--json"]
    assert main(argv) == 0
    (run,) = out.glob("*-pretrain")
    return run


def test_pretrain_writes_a_verifiable_run(pretrained, capsys):
    meta = json.loads((pretrained / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["kind"] == "pretrain"
    assert meta["pretrain"]["method"] == "contrastive" and meta["pretrain"]["rows"] > 1000
    record = json.loads((pretrained / "pretrain.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    table = json.loads((pretrained / "fewshot.json").read_text())
    assert [t["shots"] for t in table] == [1, 5]
    assert set(table[0]["results"]) == {"encoder", "raw"}
    assert "Self-supervised pretraining" in (pretrained / "report.html").read_text()
    assert main(["verify", str(pretrained)]) == 0


def test_train_init_head_only_keeps_the_encoder(pretrained, tmp_path):
    out = tmp_path / "runs"
    argv = ["train", "digits", *FAST, "--init", str(pretrained), "--set", "train.head_only=true",
            "--set", "train.epochs=2", "--set", "data.label_fraction=0.1", "--set", "report.enabled=false",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    (run,) = out.glob("*")
    before = safetensors.torch.load_file(str(pretrained / "model.safetensors"))
    after = safetensors.torch.load_file(str(run / "model.safetensors"))
    for k, v in before.items():
        if k.startswith("head."):
            assert not torch.equal(v, after[k])  # the probe trained
        else:
            assert torch.equal(v, after[k]), k  # the encoder did not move
    splits = json.loads((run / "splits.json").read_text())
    assert splits["train"]["rows"] < 0.12 * splits["pool"]["rows"]  # 10 % of the labels
    entries = [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines()]
    init = [e for e in entries if e["kind"] == "init"]
    assert init and init[0]["data"]["weights_sha256"]
    assert main(["verify", str(run)]) == 0


def test_init_refuses_a_mismatched_encoder(pretrained, tmp_path, capsys):
    argv = ["train", "digits", "--set", "model.dim=32", "--set", "model.depth=1", "--set", "model.heads=2",
            "--init", str(pretrained), "--out", str(tmp_path / "runs")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model.dim is 16" in err and "--set model.dim=16" in err
    assert not (tmp_path / "runs").exists()


def test_fewshot_verb_writes_into_the_run(pretrained, capsys):
    capsys.readouterr()
    assert main(["fewshot", str(pretrained), "--shots", "2", "--draws", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["shots"] == 2 and out[0]["draws"] == 2
    assert json.loads((pretrained / "fewshot.json").read_text())[0]["shots"] == 2
    assert main(["verify", str(pretrained)]) == 0
    assert main(["fewshot", str(pretrained), "--shots", "500"]) == 2


def test_pretrain_stage_inside_train(tmp_path):
    out = tmp_path / "runs"
    argv = ["train", "healthcare", *FAST, "--set", "valuation={method: none}",
            "--set", "pretrain={method: masked, epochs: 2}", "--set", "train.epochs=1",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    (run,) = out.glob("*")
    assert json.loads((run / "pretrain.json").read_text())["method"] == "masked"
    assert "Self-supervised pretraining" in (run / "report.html").read_text()
    assert main(["verify", str(run)]) == 0
