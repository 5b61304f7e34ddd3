"""The new-run form, generated from the recipe schema, and what a submitted form turns into.

Every field of the recipe's sections becomes a form input by its type
(number, checkbox, choice, text), so a new recipe option appears in the
UI without touching it. Fields are left blank by default: only what the
user fills in becomes a ``--set section.key=value`` override on top of the
chosen recipe and preset, exactly as on the command line.

>>> [f["name"] for f in schema_fields()["train"]][:3]
['train.epochs', 'train.batch_size', 'train.accumulate']
>>> overrides({"train.epochs": "3", "model.dim": "", "data.source": "iris"})
['train.epochs=3']
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel

# Sections the form offers field by field; data's source, label and sensitive column have their
# own controls, and the optional analysis sections are toggles.
SECTIONS = ("data", "model", "train", "valuation", "report")
OWN_CONTROLS = {"data.source", "data.label", "data.sensitive"}


def _kind(annotation: Any) -> tuple[str, list[str]]:
    """(input kind, choices) for a field's annotation: number, integer, choice or text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "choice", [str(a) for a in typing.get_args(annotation)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return _kind(args[0])
    if annotation is bool:
        return "choice", ["true", "false"]  # a select, so blank can mean "the recipe's value"
    if annotation is int:
        return "integer", []
    if annotation is float:
        return "number", []
    return "text", []


def schema_fields() -> dict[str, list[dict[str, Any]]]:
    """Per section, its fields as ``{"name", "kind", "choices", "default"}``, in declaration order."""
    from glassbox.config import Recipe

    out: dict[str, list[dict[str, Any]]] = {}
    for section in SECTIONS:
        model: type[BaseModel] = Recipe.model_fields[section].annotation  # type: ignore[assignment]
        fields = []
        for key, info in model.model_fields.items():
            name = f"{section}.{key}"
            if name in OWN_CONTROLS:
                continue
            kind, choices = _kind(info.annotation)
            if typing.get_origin(info.annotation) is list:
                continue  # lists (valuation.baselines, report.limitations) stay recipe-only
            default = info.get_default(call_default_factory=True)
            fields.append({"name": name, "kind": kind, "choices": choices, "default": default})
        out[section] = fields
    return out


_NAME = re.compile(r"^[a-z_]+\.[a-z_0-9]+$")


def overrides(form: dict[str, str]) -> list[str]:
    """``--set`` assignments for the schema fields the user filled in (blank ones keep the recipe's)."""
    known = {f["name"]: f for fields in schema_fields().values() for f in fields}
    out = []
    for name, value in form.items():
        if name not in known or not _NAME.match(name):
            continue
        value = str(value).strip()
        if value == "":
            continue
        out.append(f"{name}={value}")
    return out
