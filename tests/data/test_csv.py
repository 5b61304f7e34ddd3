"""csv:PATH: type inference, encoding, imputation, and a one-line error for every bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glassbox.config import DataConfig
from glassbox.data import load_dataset
from glassbox.data.tabular import load_csv
from glassbox.errors import UserError

GOOD = """age,city,income,smoker,outcome
30,paris,100.5,yes,sick
40,rome,200,no,well
50,paris,,no,well
60,oslo,400,yes,sick
"""


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **cfg) -> object:
    return load_dataset(f"csv:{path}", **cfg)


def raises(path: Path, *needles: str, **cfg) -> str:
    """Load, expect a UserError, and check it is one line that names every needle."""
    with pytest.raises(UserError) as err:
        load(path, **cfg)
    message = str(err.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_numeric_and_categorical_inference(tmp_path) -> None:
    ds = load(write(tmp_path, GOOD), impute="mean")
    assert ds.kind == "tabular" and ds.task == "classification"
    assert ds.feature_names == [
        "age",
        "city=oslo",
        "city=paris",
        "city=rome",
        "income",
        "smoker=no",
        "smoker=yes",
    ]
    assert ds.classes == ["sick", "well"]
    assert ds.y.tolist() == [0, 1, 1, 0]
    assert ds.X.dtype == torch.float32 and tuple(ds.X.shape) == (4, 7)
    assert ds.X[0].tolist() == [30, 0, 1, 0, 100.5, 0, 1]
    assert ds.name == "data.csv"


def test_impute_mean_and_median(tmp_path) -> None:
    path = write(tmp_path, "a,b,y\n1,inf,x\n2,nan,y\n,3,x\n9,,y\n")
    mean = load(path, impute="mean")
    assert mean.X[:, 0].tolist() == [1, 2, 4, 9]  # the mean of 1, 2, 9
    assert mean.X[:, 1].tolist() == [3, 3, 3, 3]  # inf is missing, not a value
    median = load(path, impute="median")
    assert median.X[:, 0].tolist() == [1, 2, 2, 9]


def test_missing_markers_count_as_missing(tmp_path) -> None:
    path = write(tmp_path, "a,y\n1,x\nNA,y\n3,x\n?,y\n")
    assert load(path, impute="mean").X[:, 0].tolist() == [1, 2, 3, 2]


def test_label_and_sensitive_columns(tmp_path) -> None:
    ds = load(write(tmp_path, GOOD), label="smoker", sensitive="city", impute="median")
    assert ds.classes == ["no", "yes"]
    assert ds.sensitive_name == "city" and list(ds.sensitive) == ["paris", "rome", "paris", "oslo"]
    assert not any(n.startswith(("city", "smoker")) for n in ds.feature_names)
    assert "outcome=well" in ds.feature_names  # the old last column is now a feature


def test_numeric_labels_sort_numerically(tmp_path) -> None:
    rows = "".join(f"{i},{label}\n" for i, label in enumerate(["10", "9", "2", "10", "9", "2"]))
    ds = load(write(tmp_path, "x,grade\n" + rows))
    assert ds.classes == ["2", "9", "10"]
    assert ds.y.tolist() == [2, 1, 0, 2, 1, 0]


def test_quotes_bom_and_blank_lines(tmp_path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes('\ufeffnote,v,y\n"a, b",1,p\n\n"c",2,q\n,,\n'.encode())
    ds = load(path)
    assert len(ds) == 2 and ds.feature_names == ["note=a, b", "note=c", "v"]


def test_via_data_config(tmp_path) -> None:
    path = write(tmp_path, GOOD)
    ds = load_csv(path, DataConfig(impute="mean"))
    assert len(ds) == 4


# --- every bad input is a one-line UserError naming the problem and the fix ---


def test_missing_file(tmp_path) -> None:
    raises(tmp_path / "nope.csv", "not found", "nope.csv")


def test_directory(tmp_path) -> None:
    raises(tmp_path, "is a folder", "csv:")


def test_empty_file(tmp_path) -> None:
    raises(write(tmp_path, ""), "is empty", "data.csv")


def test_header_only(tmp_path) -> None:
    raises(write(tmp_path, "a,b,y\n"), "no data rows", "data.csv")


def test_ragged_row(tmp_path) -> None:
    raises(write(tmp_path, "a,b,y\n1,2,x\n3,4\n"), "line 3", "2 fields", "header has 3")


def test_semicolon_file(tmp_path) -> None:
    raises(write(tmp_path, "a;b;y\n1;2;x\n"), "semicolon", "comma-separated")


def test_duplicate_header(tmp_path) -> None:
    raises(write(tmp_path, "a,a,y\n1,2,x\n"), "'a' appears twice", "rename")


def test_unknown_label_suggests_nearest(tmp_path) -> None:
    raises(write(tmp_path, GOOD), "'outcom'", "did you mean 'outcome'", "data.label", label="outcom")


def test_unknown_sensitive(tmp_path) -> None:
    raises(write(tmp_path, GOOD), "sensitive column 'sex'", "data.sensitive", sensitive="sex", impute="mean")


def test_sensitive_is_label(tmp_path) -> None:
    raises(write(tmp_path, GOOD), "'outcome'", sensitive="outcome", impute="mean")


def test_single_class(tmp_path) -> None:
    raises(write(tmp_path, "a,y\n1,x\n2,x\n"), "single class", "'y'", "'x'")


def test_empty_label_cell(tmp_path) -> None:
    raises(write(tmp_path, "a,y\n1,x\n2,\n3,z\n"), "label column 'y'", "data row 2", "line 3")


def test_continuous_label(tmp_path) -> None:
    rows = "".join(f"{i},{i * 1.5}\n" for i in range(60))
    raises(write(tmp_path, "a,price\n" + rows), "'price'", "60 distinct", "data.label")


def test_numeric_column_with_text(tmp_path) -> None:
    rows = [f"{i},{i % 2}" for i in range(20)]
    rows[13] = "1O,1"  # letter O for zero: the classic typo
    message = raises(
        write(tmp_path, "dose,y\n" + "\n".join(rows) + "\n"), "'dose'", "'1O'", "data row 14", "line 15"
    )
    assert "fix the value" in message


def test_exactly_ninety_percent_numbers_is_numeric(tmp_path) -> None:
    cells = [str(i) for i in range(9)] + ["1O", ""]  # 9 of 10 filled cells are numbers
    rows = "".join(f"{c},{i % 2}\n" for i, c in enumerate(cells))
    raises(write(tmp_path, "dose,y\n" + rows), "'dose'", "'1O'", "data row 10")


def test_mostly_text_column_is_categorical(tmp_path) -> None:
    ds = load(write(tmp_path, "size,y\n1,a\nbig,b\nsmall,a\n2,b\n"))
    assert ds.feature_names == ["size=1", "size=2", "size=big", "size=small"]


@pytest.mark.parametrize(
    ("cell", "shown"), [("", "an empty cell"), ("nan", "'nan'"), ("inf", "'inf'"), ("-inf", "'-inf'")]
)
def test_missing_values_without_impute(tmp_path, cell: str, shown: str) -> None:
    path = write(tmp_path, f"a,b,y\n1,2,x\n3,{cell},z\n")
    raises(path, "column 'b'", "data row 2", "line 3", shown, "data.impute: mean (or median)")


def test_all_empty_column(tmp_path) -> None:
    raises(write(tmp_path, "a,b,y\n1,,x\n2,,z\n"), "column 'b'", "empty in every row")


def test_impute_with_nothing_to_average(tmp_path) -> None:
    raises(write(tmp_path, "a,b,y\n1,nan,x\n2,,z\n"), "column 'b'", "no finite numbers", impute="mean")


def test_only_a_label(tmp_path) -> None:
    raises(write(tmp_path, "y\nx\nz\n"), "no feature columns", "'y'")


def test_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("a,y\n1,caf\xe9\n2,b\n".encode("latin-1"))
    raises(path, "not UTF-8", "latin.csv")


def test_too_many_categories(tmp_path) -> None:
    rows = "".join(f"id{i},{i % 2}\n" for i in range(1001))
    raises(write(tmp_path, "uid,y\n" + rows), "'uid'", "1001 distinct")


def test_error_rows_point_at_lines_after_blank_lines(tmp_path) -> None:
    raises(write(tmp_path, "a,y\n\n1,x\n\n,z\n"), "data row 2", "line 5")


def test_values_are_float32_and_rows_traceable(tmp_path) -> None:
    ds = load(write(tmp_path, GOOD), impute="mean")
    assert torch.equal(ds.index, torch.arange(4))
    assert np.isclose(ds.X[2, 4].item(), (100.5 + 200 + 400) / 3)
