"""Byte-level language-model data: ``text:PATH`` and the windowing it shares with python-corpus.

Bytes rather than characters or tokens, so any file works (no tokenizer to
train, no decoding errors) and the vocabulary is always 256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from glassbox.config import DataConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError


def byte_windows(data: bytes, seq_len: int) -> torch.Tensor:
    """Cut ``data`` into non-overlapping windows of ``seq_len + 1`` bytes, dropping the short tail.

    One byte more than the context, because the model reads ``w[:-1]`` and
    predicts ``w[1:]``. Windows do not overlap, so splitting by window cannot
    put the same text in train and test.
    """
    width = seq_len + 1
    n = len(data) // width
    arr = np.frombuffer(data, dtype=np.uint8, count=n * width).reshape(n, width)
    return torch.from_numpy(arr.astype(np.int64))  # (N, seq_len + 1)


def windows_dataset(name: str, data: bytes, seq_len: int, description: str) -> Dataset:
    """A ``text`` / ``lm`` Dataset from raw bytes."""
    X = byte_windows(data, seq_len)  # (N, seq_len + 1)
    return Dataset(
        name=name,
        kind="text",
        task="lm",
        X=X,
        y=torch.zeros(len(X), dtype=torch.long),  # (N,) unused: the targets are X shifted by one
        description=description,
    )


def load_text(path: str | Path, cfg: DataConfig) -> Dataset:
    """Windows of the first ``cfg.max_bytes`` bytes of a file, ``cfg.seq_len + 1`` bytes each."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"text file not found: {path}; check the path after text: in data.source")
    if path.is_dir():
        raise UserError(f"{path} is a folder; text:PATH expects one text file, e.g. text:corpus.txt")
    try:
        with path.open("rb") as f:
            data = f.read(cfg.max_bytes)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}; check the file's permissions") from None
    if not data:
        raise UserError(f"text file {path} is empty; give a file with some text in it")
    width = cfg.seq_len + 1
    if len(data) < 2 * width:
        longest = len(data) // 2 - 1  # the largest seq_len that still gives 2 windows
        fix = f" or set data.seq_len to at most {longest}" if longest >= 2 else ""
        raise UserError(
            f"text file {path} has {len(data)} bytes, fewer than 2 windows of data.seq_len + 1 = {width}"
            f" bytes; use a longer file{fix}"
        )
    return windows_dataset(path.name, data, cfg.seq_len, f"{len(data):,} bytes of {path}")
