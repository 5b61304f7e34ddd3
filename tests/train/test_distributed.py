"""Data-parallel training with torchrun: the one-process run, and a clean failure when a worker dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import safetensors.torch
import torch

from glassbox.config import load_recipe
from glassbox.pipeline import run_recipe
from glassbox.train.distributed import Dist, shard
from glassbox.valuation.cleaning import read_values

# No dropout: the ranks draw different dropout masks than one process would. SGD: Adam divides
# each gradient entry by its own running size, so an entry that is zero in exact arithmetic (the
# attention keys' bias) takes lr-sized steps in the direction of its rounding noise, and the
# noise differs with the order of summation; SGD keeps such differences at rounding size.
RECIPE = """name: ddp
seed: 3
data: {source: iris}
model: {dim: 16, depth: 1, heads: 2, dropout: 0.0}
train: {epochs: %(epochs)d, batch_size: 16, accumulate: 2, patience: null, threads: 1,
        checkpoint_every: %(every)d, optimizer: sgd, lr: 0.05}
valuation: {method: inrun, val_batch: 4}
report: {enabled: false}
"""


def write_recipe(tmp_path: Path, epochs: int = 2, every: int = 0) -> Path:
    p = tmp_path / "ddp.yaml"
    p.write_text(RECIPE % {"epochs": epochs, "every": every})
    return p


def glassbox(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "glassbox", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_shards_cover_the_global_batch_once():
    idx = torch.arange(11)
    parts = [shard(idx, Dist(r, 3)) for r in range(3)]
    assert torch.equal(torch.cat(parts), idx)
    assert [len(p) for p in parts] == [4, 4, 3]
    assert [len(shard(torch.arange(1), Dist(r, 2))) for r in range(2)] == [1, 0]  # a rank may hold none


def test_two_processes_match_one(tmp_path):
    recipe = write_recipe(tmp_path)
    one = run_recipe(load_recipe(recipe), tmp_path / "one")
    proc = glassbox("train", str(recipe), "--nproc", "2", "--out", str(tmp_path / "two"), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = Path(json.loads(proc.stdout)["run"])
    w1 = safetensors.torch.load_file(str(one.path / "model.safetensors"))
    w2 = safetensors.torch.load_file(str(two / "model.safetensors"))
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-5), k
    v1, v2 = read_values(one.path / "values.csv"), read_values(two / "values.csv")
    assert v1.keys() == v2.keys()
    a = torch.tensor([v1[k] for k in sorted(v1)])
    b = torch.tensor([v2[k] for k in sorted(v1)])
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-6 * float(a.abs().max()))
    meta = json.loads((two / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["world_size"] == 2
    assert sorted(p.name for p in (two / "logs").iterdir()) == ["rank0.log", "rank1.log"]
    assert "rows 8 of 16" in (two / "logs" / "rank1.log").read_text()
    assert glassbox("verify", str(two)).returncode == 0


def test_a_dead_worker_fails_the_job_and_resume_finishes_it(tmp_path):
    recipe = write_recipe(tmp_path, epochs=60, every=20)  # 420 steps, a checkpoint every 20
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "glassbox", "train", str(recipe), "--nproc", "2", "--out", str(out)]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        log = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            logs = list(out.glob("*/logs/rank1.log"))
            if logs and "step 30 " in logs[0].read_text():  # past the first checkpoint
                log = logs[0]
                break
            time.sleep(0.05)
        assert log is not None, "the workers did not start"
        pid = int(log.read_text().split(" pid ")[1].split()[0])
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = job.communicate(timeout=90)
        assert time.monotonic() - killed < 60
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 2
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")][-1]
    assert "worker rank 1 ended with signal SIGKILL" in line and "--resume" in line
    run = log.parent.parent
    assert json.loads((run / "meta.json").read_text())["status"] == "failed"

    proc = glassbox("train", "--resume", str(run), "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((run / "meta.json").read_text())
    rows = json.loads((run / "splits.json").read_text())["train"]["rows"]
    assert meta["status"] == "completed" and meta["resumed"] and meta["steps"] == 60 * -(-rows // 16)
    assert glassbox("verify", str(run)).returncode == 0
