"""Cleaning: retrain without the lowest-valued training rows of an earlier run.

``glassbox train RECIPE --drop-lowest 0.1 --values RUN/values.csv`` reads the
values, drops that fraction of the training split (the rows with the lowest
values, ties broken by row id), and trains again on the same splits; the
report then compares the two runs. The values must come from a run of the
same data and seed, so that its training rows are this run's.

>>> import tempfile, pathlib
>>> from glassbox.data import load_dataset, split_dataset
>>> train, _, _ = split_dataset(load_dataset("iris"), 0.2, 0.2, seed=0)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "values.csv"
>>> rows = "".join(f"{r},{-1.0 if r < 30 else 1.0},x,0\\n" for r in train.index.tolist())
>>> _ = path.write_text("index,value,label,noisy\\n" + rows)
>>> kept, info = drop_lowest(train, path, 0.1)
>>> len(train) - len(kept) == info["dropped"] == round(0.1 * len(train))
True
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from glassbox.data.base import Dataset
from glassbox.errors import UserError


def read_values(path: str | Path) -> dict[int, float]:
    """Source row id -> value, from a ``values.csv``; one-line errors for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"values file not found: {path}; give the values.csv of a run that ran valuation")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or not {"index", "value"} <= set(header):
            raise UserError(
                f"{path} has no 'index' and 'value' columns; give a values.csv written by glassbox"
            )
        i, v = header.index("index"), header.index("value")
        out: dict[int, float] = {}
        for line, row in enumerate(reader, start=2):
            try:
                out[int(row[i])] = float(row[v])
            except (ValueError, IndexError):
                raise UserError(f"{path}, line {line}: expected a row id and a number, got {row}") from None
    return out


def drop_lowest(train: Dataset, values_path: str | Path, fraction: float) -> tuple[Dataset, dict[str, Any]]:
    """``train`` without its lowest-valued ``fraction`` of rows, and what was dropped."""
    if not 0 < fraction < 1:
        raise UserError(f"--drop-lowest takes a fraction above 0 and below 1 (got {fraction}), e.g. 0.1")
    values = read_values(values_path)
    ids = train.index.tolist()
    missing = [r for r in ids if r not in values]
    if missing:
        raise UserError(
            f"{values_path} has no value for {len(missing)} of this run's {len(ids)} training rows "
            f"(e.g. row {missing[0]}): it comes from a run with other data or another seed; "
            "use the recipe and seed of the run that wrote it"
        )
    v = np.array([values[r] for r in ids])
    k = round(fraction * len(ids))
    order = np.lexsort((np.array(ids), v))  # lowest value first, then lowest row id
    drop = np.sort(order[:k])
    keep = np.setdiff1d(np.arange(len(ids)), drop)
    if len(keep) == 0:
        raise UserError(f"--drop-lowest {fraction} would leave no training rows; choose a smaller fraction")
    info = {
        "values": str(values_path),
        "fraction": fraction,
        "dropped": int(k),
        "dropped_rows": [ids[j] for j in drop.tolist()],
    }
    return train.subset(keep), info
