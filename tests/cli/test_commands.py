from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glassbox.cli.main import app, main

VERBS = [
    "demo",
    "train",
    "pretrain",
    "fewshot",
    "ui",
    "track",
    "federate",
    "render-config",
    "datasets",
    "bench",
    "verify",
    "explain",
    "audit",
    "export",
    "serve",
    "generate",
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("verb", VERBS)
def test_help_leads_with_an_example(verb, capsys):
    assert main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    body = [line.strip() for line in out.splitlines() if line.strip()]
    assert body[1].startswith("Example: glassbox " + verb), body[:3]


def test_every_registered_verb_is_covered():
    assert sorted(c.name for c in app.registered_commands) == sorted(VERBS)


def test_help_is_fast_and_imports_no_torch():
    code = "import sys; from glassbox.cli.main import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_usage_errors_exit_2(capsys):
    assert main(["train", "--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "give a recipe" in capsys.readouterr().err


def test_resume_cli(tmp_path, capsys):
    assert main(["train", "healthcare", "--resume", str(tmp_path)]) == 2
    assert "without RECIPE" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a glassbox run folder" in capsys.readouterr().err


def test_datasets_json(capsys):
    assert main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"breast-cancer", "wine", "iris", "fraud", "digits", "python-corpus"} <= names


def test_render_config_fills_defaults(capsys):
    assert main(["render-config", "healthcare", "--set", "model.depth=3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["depth"] == 3
    assert cfg["train"]["optimizer"] == "adamw"  # a default the recipe never names


def test_train_writes_a_complete_run(tmp_path, capsys):
    argv = ["train", "healthcare", "--out", str(tmp_path), "--json"]
    main(
        [*argv, "--set", "train.epochs=2", "--set", "data.source=iris", "--set", "train.monitor=val_accuracy"]
    )
    summary = json.loads(capsys.readouterr().out)
    run = Path(summary["run"])
    assert summary["status"] == "completed"
    for name in (
        "config.yaml",
        "meta.json",
        "metrics.jsonl",
        "model.safetensors",
        "model.json",
        "report.html",
    ):
        assert (run / name).exists(), name
    assert not (run / "checkpoints").exists()
    assert 0.0 <= summary["results"]["test_accuracy"] <= 1.0


def test_readme_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    exec(compile(code, "README.md", "exec"), {})
    assert any((tmp_path / "runs").iterdir())
