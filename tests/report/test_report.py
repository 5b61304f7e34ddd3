"""The HTML report: what each kind of task shows, escaping, and the atomic write."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glassbox.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(metric: str = "accuracy", epochs: int = 3, steps_per_epoch: int = 5) -> list[dict]:
    # The trainer's shape: per-step records with train_loss and lr, then one per-epoch record with val_*.
    out: list[dict] = []
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            out.append({"step": step, "epoch": epoch, "train_loss": 1.0 / step, "lr": 1e-3 * 0.9**step})
        out.append(
            {
                "step": step,
                "epoch": epoch,
                "train_loss_epoch": 0.5 / epoch,
                "val_loss": 0.6 / epoch,
                f"val_{metric}": 0.5 + 0.1 * epoch,
            }
        )
    return out


def _probs(rng: np.random.Generator, y: np.ndarray, k: int) -> np.ndarray:
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += 2.0  # a model that is right most of the time
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _report(tmp_path: Path, **kwargs) -> str:
    args = {
        "title": "test run",
        "config_yaml": "seed: 0\n",
        "data_summary": {"name": "toy", "kind": "tabular", "rows": 100},
        "history": _history(),
        "test_metrics": {"accuracy": 0.9, "loss": 0.25},
    }
    out = write_report(tmp_path / "report.html", **(args | kwargs))
    assert out == tmp_path / "report.html"
    return out.read_text(encoding="utf-8")


def _text(html: str) -> str:
    # Without the base64 images, whose letters could spell anything a test looks for.
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_binary_report_has_roc_and_embedded_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    html = _report(
        tmp_path,
        y_true=y,
        y_prob=_probs(rng, y, 2),
        classes=["benign", "malignant"],
        data_summary={
            "name": "breast-cancer",
            "rows": 569,
            "shape": [30],
            "classes": {"benign": 357, "malignant": 212},
        },
    )
    assert 'id="roc"' in html and "ROC AUC" in html
    images = _pngs(html)
    assert len(images) >= 3
    assert all(png.startswith(PNG_MAGIC) for png in images)
    # Per-class table and the nested class counts of the data summary.
    assert "malignant" in html and "weighted avg" in html
    assert "<th>benign</th><td>357</td>" in html
    assert "[30]" in html


def test_multiclass_report_has_confusion_matrix_and_no_roc(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    classes = [f"digit {i}" for i in range(10)]
    y = rng.integers(0, 10, size=300)
    html = _report(tmp_path, y_true=y, y_prob=_probs(rng, y, 10), classes=classes)
    assert 'id="confusion-matrix"' in html
    assert 'id="roc"' not in html and "ROC" not in _text(html)
    assert all(f"<td>{name}</td>" in html for name in classes)
    assert all(png.startswith(PNG_MAGIC) for png in _pngs(html))


def test_language_model_report_has_curves_only(tmp_path: Path) -> None:
    html = _report(
        tmp_path,
        history=_history(metric="bits_per_byte"),
        test_metrics={"loss": 1.2, "bits_per_byte": 1.73, "perplexity": 3.3},
        data_summary={"name": "stdlib", "kind": "text", "task": "lm", "rows": 1000, "shape": [129]},
    )
    assert "Classification" not in _text(html) and "confusion" not in _text(html)
    assert "Bits per byte" in html and "Learning rate" in html
    assert len(_pngs(html)) == 3  # loss, bits per byte, learning rate


def test_config_and_titles_are_html_escaped(tmp_path: Path) -> None:
    html = _report(
        tmp_path,
        title="<b>run</b>",
        config_yaml="name: <script>alert('x')</script>\n",
        meta={"command": "glassbox run a.yaml --set 'x=<y>'"},
    )
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "<script" not in html  # which also shows the page carries no script at all
    assert "&lt;b&gt;run&lt;/b&gt;" in html and "<b>run</b>" not in html
    assert "x=&lt;y&gt;" in html


def test_extra_sections_are_appended_as_trusted_html(tmp_path: Path) -> None:
    html = _report(
        tmp_path,
        extra_sections=[
            {"title": "Data valuation", "html": "<p class='v'>top rows</p>"},
            {"title": "Fairness", "html": "<table><tr><td>gap</td></tr></table>"},
        ],
    )
    assert "<p class='v'>top rows</p>" in html
    assert html.index("Data valuation</h2>") < html.index("Fairness</h2>")
    assert html.index('id="config"') < html.index("Data valuation</h2>")
    with pytest.raises(ValueError, match="html"):
        _report(tmp_path, extra_sections=[{"title": "no body"}])


def test_report_is_self_contained(tmp_path: Path) -> None:
    html = _report(tmp_path)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _report(tmp_path)
    assert os.listdir(tmp_path) == ["report.html"]
    before = (tmp_path / "report.html").read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    # A write that fails at the last moment keeps the old report and leaves no temp file behind.
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _report(tmp_path, title="second")
    assert os.listdir(tmp_path) == ["report.html"]
    assert (tmp_path / "report.html").read_bytes() == before


def test_bad_predictions_are_refused(tmp_path: Path) -> None:
    y = np.array([0, 1, 1])
    with pytest.raises(ValueError, match="softmax"):
        _report(tmp_path, y_true=y, y_prob=np.array([[2.0, -1.0], [0.0, 3.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="class names"):
        _report(tmp_path, y_true=y, y_prob=np.full((3, 2), 0.5), classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        _report(tmp_path, y_true=y, y_prob=np.full((4, 2), 0.5))


def test_import_does_not_load_matplotlib() -> None:
    # `glassbox --help` must stay fast, so plotting libraries load only when a report is written.
    heavy = "('matplotlib', 'sklearn', 'jinja2')"
    code = f"import sys, glassbox.report; print(any(m in sys.modules for m in {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
