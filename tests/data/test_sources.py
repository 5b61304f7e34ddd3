"""Every built-in source loads with the shapes and kinds the rest of glassbox relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassbox.config import DataConfig
from glassbox.data import SOURCES, list_sources, load_dataset
from glassbox.data.sources import SOURCE_INFO
from glassbox.data.text import byte_windows, load_text
from glassbox.errors import UserError

EXPECTED = {
    "breast-cancer": ("tabular", "classification", (569, 30), 2),
    "wine": ("tabular", "classification", (178, 13), 3),
    "iris": ("tabular", "classification", (150, 4), 3),
    "fraud": ("tabular", "classification", (20_000, 14), 2),
    "digits": ("image", "classification", (1797, 1, 8, 8), 10),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classification_sources(name: str) -> None:
    kind, task, shape, n_classes = EXPECTED[name]
    ds = load_dataset(name)
    assert (ds.kind, ds.task, tuple(ds.X.shape), ds.n_classes) == (kind, task, shape, n_classes)
    assert ds.X.dtype == torch.float32 and ds.y.dtype == torch.long
    assert int(ds.y.min()) == 0 and int(ds.y.max()) == n_classes - 1
    assert all(isinstance(c, str) for c in ds.classes)
    assert torch.equal(ds.index, torch.arange(len(ds)))
    if kind == "tabular":
        assert len(ds.feature_names) == ds.X.shape[1]
        assert torch.isfinite(ds.X).all()


def test_every_source_is_listed_with_metadata() -> None:
    generated = {"python-corpus", "mqar", "parity", "spoken-digits"}
    assert set(SOURCES.names()) == set(SOURCE_INFO) == {*EXPECTED, *generated}
    rows = {r["name"]: r for r in list_sources()}
    assert rows["iris"]["rows"] == 150 and rows["iris"]["features"] == 4 and rows["iris"]["classes"] == 3
    assert rows["digits"]["shape"] == [1, 8, 8]
    corpus = rows["python-corpus"]
    assert corpus["task"] == "lm" and corpus["shape"] == [129]
    assert corpus["rows"] == corpus["bytes"] // 129 > 1000
    assert all(r["description"] and "\n" not in r["description"] for r in rows.values())


def test_breast_cancer_uses_sklearn_names() -> None:
    ds = load_dataset("breast-cancer")
    assert ds.classes == ["malignant", "benign"]
    assert ds.feature_names[0] == "mean radius"


def test_fraud_rate_group_and_determinism() -> None:
    a, b = load_dataset("fraud"), load_dataset("fraud", seq_len=7)  # unrelated settings change nothing
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert np.array_equal(a.sensitive, b.sensitive)
    assert 0.01 <= a.y.float().mean().item() <= 0.03
    assert a.sensitive_name == "group" and "group" not in a.feature_names
    assert {"channel=online", "amount"} <= set(a.feature_names)
    rates = {g: a.y.numpy()[a.sensitive == g].mean() for g in np.unique(a.sensitive)}
    assert len(rates) == 3 and max(rates.values()) > 2 * min(rates.values())  # something to audit


def test_fraud_is_learnable_but_not_trivial() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    ds = load_dataset("fraud")
    X, y = StandardScaler().fit_transform(ds.X.numpy()), ds.y.numpy()
    model = LogisticRegression(max_iter=500).fit(X[:14_000], y[:14_000])
    auc = roc_auc_score(y[14_000:], model.predict_proba(X[14_000:])[:, 1])
    assert 0.75 < auc < 0.98


def test_sensitive_override_on_builtin_tables() -> None:
    ds = load_dataset("iris", sensitive="petal width (cm)")
    assert ds.X.shape == (150, 3) and ds.sensitive_name == "petal width (cm)"
    assert ds.sensitive is not None and ds.sensitive[0] == "0.2"
    fraud = load_dataset("fraud", sensitive="channel")
    assert "channel=pos" not in fraud.feature_names and set(fraud.sensitive) == {
        "atm",
        "online",
        "phone",
        "pos",
    }
    with pytest.raises(UserError, match="petal width"):
        load_dataset("iris", sensitive="petal widht (cm)")
    with pytest.raises(UserError, match="image data"):
        load_dataset("digits", sensitive="x")
    with pytest.raises(UserError, match="remove data.label"):
        load_dataset("iris", label="species")


def test_digits_scaled_and_resizable() -> None:
    ds = load_dataset("digits")
    assert ds.X.min() == 0.0 and ds.X.max() == 1.0
    big = load_dataset("digits", image_size=16)
    assert tuple(big.X.shape) == (1797, 1, 16, 16)


def test_python_corpus_deterministic_bytes() -> None:
    a = load_dataset("python-corpus", seq_len=63, max_bytes=50_000)
    b = load_dataset(DataConfig(source="python-corpus", seq_len=63, max_bytes=50_000))
    assert (a.kind, a.task) == ("text", "lm")
    assert a.X.dtype == torch.long and tuple(a.X.shape) == (50_000 // 64, 64)
    assert torch.equal(a.X, b.X)
    assert int(a.X.min()) >= 0 and int(a.X.max()) <= 255
    assert not a.y.any()
    assert bytes(a.X[0].tolist()).isascii()  # it is Python source


def test_byte_windows_drop_the_tail() -> None:
    w = byte_windows(bytes(range(10)), seq_len=2)  # windows of 3 bytes
    assert w.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_text_file(tmp_path) -> None:
    path = tmp_path / "poem.txt"
    path.write_bytes("héllo wörld\n".encode() * 100)
    ds = load_dataset(f"text:{path}", seq_len=15)
    assert tuple(ds.X.shape) == (len(path.read_bytes()) // 16, 16)
    assert bytes(ds.X[0].tolist()) == path.read_bytes()[:16]
    capped = load_text(path, DataConfig(seq_len=15, max_bytes=1000))
    assert len(capped) == 1000 // 16


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "not found"), (b"", "is empty"), (b"abc" * 20, "fewer than 2 windows")],
)
def test_text_errors(tmp_path, content: bytes | None, match: str) -> None:
    path = tmp_path / "t.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as err:
        load_dataset(f"text:{path}", seq_len=64)
    assert "\n" not in str(err.value) and "t.txt" in str(err.value)


def test_text_folder_is_refused(tmp_path) -> None:
    with pytest.raises(UserError, match="is a folder"):
        load_dataset(f"text:{tmp_path}")


def test_unknown_source_suggests() -> None:
    with pytest.raises(UserError, match="did you mean 'iris'") as err:
        load_dataset("irs")
    assert "glassbox datasets" in str(err.value) and "\n" not in str(err.value)


def test_bare_csv_path_suggests_prefix() -> None:
    with pytest.raises(UserError, match="csv:data.csv"):
        load_dataset("data.csv")


def test_bad_override_is_user_error() -> None:
    with pytest.raises(UserError, match="seq_len"):
        load_dataset("iris", seq_len=0)
