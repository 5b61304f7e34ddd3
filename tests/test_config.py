from __future__ import annotations

import pytest
import yaml

from glassbox.config import PRESETS, Recipe, load_recipe, render
from glassbox.errors import UserError


def write(tmp_path, text: str):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_defaults_fill_every_key():
    rendered = yaml.safe_load(render(load_recipe(None)))
    assert set(rendered) == set(Recipe.model_fields)
    assert rendered["train"]["optimizer"] == "adamw"
    assert Recipe.model_validate(rendered) == load_recipe(None)


def test_layers_preset_file_and_set(tmp_path):
    p = write(tmp_path, "preset: fast\nmodel:\n  depth: 3\n")
    r = load_recipe(p, ["train.lr=0.01", "model.attention=softmax"])
    assert r.model.depth == 3  # the file beats the preset
    assert r.model.dim == PRESETS["fast"]["model"]["dim"]  # the preset beats the default
    assert r.train.lr == 0.01  # --set beats the file
    r2 = load_recipe(p, ["model.depth=5"])
    assert r2.model.depth == 5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("model:\n  dpth: 3\n", "did you mean 'model.depth'"),
        ("trian:\n  epochs: 3\n", "did you mean 'train'"),
        ("train:\n  epochs: many\n", "train.epochs"),
        ("train:\n  optimizer: adam\n", "train.optimizer"),
        ("model: [1, 2\n", "YAML syntax error at line"),
        ("- a\n- b\n", "mapping"),
        ("preset: fastest\n", "unknown preset"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path, text, needle):
    with pytest.raises(UserError) as err:
        load_recipe(write(tmp_path, text))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_set_syntax():
    with pytest.raises(UserError, match="key=value"):
        load_recipe(None, ["model.depth"])


def test_missing_recipe(tmp_path):
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_render_round_trips(tmp_path):
    r = load_recipe(None, ["preset=best", "data.source=wine"])
    p = write(tmp_path, render(r))
    assert load_recipe(p) == r
