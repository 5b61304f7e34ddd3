"""Data: one ``load_dataset`` for every source a recipe can name.

``data.source`` is a built-in name (see ``glassbox datasets``) or a prefixed
path: ``csv:PATH``, ``images:DIR``, ``text:PATH`` or ``audio:DIR`` (WAV files). Whatever the source, the
result is a :class:`Dataset`, which :func:`split_dataset` and
:func:`flip_labels` take as it is.

>>> ds = load_dataset("iris")
>>> tuple(ds.X.shape), ds.classes[0]
((150, 4), 'setosa')
>>> train, val, test = split_dataset(ds, 0.2, 0.2, seed=0)
>>> len(train), len(val), len(test)
(90, 30, 30)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from glassbox.config import DataConfig
from glassbox.data.audio import load_audio_folder
from glassbox.data.base import Dataset
from glassbox.data.images import load_image_folder
from glassbox.data.noise import flip_labels
from glassbox.data.partition import partition, partition_summary
from glassbox.data.sources import SOURCES, list_sources
from glassbox.data.splits import split_dataset
from glassbox.data.tabular import hold_out, load_csv
from glassbox.data.text import load_text
from glassbox.errors import UserError, did_you_mean

__all__ = [
    "SOURCES",
    "Dataset",
    "flip_labels",
    "list_sources",
    "load_dataset",
    "partition",
    "partition_summary",
    "split_dataset",
]

_LOADERS = {"csv:": load_csv, "images:": load_image_folder, "text:": load_text, "audio:": load_audio_folder}


def _config(source: str | DataConfig, overrides: dict[str, Any]) -> DataConfig:
    try:
        if isinstance(source, DataConfig):
            # model_copy(update=...) would skip validation; a bad override must fail here.
            return DataConfig.model_validate({**source.model_dump(), **overrides})
        return DataConfig(source=source, **overrides)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"])
        raise UserError(f"data.{key}: {e['msg']} (got {e.get('input')!r}); fix the value") from None


def _unknown(name: str) -> UserError:
    # A bare path is the commonest slip: say which prefix it needs.
    path = Path(name).expanduser()
    if path.is_dir():
        return UserError(f"unknown dataset '{name}': for a folder of images write data.source: images:{name}")
    if path.suffix.lower() in (".csv", ".tsv"):
        return UserError(f"unknown dataset '{name}': for a CSV file write data.source: csv:{name}")
    if path.is_file():
        return UserError(f"unknown dataset '{name}': for a text file write data.source: text:{name}")
    return UserError(
        f"unknown dataset '{name}': {did_you_mean(name, SOURCES.names())};"
        " run `glassbox datasets` to list them"
    )


def load_dataset(source: str | DataConfig, **overrides: Any) -> Dataset:
    """Load what ``source`` names; a string is short for ``DataConfig(source=..., **overrides)``.

    Raises UserError, with one line naming the problem and the fix, for
    anything wrong with the source.
    """
    cfg = _config(source, overrides)
    for prefix, loader in _LOADERS.items():
        if cfg.source.startswith(prefix):
            path = cfg.source[len(prefix) :].strip()
            if not path:
                raise UserError(f"data.source '{cfg.source}' has no path; write it as {prefix}PATH")
            if prefix != "csv:" and (cfg.label is not None or cfg.sensitive is not None):
                raise UserError(
                    f"data.label and data.sensitive name CSV columns; remove them for {cfg.source}"
                )
            return loader(path, cfg)
    if cfg.source not in SOURCES:
        raise _unknown(cfg.source)
    if cfg.label is not None:
        raise UserError(
            f"data.label picks the label column of a csv: source; dataset '{cfg.source}' has its own,"
            " so remove data.label"
        )
    return hold_out(SOURCES.get(cfg.source)(cfg), cfg.sensitive)
