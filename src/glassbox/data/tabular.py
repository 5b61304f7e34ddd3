"""Tables: ``csv:PATH`` loading and moving a column out of the features for audits.

The stdlib csv module plus numpy, so reading a user's file needs nothing
beyond the core install. Each feature column is numeric when its cells parse
as numbers and categorical (one-hot, ``column=value``) otherwise. Every
problem with the file is a one-line ``UserError`` that names the row or
column and the fix, because a CSV from the wild is the most common way a run
goes wrong.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from glassbox.config import DataConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError, did_you_mean

# Markers other tools write for a missing number (R, pandas, UCI files). They
# count as missing only in a column whose other cells are numbers, so a
# category literally called "None" stays a category.
MISSING_MARKERS = frozenset({"na", "n/a", "nan", "null", "none", "?"})
# A column that is at least this percentage numbers is a numeric column with
# typos in it, not a categorical one: one-hot encoding it would hide the typo.
NUMERIC_PERCENT = 90
# More distinct text values than this is an id or free text, whose one-hot
# encoding would be huge and meaningless.
MAX_CATEGORIES = 1000


def _show(value: str) -> str:
    """A cell as it appears in a one-line message: quoted, newlines escaped, cut short."""
    return repr(value if len(value) <= 40 else value[:37] + "...")


class _Table:
    """The header and the non-blank rows of a CSV, with each row's line number for messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.lines: list[int] = []  # file line where each row ends (rows can span lines when quoted)
        self._read()

    def where(self, i: int) -> str:
        return f"data row {i + 1} (line {self.lines[i]} of {self.path.name})"

    def _read(self) -> None:
        path = self.path
        if not path.exists():
            raise UserError(f"CSV file not found: {path}; check the path after csv: in data.source")
        if path.is_dir():
            raise UserError(f"{path} is a folder, not a CSV file; give data.source: csv:path/to/file.csv")
        reader = None
        try:
            # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that
            # would otherwise stick to the first column's name.
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                for row in reader:
                    line = reader.line_num
                    # Blank lines and all-empty rows (",,,", which spreadsheets
                    # append) carry nothing.
                    if not any(cell.strip() for cell in row):
                        continue
                    if not self.header:
                        self._set_header([cell.strip() for cell in row])
                    elif len(row) != len(self.header):
                        raise UserError(
                            f"{path}, line {line}: {len(row)} fields but the header has {len(self.header)};"
                            f" make that row {len(self.header)} comma-separated fields"
                            " (quote values that contain commas)"
                        )
                    else:
                        self.rows.append([cell.strip() for cell in row])
                        self.lines.append(line)
        except UnicodeDecodeError:
            raise UserError(
                f"{path} is not UTF-8 text; save it as a UTF-8 CSV (Excel: 'CSV UTF-8')"
            ) from None
        except csv.Error as exc:
            line = reader.line_num if reader is not None else 1
            raise UserError(f"{path}, line {line}: {exc}; fix the quoting in that row") from None
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}; check the file's permissions") from None
        if not self.header:
            raise UserError(f"CSV file {path} is empty; it needs a header row of column names and data rows")
        if not self.rows:
            raise UserError(f"CSV file {path} has a header but no data rows; add rows below the header")

    def _set_header(self, names: list[str]) -> None:
        if len(names) == 1:
            for sep, word in ((";", "semicolon"), ("\t", "tab")):
                if sep in names[0]:
                    raise UserError(
                        f"{self.path} looks {word}-separated (its header is one column, {_show(names[0])});"
                        " save it comma-separated"
                    )
        # A blank header cell is usually a saved index; give it a usable name.
        names = [name or f"column{j + 1}" for j, name in enumerate(names)]
        seen: dict[str, int] = {}
        for j, name in enumerate(names):
            if name in seen:
                raise UserError(
                    f"{self.path}: column '{name}' appears twice in the header (columns {seen[name] + 1}"
                    f" and {j + 1}); rename one of them"
                )
            seen[name] = j
        self.header = names

    def column(self, name: str) -> list[str]:
        j = self.header.index(name)
        return [row[j] for row in self.rows]


