"""The "Language model" report section: bits per byte on held-out files, and samples.

A byte-level LM's test split is windows cut from the same files it trained
on, which flatters it; ``heldout_bits_per_byte`` also scores it on files it
never saw (for ``python-corpus``, the standard-library files after the
recipe's ``data.max_bytes``). Samples continue the first bytes of a few
test windows, greedy and at temperature 0.8 (seeded), so a reader sees what
the numbers mean.

>>> s = lm_section({"heldout": {"files": 3, "bytes": 4096, "bits_per_byte": 2.5}, "test_bits_per_byte": 2.1,
...                 "samples": [{"prompt": "def f(", "greedy": "x):", "sampled": "a, b):"}]})
>>> s["title"], "2.50" in s["html"]
('Language model', True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from glassbox.data.base import Dataset
    from glassbox.nn.models import Transformer

HELDOUT_BYTES = 65_536  # enough for a stable estimate, seconds to score
PROMPT_BYTES, SAMPLE_BYTES, N_SAMPLES = 40, 120, 3


@torch.no_grad()
def bits_per_byte(model: Transformer, windows: torch.Tensor, batch: int = 32) -> float:
    """Mean next-byte negative log-likelihood over ``windows`` ``(N, T + 1)``, in bits."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i : i + batch]
        logits = model(w[:, :-1])  # (B, T, 256)
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                                reduction="sum")  # fmt: skip
        total += float(nll)
        count += w[:, 1:].numel()
    return total / count / math.log(2)


def heldout_windows(source: str, max_bytes: int, seq_len: int) -> tuple[torch.Tensor, int] | None:
    """Windows of the stdlib files past the first ``max_bytes`` (python-corpus only), and how many files."""
    if source != "python-corpus":
        return None
    from glassbox.data.sources import stdlib_files_after
    from glassbox.data.text import byte_windows

    chunks, files, got = [], 0, 0
    for path in stdlib_files_after(max_bytes):
        data = path.read_bytes()[: HELDOUT_BYTES - got]
        chunks.append(data)
        files += 1
        got += len(data)
        if got >= HELDOUT_BYTES:
            break
    if got < 2 * (seq_len + 1):
        return None
    return byte_windows(b"".join(chunks), seq_len), files


def lm_facts(model: Transformer, test: Dataset, source: str, max_bytes: int, seed: int) -> dict[str, Any]:
    """Held-out bits per byte and a few samples, as plain data for ``lm_section``."""
    seq_len = test.X.shape[1] - 1
    facts: dict[str, Any] = {}
    held = heldout_windows(source, max_bytes, seq_len)
    if held is not None:
        windows, files = held
        bpb = bits_per_byte(model, windows)
        facts["heldout"] = {"files": files, "bytes": int(windows.numel()), "bits_per_byte": bpb}
    g = torch.Generator().manual_seed(seed)
    samples = []
    room = model.tokenizer.max_len - PROMPT_BYTES
    for row in test.X[:N_SAMPLES]:
        prompt = row[:PROMPT_BYTES]
        n = min(SAMPLE_BYTES, room)
        greedy = model.generate(prompt, n, temperature=0)[PROMPT_BYTES:]
        sampled = model.generate(prompt, n, temperature=0.8, generator=g)[PROMPT_BYTES:]
        samples.append({"prompt": _text(prompt), "greedy": _text(greedy), "sampled": _text(sampled)})
    facts["samples"] = samples
    return facts


def _text(ids: torch.Tensor) -> str:
    return bytes(ids.tolist()).decode("utf-8", errors="replace")


def lm_section(facts: Mapping[str, Any]) -> dict[str, str]:
    parts = []
    held = facts.get("heldout")
    if held is not None:
        parts.append(
            f"<p>Bits per byte on {int(held['files'])} held-out files ({int(held['bytes']):,} bytes the model"
            f" never trained on): <strong>{held['bits_per_byte']:.2f}</strong>"
            + (f"; on the test windows: {t:.2f}" if (t := facts.get("test_bits_per_byte")) else "")
            + ". Uniform guessing over bytes is 8.</p>"
        )
    rows = "".join(
        f"<tr><td><pre>{escape(s['prompt'])}</pre></td><td><pre>{escape(s['greedy'])}</pre></td>"
        f"<td><pre>{escape(s['sampled'])}</pre></td></tr>"
        for s in facts.get("samples", [])
    )
    parts.append(
        '<table id="lm-samples"><thead><tr><th>prompt (a test window)</th><th>greedy</th>'
        f"<th>temperature 0.8</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return {"title": "Language model", "html": "\n".join(parts)}
