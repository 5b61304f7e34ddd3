"""An LM run end to end: the report's Language model section, and glassbox generate over the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glassbox.cli.main import main
from glassbox.config import load_recipe
from glassbox.nn import load_model
from glassbox.pipeline import run_recipe

TINY = ["data.source=python-corpus", "data.max_bytes=20000", "data.seq_len=64", "model.dim=32",
        "model.depth=1", "model.heads=2", "model.max_len=128", "train.epochs=1"]  # fmt: skip


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_recipe(load_recipe(None, TINY), tmp_path_factory.mktemp("runs"), progress=False).path


def test_report_shows_heldout_bits_per_byte_and_samples(lm_run: Path) -> None:
    html = (lm_run / "report.html").read_text()
    assert "Language model" in html and "held-out files" in html and 'id="lm-samples"' in html


def test_the_shipped_lm_recipe_is_valid() -> None:
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "lm.yaml")
    assert (recipe.model.depth, recipe.model.dim, recipe.data.source) == (6, 256, "python-corpus")


def test_generate_verb_speculates_exactly(lm_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(lm_run), "--prompt", "def ", "--max-new", "24", "--draft", "lookup",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    model = load_model(lm_run)
    want = model.generate(list(b"def "), 24, temperature=0)[4:]
    assert out["text"] == bytes(want.tolist()).decode("utf-8", "replace")  # greedy: the model's own text
    assert out["stats"]["new_tokens"] == 24
    # Speculating with the model itself as its draft: the same text, several bytes per target call.
    assert main(["generate", str(lm_run), "--prompt", "def ", "--max-new", "24", "--draft", str(lm_run),
                 "--gamma", "4", "--json"]) == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert again["text"] == out["text"] and again["stats"]["tokens_per_target_call"] > 3
    assert main(["generate", str(lm_run), "--draft", str(lm_run), "--rule", "opt", "--lenience", "0.2",
                 "--temperature", "1", "--max-new", "8", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["stats"]["rule"] == "opt"


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--rule", "opt", "--temperature", "1"], "needs a draft model"),
        (["--draft", "lookup", "--rule", "opt", "--temperature", "1"], "needs a draft model"),
        (["--gamma", "many"], "whole number or auto"),
        (["--prompt", ""], "empty"),
    ],
)
def test_generate_bad_input(lm_run: Path, args: list[str], phrase: str, capsys) -> None:
    assert main(["generate", str(lm_run), *args]) == 2
    assert phrase in capsys.readouterr().err


def test_generate_refuses_a_folder_without_a_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", str(tmp_path)]) == 2
    assert "no model" in capsys.readouterr().err