def _find_column(table: _Table, name: str, role: str, key: str) -> str:
    if name not in table.header:
        raise UserError(
            f"{role} column '{name}' is not in {table.path.name}: {did_you_mean(name, table.header)};"
            f" set {key} to one of its columns"
        )
    return name


def _parse_numbers(cells: list[str]) -> tuple[np.ndarray, list[int], list[int]]:
    """Floats (NaN where empty or a missing marker), and the rows that are text instead of numbers."""
    values = np.full(len(cells), np.nan)
    present: list[int] = []
    text: list[int] = []
    for i, cell in enumerate(cells):
        if cell == "" or cell.lower() in MISSING_MARKERS:
            continue
        present.append(i)
        try:
            values[i] = float(cell)
        except ValueError:
            text.append(i)
    return values, present, text


def _fill_missing(values: np.ndarray, cells: list[str], name: str, table: _Table, impute: str) -> np.ndarray:
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    if impute == "none":
        i = int(np.flatnonzero(bad)[0])
        what = "an empty cell" if cells[i] == "" else _show(cells[i])
        more = f"; {int(bad.sum())} such cells in the column" if bad.sum() > 1 else ""
        raise UserError(
            f"{table.path.name}: column '{name}' has a missing or infinite value at {table.where(i)}:"
            f" {what}{more}; set data.impute: mean (or median) in the recipe to fill them"
        )
    good = values[~bad]
    if len(good) == 0:
        raise UserError(
            f"{table.path.name}: column '{name}' has no finite numbers to compute a {impute} from;"
            " delete the column or fill it in"
        )
    fill = float(good.mean() if impute == "mean" else np.median(good))
    return np.where(bad, fill, values)


def _encode(name: str, cells: list[str], table: _Table, impute: str) -> tuple[np.ndarray, list[str]]:
    """One column as ``(N, k)`` features and their names: k = 1 if numeric, one per category if not."""
    values, present, text = _parse_numbers(cells)
    if all(cell == "" for cell in cells):
        raise UserError(f"{table.path.name}: column '{name}' is empty in every row; delete the column")
    if not text:
        return _fill_missing(values, cells, name, table, impute)[:, None], [name]
    if 100 * (len(present) - len(text)) >= NUMERIC_PERCENT * len(present):  # integers: 90 % exactly counts
        i = text[0]
        more = f" ({len(text)} such cells)" if len(text) > 1 else ""
        raise UserError(
            f"{table.path.name}: column '{name}' holds numbers but {table.where(i)} has text"
            f" {_show(cells[i])}{more}; fix the value, or empty the cell if it is missing"
        )
    categories = sorted({cell for cell in cells if cell != ""})
    if len(categories) > MAX_CATEGORIES:
        raise UserError(
            f"{table.path.name}: column '{name}' has {len(categories)} distinct text values, too many to"
            " one-hot encode (an id or free text?); delete the column or group its values"
        )
    col = {c: k for k, c in enumerate(categories)}
    onehot = np.zeros((len(cells), len(categories)))  # (N, k); an empty cell stays all zeros
    for i, cell in enumerate(cells):
        if cell != "":
            onehot[i, col[cell]] = 1.0
    return onehot, [f"{name}={c}" for c in categories]


def _classes(cells: list[str]) -> list[str]:
    """Distinct labels, in numeric order when they are all numbers (so "10" follows "9")."""
    distinct = set(cells)
    try:
        numbers = {c: float(c) for c in distinct}
    except ValueError:
        return sorted(distinct)
    if not all(np.isfinite(v) for v in numbers.values()):
        return sorted(distinct)
    return sorted(distinct, key=lambda c: (numbers[c], c))


