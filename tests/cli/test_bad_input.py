"""Every kind of bad input: one line naming the problem and the fix, exit 2, no traceback,
and no run folder left looking complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glassbox.cli.main import main


def recipe(tmp_path: Path, source: str, extra: str = "") -> str:
    p = tmp_path / "recipe.yaml"
    p.write_text(f"data:\n  source: '{source}'\n{extra}train:\n  epochs: 1\nreport:\n  enabled: false\n")
    return str(p)


def csv_file(tmp_path: Path, text: str) -> str:
    p = tmp_path / "data.csv"
    p.write_text(text)
    return str(p)


def good_rows(n: int = 20) -> str:
    return "".join(f"{i % 7},{(i * 3) % 5},{'a' if i % 2 else 'b'},{i % 2}\n" for i in range(n))


def png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=128).save(path)


def case_missing_csv(tmp_path):
    return ["train", recipe(tmp_path, f"csv:{tmp_path}/nope.csv")], "not found"


def case_empty_csv(tmp_path):
    return ["train", recipe(tmp_path, "csv:" + csv_file(tmp_path, ""))], "empty"


def case_ragged_row(tmp_path):
    text = "x1,x2,c,label\n" + good_rows(5) + "1,2,a\n" + good_rows(5)
    return ["train", recipe(tmp_path, "csv:" + csv_file(tmp_path, text))], "line 7"


def case_missing_label(tmp_path):
    src = "csv:" + csv_file(tmp_path, "x1,x2,c,label\n" + good_rows())
    return ["train", recipe(tmp_path, src, "  label: lable\n")], "label"


def case_text_in_numeric(tmp_path):
    rows = good_rows(30).splitlines()
    rows[12] = "oops,1,a,0"
    src = "csv:" + csv_file(tmp_path, "x1,x2,c,label\n" + "\n".join(rows) + "\n")
    return ["train", recipe(tmp_path, src)], "oops"


def case_nan(tmp_path):
    rows = good_rows(30).splitlines()
    rows[4] = "nan,1,a,0"
    src = "csv:" + csv_file(tmp_path, "x1,x2,c,label\n" + "\n".join(rows) + "\n")
    return ["train", recipe(tmp_path, src)], "data.impute"


def case_inf(tmp_path):
    rows = good_rows(30).splitlines()
    rows[4] = "1,inf,a,0"
    src = "csv:" + csv_file(tmp_path, "x1,x2,c,label\n" + "\n".join(rows) + "\n")
    return ["train", recipe(tmp_path, src)], "x2"


def case_no_images(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "dog").mkdir(parents=True)
    return ["train", recipe(tmp_path, f"images:{tmp_path}/imgs")], "image"


def case_unreadable_image(tmp_path):
    for c in ("cat", "dog"):
        for i in range(3):
            png(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"not a png at all")
    return ["train", recipe(tmp_path, f"images:{tmp_path}/imgs")], "broken.png"


def wav(path: Path, rate: int = 16000, data: bytes = b"\0\0" * 800) -> None:
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)


def case_unreadable_wav(tmp_path):
    wav(tmp_path / "snd" / "yes" / "1.wav")
    (tmp_path / "snd" / "no").mkdir(parents=True)
    (tmp_path / "snd" / "no" / "2.wav").write_bytes(b"RIFF but not really")
    return ["train", recipe(tmp_path, f"audio:{tmp_path}/snd")], "cannot read audio file"


def case_wav_at_another_rate(tmp_path):
    wav(tmp_path / "snd" / "yes" / "1.wav")
    wav(tmp_path / "snd" / "no" / "2.wav", rate=8000)
    extra = "  audio:\n    resample: false\n"
    return ["train", recipe(tmp_path, f"audio:{tmp_path}/snd", extra)], "8000 Hz, not 16000 Hz"


def case_unknown_audio_key(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("data:\n  source: spoken-digits\n  audio:\n    voises: 5\n")
    return ["train", str(p)], "data.audio.voices"


def case_unknown_dataset(tmp_path):
    return ["train", recipe(tmp_path, "breast-cancr")], "breast-cancer"


def case_unknown_key(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  dpth: 3\n")
    return ["train", str(p)], "model.depth"


def case_wrong_type(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  epochs: three\n")
    return ["train", str(p)], "train.epochs"


def case_yaml_syntax(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  epochs: [3\n")
    return ["train", str(p)], "YAML syntax error"


def case_missing_recipe(tmp_path):
    return ["train", str(tmp_path / "missing.yaml")], "not found"


def case_bad_set(tmp_path):
    return ["render-config", "healthcare", "--set", "model.depth=deep"], "model.depth"


def case_export_not_a_run(tmp_path):
    return ["export", str(tmp_path)], "not a glassbox run folder"


def case_export_old_opset(tmp_path):
    return ["export", str(tmp_path), "--opset", "7"], "opset 18 or newer"


def case_serve_not_exported(tmp_path):
    return ["serve", str(tmp_path), "--port", "0"], "not a TCP port"


def case_bench_export_no_run(tmp_path):
    return ["bench", "export"], "give one exported run folder"


def case_init_not_a_run(tmp_path):
    return ["train", recipe(tmp_path, "iris"), "--init", str(tmp_path / "nope")], "no such run folder"


def case_pretrain_on_sequences(tmp_path):
    return ["pretrain", recipe(tmp_path, "parity")], "does not apply to sequence data"


def case_label_fraction_on_text(tmp_path):
    return ["train", recipe(tmp_path, "python-corpus", "  label_fraction: 0.5\n")], "label_fraction"


def case_fewshot_bad_shots(tmp_path):
    return ["fewshot", str(tmp_path), "--shots", "one"], "whole numbers"


def case_fewshot_not_a_run(tmp_path):
    return ["fewshot", str(tmp_path), "--shots", "1"], "not a glassbox run folder"


def case_distill_teacher_not_a_run(tmp_path):
    teacher = f"distill:\n  teacher: '{tmp_path / 'nope'}'\n"
    return ["train", recipe(tmp_path, "python-corpus", "  max_bytes: 20000\n" + teacher)], "no model.json"


def case_distill_a_classifier(tmp_path):
    return ["train", recipe(tmp_path, "iris", f"distill:\n  teacher: '{tmp_path}'\n")], "language models"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    argv, needle = case(tmp_path)
    out_dir = tmp_path / "runs"
    if argv[0] in ("train", "pretrain"):
        argv = [*argv, "--out", str(out_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "\n" not in err, err
    assert "Traceback" not in err
    assert needle.lower() in err.lower(), err
    # nothing half-written looks complete
    for run in out_dir.glob("*") if out_dir.exists() else []:
        assert json.loads((run / "meta.json").read_text())["status"] != "completed"


def test_real_process_exit_status_and_no_traceback(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  dpth: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "glassbox.cli.main", "train", str(p)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "did you mean 'model.depth'" in proc.stderr
    assert proc.stdout == ""
