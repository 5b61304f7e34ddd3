"""Every registered attention kind trains the shipped digits recipe and a small text model."""

from __future__ import annotations

import pytest

from glassbox.cli.common import shipped_recipes
from glassbox.config import load_recipe
from glassbox.nn.attention import KINDS
from glassbox.pipeline import run_recipe


@pytest.mark.parametrize("kind", KINDS.names())
def test_digits_recipe_trains_with_every_kind(kind, tmp_path):
    # A small window and chunk, so that 17-token images cross both.
    sets = [f"model.attention={kind}", "model.window=4", "model.chunk_size=8", "train.epochs=3"]
    recipe = load_recipe(shipped_recipes()["digits"], [*sets, "report.enabled=false"])
    meta = run_recipe(recipe, tmp_path).meta()
    assert meta["status"] == "completed"
    assert meta["results"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1


@pytest.mark.parametrize("kind", KINDS.names())
def test_text_model_trains_and_generates_with_every_kind(kind, tmp_path):
    from glassbox.nn import load_model

    recipe = load_recipe(
        None,
        [
            "data.source=python-corpus",
            "data.max_bytes=20000",
            "data.seq_len=64",
            f"model.attention={kind}",
            "model.dim=32",
            "model.depth=1",
            "model.max_len=64",
            "model.window=16",
            "model.chunk_size=16",
            "train.epochs=1",
            "report.enabled=false",
        ],
    )
    run = run_recipe(recipe, tmp_path)
    assert run.meta()["results"]["test_bits_per_byte"] < 8.0  # better than uniform over bytes
    model = load_model(run.path)
    out = model.generate(b"def ", max_new_tokens=20)
    assert out.shape[-1] == 4 + 20