def _labels(table: _Table, name: str) -> tuple[torch.Tensor, list[str]]:
    cells = table.column(name)
    for i, cell in enumerate(cells):
        if cell == "":
            raise UserError(
                f"{table.path.name}: label column '{name}' is empty at {table.where(i)};"
                " fill in the label or delete the row"
            )
    classes = _classes(cells)
    if len(classes) < 2:
        raise UserError(
            f"{table.path.name}: label column '{name}' has a single class ({_show(classes[0])});"
            " a classifier needs at least two, so check data.label or add rows of another class"
        )
    # A label with nearly one class per row is a measurement, not a category:
    # usually the last column was taken as the label by default.
    if len(classes) > max(20, len(cells) // 2):
        raise UserError(
            f"{table.path.name}: label column '{name}' has {len(classes)} distinct values in {len(cells)}"
            " rows, too many for classes; set data.label to a column of categories"
        )
    index = {c: k for k, c in enumerate(classes)}
    return torch.tensor([index[c] for c in cells], dtype=torch.long), classes  # (N,)


def load_csv(path: str | Path, cfg: DataConfig) -> Dataset:
    """A classification table from a CSV with a header row.

    The label is ``cfg.label`` (the last column when unset); ``cfg.sensitive``
    is held out of the features into ``Dataset.sensitive``; missing numbers
    are an error unless ``cfg.impute`` is ``mean`` or ``median``.
    """
    table = _Table(Path(path).expanduser())
    label = _find_column(table, cfg.label or table.header[-1], "label", "data.label")
    sensitive = None
    if cfg.sensitive is not None:
        sensitive = _find_column(table, cfg.sensitive, "sensitive", "data.sensitive")
        if sensitive == label:
            raise UserError(
                f"data.sensitive and data.label are both '{label}';"
                " the sensitive column must be another column"
            )
    y, classes = _labels(table, label)

    blocks: list[np.ndarray] = []
    names: list[str] = []
    for name in table.header:
        if name in (label, sensitive):
            continue
        block, block_names = _encode(name, table.column(name), table, cfg.impute)
        blocks.append(block)
        names.extend(block_names)
    if not blocks:
        held = f"'{label}'" + (f" and '{sensitive}'" if sensitive else "")
        raise UserError(f"{table.path.name} has no feature columns besides {held}; add columns to learn from")
    X = torch.from_numpy(np.concatenate(blocks, axis=1).astype(np.float32))  # (N, F)

    groups = None
    if sensitive is not None:
        groups = np.array([cell or "(missing)" for cell in table.column(sensitive)])  # (N,) str
    return Dataset(
        name=table.path.name,
        kind="tabular",
        task="classification",
        X=X,
        y=y,
        feature_names=names,
        classes=classes,
        sensitive=groups,
        sensitive_name=sensitive,
        description=f"{len(y)} rows of {table.path}",
    )


def hold_out(ds: Dataset, column: str | None) -> Dataset:
    """Move a feature column of a built-in table into ``ds.sensitive`` (what ``data.sensitive`` asks for).

    A dataset's own sensitive attribute (the fraud set's ``group``) is kept
    when ``column`` is None or names it; asking for another column replaces it.
    """
    if column is None or column == ds.sensitive_name:
        return ds
    if ds.kind != "tabular":
        raise UserError(
            f"data.sensitive names a table column, but '{ds.name}' is {ds.kind} data; remove data.sensitive"
        )
    names = ds.feature_names
    if column in names:
        cols = [names.index(column)]
        groups = np.array([format(v, "g") for v in ds.X[:, cols[0]].tolist()])  # (N,) str, like CSV cells
    else:
        # A categorical column lives in X as its one-hot block "column=value".
        cols = [k for k, n in enumerate(names) if n.startswith(column + "=")]
        if not cols:
            options = {n.split("=", 1)[0] for n in names} | (
                {ds.sensitive_name} if ds.sensitive_name else set()
            )
            raise UserError(
                f"sensitive column '{column}' is not in dataset '{ds.name}': {did_you_mean(column, options)};"
                " set data.sensitive to one of its columns"
            )
        values = np.array(["(missing)"] + [names[k].split("=", 1)[1] for k in cols])
        block = ds.X[:, cols]  # (N, k) one-hot; an all-zero row is a missing value
        hot = torch.where(block.sum(1) > 0, block.argmax(1) + 1, 0)
        groups = values[hot.numpy()]  # (N,) str
    keep = [k for k in range(len(names)) if k not in cols]
    return replace(
        ds,
        X=ds.X[:, keep],  # (N, F - 1)
        feature_names=[names[k] for k in keep],
        sensitive=groups,
        sensitive_name=column,
    )
