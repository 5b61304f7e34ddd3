"""The Dataset every source returns, and what the rest of glassbox may rely on.

One class for every kind of data so that splitting, noise, the trainer and the
report never branch on where the data came from:

- ``tabular``: ``X`` float32 ``(N, F)``, ``y`` int64 ``(N,)``; categorical
  columns are already one-hot encoded and named ``column=value``.
- ``image``: ``X`` float32 ``(N, C, H, W)`` scaled to [0, 1], ``y`` int64 ``(N,)``.
- ``text``: ``X`` int64 ``(N, T + 1)`` windows of byte ids (0..255); the model
  reads ``X[:, :-1]`` and predicts ``X[:, 1:]``; ``y`` is all zeros and unused.
- ``sequence``: ``X`` int64 ``(N, T)`` token ids (0..255) and ``y`` int64
  ``(N, T)`` the target at each position, -100 where nothing is scored
  (synthetic tasks such as MQAR); task ``lm``.
- ``audio``: ``X`` float32 ``(N, S)`` mono waveforms at ``AUDIO_RATE`` (16 kHz),
  every clip the same length, ``y`` int64 ``(N,)``; the model computes its
  own log-mel features (``glassbox.nn.audio``).

``index`` holds each row's position in the source as loaded, so that data
values, flipped labels and predictions can always be traced back to a row of
the user's file, through any number of splits and subsets. ``groups``, when
set, keeps rows that share a value in the same split (a speaker's clips, so
the test set is spoken by voices never heard in training); ``row_info`` holds
per-row facts for the report (voice, accent, noise level), aligned through
every subset.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

Kind = Literal["tabular", "image", "text", "sequence", "audio"]
Task = Literal["classification", "lm"]
AUDIO_RATE = 16_000  # Hz, the one sample rate of audio data; sources resample to it


@dataclass
class Dataset:
    name: str
    kind: Kind
    task: Task
    X: torch.Tensor
    y: torch.Tensor
    feature_names: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    # Group membership for fairness audits (e.g. the fraud set's "group"), one
    # entry per row; kept out of X so the model does not see it by default.
    sensitive: np.ndarray | None = None
    sensitive_name: str | None = None
    index: torch.Tensor | None = None  # (N,) row ids in the source; filled in __post_init__
    description: str = ""
    groups: np.ndarray | None = None  # (N,) rows with equal values stay in one split
    row_info: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) per-row facts

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = torch.arange(len(self.X))
        if len(self.y) != len(self.X) or len(self.index) != len(self.X):
            raise ValueError("X, y and index must have the same number of rows")

    def __len__(self) -> int:
        return len(self.X)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, rows: torch.Tensor | np.ndarray | list[int]) -> Dataset:
        """The rows at these positions (not source ids), keeping every column aligned."""
        rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return replace(
            self,
            X=self.X[rows_t],
            y=self.y[rows_t],
            index=self.index[rows_t],
            sensitive=None if self.sensitive is None else self.sensitive[rows_t.numpy()],
            groups=None if self.groups is None else self.groups[rows_t.numpy()],
            row_info={k: v[rows_t.numpy()] for k, v in self.row_info.items()},
        )

    def digest(self) -> str:
        """SHA-256 over the rows exactly as stored (X, y, source ids, groups): the data the model saw.

        Two datasets have equal digests only if every value, dtype and shape is equal.
        """
        import hashlib

        h = hashlib.sha256()
        arrays = [self.X, self.y, self.index]
        for t in arrays:
            a = t.detach().cpu().contiguous().numpy()
            h.update(f"{a.dtype.str}{a.shape};".encode())
            h.update(a.tobytes())
        if self.sensitive is not None:
            h.update(("\0".join(map(str, self.sensitive.tolist()))).encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """What the report and ``glassbox datasets`` show about this data."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "task": self.task,
            "rows": len(self),
            "shape": list(self.X.shape[1:]),
        }
        if self.task == "classification":
            counts = torch.bincount(self.y, minlength=self.n_classes).tolist()
            out["classes"] = dict(zip(self.classes, counts, strict=True))
        if self.kind == "tabular":
            out["features"] = len(self.feature_names)
        if self.sensitive_name is not None:
            out["sensitive"] = self.sensitive_name
        return out
