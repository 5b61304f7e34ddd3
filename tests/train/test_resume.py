"""A run killed with SIGKILL and resumed ends with the same weights as one never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

from glassbox.config import load_recipe
from glassbox.ledger import verify_run
from glassbox.pipeline import resume_run, run_recipe

# Mid-epoch checkpoints (iris train split: 90 rows, batch 16 -> 6 steps per
# epoch; every 4 steps), dropout on so the RNG state matters, and a kill two
# steps after the last checkpoint so work is lost and must be replayed.
OVERRIDES = [
    "data.source=iris",
    "model.dim=16",
    "model.depth=1",
    "model.dropout=0.2",
    "train.epochs=4",
    "train.batch_size=16",
    "train.checkpoint_every=4",
    "train.threads=1",
    "train.patience=null",
    "report.enabled=false",
]
KILL_AT = 14

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from glassbox.config import load_recipe
    from glassbox.pipeline import run_recipe
    from glassbox.train import Callback

    class Kill(Callback):
        def on_step_end(self, trainer, info):
            if info.step == {kill}:
                os.kill(os.getpid(), signal.SIGKILL)

    run_recipe(load_recipe(None, {overrides!r}), sys.argv[1], callbacks=[Kill()])
    """
)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    killed_root = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(kill=KILL_AT, overrides=OVERRIDES), str(killed_root)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (killed,) = list(killed_root.iterdir())
    assert not (killed / "model.safetensors").exists()
    assert (killed / "checkpoints" / "latest").read_text().strip() == "step-000012"
    steps_logged = [r["step"] for r in map(eval_json, (killed / "metrics.jsonl").read_text().splitlines())]
    assert max(steps_logged) == KILL_AT  # the dead process got past its checkpoint

    # The killed folder's ledger was never sealed: verify says so, naming the entry.
    verdict = verify_run(killed)
    assert not verdict.ok and any("after the last tree head" in p for p in verdict.problems)

    resumed = resume_run(killed)
    assert verify_run(resumed.path).ok  # the resumed run continued the same chain and sealed it
    torch.set_num_threads(1)
    clean = run_recipe(load_recipe(None, OVERRIDES), tmp_path / "clean")

    assert resumed.meta()["status"] == "completed"
    a, b = weights(resumed.path), weights(clean.path)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # The replayed steps are logged once, not twice.
    steps = [r["step"] for r in resumed.metrics() if "train_loss" in r]
    assert steps == sorted(set(steps))
    assert resumed.metrics() == clean.metrics()


def eval_json(line: str):
    import json

    return json.loads(line)
