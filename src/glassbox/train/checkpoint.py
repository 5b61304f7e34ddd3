"""Checkpoints that let a killed run continue to the very same weights.

A checkpoint is a folder ``step-000120/`` holding the weights as
safetensors and everything else the trainer needs to go on exactly where it
stopped: optimizer and scheduler state, the torch and Python RNG states, the
position in the epoch, the history and the early-stopping state.
``latest`` names the newest complete one and is replaced atomically only
after that folder is fully written, so a kill at any instant leaves either
the old checkpoint or the new one, never a torn one.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from glassbox.run import atomic_write_bytes, atomic_write_text

LATEST = "latest"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses non-contiguous and shared storage; clones are cheap at this size.
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    folder: str | Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]
) -> Path:
    """Write ``folder/step-XXXXXX`` and point ``folder/latest`` at it; older ones are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_contiguous(weights), str(tmp / "model.safetensors"))
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(tmp / "state.pt", buf.getvalue())
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(folder / LATEST, name + "\n")
    for old in folder.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    pointer = Path(folder) / LATEST
    if not pointer.exists():
        return None
    path = Path(folder) / pointer.read_text().strip()
    return path if (path / "state.pt").exists() else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    weights = load_file(str(path / "model.safetensors"))
    # weights_only: a checkpoint is data, never code, even if someone hands us a strange one.
    state = torch.load(path / "state.pt", weights_only=True)
    return weights, state
