"""The data-value report sections: what they show for each kind, detection scores, escaping, edge cases."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from glassbox.report import write_report
from glassbox.report.valuation import cleaning_section, extremes, valuation_section

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def _text(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]


def _table_rows(html: str, after: str) -> list[list[str]]:
    """The body rows of the first table after the text ``after``, as lists of cell texts."""
    start = html.index(after)
    table = html[html.index("<tbody>", start) : html.index("</tbody>", start)]
    return [_cells(row) for row in re.findall(r"<tr>(.*?)</tr>", table)]


def _case(n: int, *, seed: int = 0, flip: float | None = 0.15) -> dict:
    rng = np.random.default_rng(seed)
    noisy = rng.random(n) < flip if flip is not None else None
    flipped = noisy if noisy is not None else np.zeros(n, dtype=bool)
    return {
        "values": {
            "inrun": rng.normal(size=n) - 1.5 * flipped,
            "knn_shapley": rng.normal(size=n) - 0.5 * flipped,
        },
        "source_ids": rng.permutation(10 * n)[:n],
        "labels": [f"digit {c}" for c in rng.integers(0, 10, size=n)],
        "noisy": noisy,
    }


def _images(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, channels, 8, 8))


@pytest.mark.parametrize("channels", [1, 3])
def test_image_section_has_histogram_roc_and_two_grids(channels: int) -> None:
    case = _case(200)
    section = valuation_section(**case, kind="image", examples=_images(200, channels), notes=["<notes>"])
    html = section["html"]
    assert section["title"] == "Data values"
    pngs = _pngs(html)
    # The histogram, the detection ROC and one grid each for the harmful and the helpful rows.
    assert len(pngs) == 4 and all(p.startswith(PNG_MAGIC) for p in pngs)
    assert 'id="values-roc"' in html and "red frame" in html
    assert "&lt;notes&gt;" in html and "<notes>" not in html
    # The grids come with their rows as tables too; the harmful one lists the lowest values.
    harmful = _table_rows(html, "most harmful rows (lowest values), as a table")
    lowest = np.argsort(case["values"]["inrun"])[:20]
    assert [int(r[0]) for r in harmful] == case["source_ids"][lowest].tolist()


def test_detection_table_matches_sklearn() -> None:
    case = _case(300, seed=1)
    html = valuation_section(**case, kind="image", examples=_images(300))["html"]
    rows = {r[0]: r for r in _table_rows(html, 'id="values-methods"')}
    assert set(rows) == {"In-run Data Shapley", "KNN-Shapley"}
    noisy = case["noisy"]
    k = int(noisy.sum())
    for key, name in (("inrun", "In-run Data Shapley"), ("knn_shapley", "KNN-Shapley")):
        v = case["values"][key]
        _, count, _rho, auroc, precision = rows[name]
        assert int(count) == 300
        assert float(auroc) == pytest.approx(roc_auc_score(noisy, -v), rel=1e-3)
        assert float(precision) == pytest.approx(noisy[np.argsort(v)[:k]].mean(), rel=1e-3)
    assert f"k = {k}" in html
    # In-run values were built to separate the flipped rows better than the baseline.
    assert float(rows["In-run Data Shapley"][3]) > float(rows["KNN-Shapley"][3])


def test_tabular_section_lists_extremes_with_escaped_features() -> None:
    n, f = 120, 12
    case = _case(n, seed=2)
    features = np.random.default_rng(3).normal(size=(n, f))
    names = ["<b>x</b>", *[f"f{j}" for j in range(1, f)]]
    html = valuation_section(**case, kind="tabular", examples=features, feature_names=names)["html"]
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "The first 8 of 12 feature columns" in html
    assert "f7" in _text(html) and "f8" not in _text(html)
    assert len(_pngs(html)) == 2  # histogram and ROC; no image grids for tables
    v, ids = case["values"]["inrun"], case["source_ids"]
    harmful = _table_rows(html, "most harmful rows (lowest values)")
    helpful = _table_rows(html, "most helpful rows (highest values)")
    assert [int(r[0]) for r in harmful] == ids[np.argsort(v)[:20]].tolist()
    assert [int(r[0]) for r in helpful] == ids[np.argsort(-v)[:20]].tolist()
    # row, label, value, flipped, then 8 features.
    assert len(harmful[0]) == 4 + 8
    assert {r[3] for r in harmful} <= {"yes", "no"}
    first = int(np.argmin(v))
    assert harmful[0][1] == case["labels"][first]
    assert harmful[0][3] == ("yes" if case["noisy"][first] else "no")


def test_no_noise_means_no_roc_and_plain_lists_for_text() -> None:
    case = _case(80, seed=4, flip=None)
    html = valuation_section(**case, kind="text", examples=None)["html"]
    assert len(_pngs(html)) == 1  # the histogram only
    assert "ROC" not in _text(html) and "AUROC" not in html and "flipped" not in _text(html)
    # Two methods are still compared by rank correlation.
    assert "Methods compared" in html and "rank correlation" in html
    harmful = _table_rows(html, "most harmful rows (lowest values)")
    assert len(harmful) == 20 and len(harmful[0]) == 3  # row, label, value


def test_no_flipped_rows_has_no_roc() -> None:
    case = _case(50, seed=5)
    case["noisy"] = np.zeros(50, dtype=bool)
    html = valuation_section(**case, kind="sequence", examples=None)["html"]
    assert 'id="values-roc"' not in html and "AUROC" not in html
    assert "No training label was flipped" in html


@pytest.mark.parametrize("n", [1, 7, 39])
def test_fewer_rows_than_the_lists_split_them(n: int) -> None:
    case = _case(n, seed=6)
    html = valuation_section(**case, kind="image", examples=_images(n))["html"]
    harmful, helpful = extremes(case["values"]["inrun"])
    assert len(harmful) + len(helpful) == n and not set(harmful) & set(helpful)
    assert len(harmful) == (n + 1) // 2
    assert (
        f"The {len(harmful)} most harmful rows" if n > 1 else "The most harmful row (lowest value)"
    ) in html
    assert len(_pngs(html)) >= 2  # the histogram and at least the harmful grid


def test_nan_and_inf_values_are_left_out() -> None:
    case = _case(100, seed=7)
    v = case["values"]["inrun"]
    v[[0, 5, 9]] = [np.nan, np.inf, -np.inf]
    case["values"]["knn_shapley"][3] = np.nan
    html = valuation_section(**case, kind="tabular", examples=np.ones((100, 3)))["html"]
    assert "3 of In-run Data Shapley" in html and "1 of KNN-Shapley" in html
    shown = {
        int(r[0]) for r in _table_rows(html, "most harmful rows") + _table_rows(html, "most helpful rows")
    }
    assert not shown & set(case["source_ids"][[0, 5, 9]].tolist())
    keep = np.isfinite(v)
    rows = {r[0]: r for r in _table_rows(html, 'id="values-methods"')}
    assert int(rows["In-run Data Shapley"][1]) == 97
    expected = roc_auc_score(case["noisy"][keep], -v[keep])
    assert float(rows["In-run Data Shapley"][3]) == pytest.approx(expected, rel=1e-3)
    # Not a single finite value: no histogram, no lists, and still no crash.
    case["values"]["inrun"] = np.full(100, np.nan)
    html = valuation_section(**case, kind="image", examples=_images(100))["html"]
    assert "No row has a finite" in html and "values-histogram" not in html


def test_misaligned_inputs_are_refused() -> None:
    case = _case(10)
    with pytest.raises(ValueError, match="primary"):
        valuation_section(**case, kind="text", examples=None, primary="tracin")
    with pytest.raises(ValueError, match="labels"):
        valuation_section(**(case | {"labels": ["a"] * 9}), kind="text", examples=None)
    with pytest.raises(ValueError, match="noisy"):
        valuation_section(**(case | {"noisy": np.zeros(11, bool)}), kind="text", examples=None)
    with pytest.raises(ValueError, match="image examples"):
        valuation_section(**case, kind="image", examples=np.zeros((9, 1, 8, 8)))


def test_cleaning_section_differences() -> None:
    section = cleaning_section(
        base={"run": "<base>", "results": {"test_accuracy": 0.912, "test_loss": 0.31, "test_auroc": 0.97}},
        cleaned={"run": "clean", "results": {"test_accuracy": 0.947, "test_loss": 0.22, "note": "x"}},
        fraction=0.1,
        dropped=120,
        flipped_dropped=87,
    )
    html = section["html"]
    assert section["title"] == "Cleaning: retrained without the lowest-valued data"
    assert "Dropped 120 of the training rows (10 %), of which 87 had flipped labels." in html
    assert "&lt;base&gt;" in html and "<base>" not in html
    rows = {r[0]: r[1:] for r in _table_rows(html, "<table")}
    assert rows["test_accuracy"] == ["0.912", "0.947", "+0.035"]
    assert rows["test_loss"] == ["0.31", "0.22", "-0.09"]
    assert rows["test_auroc"] == ["0.97", "—", "—"]
    assert "note" not in rows  # not a number
    plain = cleaning_section(
        base={"run": "a", "results": {"test_loss": 0.5}},
        cleaned={"run": "b", "results": {"test_loss": 0.5}},
        fraction=0.05,
        dropped=3,
        flipped_dropped=None,
    )["html"]
    assert "Dropped 3 of the training rows (5 %)." in plain and "flipped" not in plain
    assert _table_rows(plain, "<table")[0][3] == "0"
    with pytest.raises(ValueError, match="fraction"):
        cleaning_section(
            base={"results": {}}, cleaned={"results": {}}, fraction=5, dropped=1, flipped_dropped=0
        )


def test_sections_in_a_full_report(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = 400
    case = _case(n, seed=8)
    images = (digits.images[:n] / 16.0)[:, None]
    sections = [
        valuation_section(**case, kind="image", examples=images, notes=["Summed over training steps."]),
        cleaning_section(
            base={"run": "base", "results": {"test_accuracy": 0.9}},
            cleaned={"run": "cleaned", "results": {"test_accuracy": 0.92}},
            fraction=0.1,
            dropped=40,
            flipped_dropped=25,
        ),
    ]
    out = write_report(
        tmp_path / "report.html",
        title="digits",
        config_yaml="seed: 0\n",
        data_summary={"name": "digits", "rows": n},
        history=[{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}],
        test_metrics={"accuracy": 0.92},
        extra_sections=sections,
    )
    html = out.read_text(encoding="utf-8")
    assert html.index("Data values</h2>") < html.index(
        "Cleaning: retrained without the lowest-valued data</h2>"
    )
    assert len(_pngs(html)) == 1 + 4  # the loss curve, then histogram, ROC and two grids
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "<script" not in html
