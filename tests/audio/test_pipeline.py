"""An audio recipe end to end: training, the report's audio section, pretraining and few-shot."""

import json

from glassbox.config import load_recipe
from glassbox.pipeline import run_pretrain, run_recipe

from .conftest import TINY

SETS = [
    "data.source=spoken-digits",
    f"data.audio.voices={TINY['voices']}",
    f"data.audio.takes={TINY['takes']}",
    f"data.audio.words={json.dumps(TINY['words'])}",
    f"data.audio.seconds={TINY['seconds']}",
    "model.dim=16",
    "model.depth=1",
    "model.heads=2",
    "train.epochs=2",
    "train.batch_size=8",
    "train.threads=1",
]


def test_training_writes_the_audio_section(espeak, tmp_path):
    run = run_recipe(load_recipe(None, SETS), tmp_path, progress=False)
    meta = run.meta()
    assert meta["status"] == "completed" and 0 <= meta["results"]["test_accuracy"] <= 1
    ev = json.loads((run.path / "audio.json").read_text())
    assert [r["snr"] for r in ev["by_noise"]] == [None, 20.0, 10.0, 5.0, 0.0]
    assert ev["by_noise"][0]["accuracy"] == ev["accuracy"] == meta["results"]["test_accuracy"]
    assert set(ev["by"]) == {"voice_family", "accent"}
    html = (run.path / "report.html").read_text()
    assert "Log-mel spectrograms of test clips" in html and "10 dB SNR" in html and "Confusion matrix" in html
    splits = json.loads((run.path / "splits.json").read_text())
    assert splits["test"]["rows"] == 3  # one held-out voice speaking the three words


def test_pretraining_on_audio_and_fewshot(espeak, tmp_path):
    for method in ("contrastive", "masked"):
        sets = [*SETS, f"pretrain.method={method}", "pretrain.epochs=1", "pretrain.batch_size=4"]
        run = run_pretrain(load_recipe(None, sets), tmp_path / method, progress=False)
        assert run.meta()["status"] == "completed"
        table = json.loads((run.path / "fewshot.json").read_text())
        assert table[0]["shots"] == 1 and set(table[0]["results"]) == {"encoder", "raw"}
        assert "Self-supervised pretraining" in (run.path / "report.html").read_text()
