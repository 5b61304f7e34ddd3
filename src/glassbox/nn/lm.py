"""Sampling bytes from a text model with its KV cache.

The prompt is fed once; after that each step feeds only the newest byte, so
generating ``n`` bytes costs ``n`` one-token forwards instead of ``n`` full ones.

>>> import torch
>>> from glassbox.config import ModelConfig
>>> from glassbox.data.base import Dataset
>>> from glassbox.nn.models import build_model
>>> data = Dataset("toy", "text", "lm", torch.randint(0, 256, (4, 9)), torch.zeros(4, dtype=torch.long))
>>> model = build_model(ModelConfig(dim=16, depth=1, heads=2, max_len=32), data)
>>> out = generate(model, b"hi", 5, generator=torch.Generator().manual_seed(0))
>>> out.shape
torch.Size([7])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from glassbox.errors import UserError

if TYPE_CHECKING:
    from glassbox.nn.models import Transformer


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row from ``logits`` ``(B, V)``, shaped ``(B, 1)``; ``temperature <= 0`` is greedy."""
    if temperature <= 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


@torch.no_grad()
def generate(
    model: Transformer,
    prompt_ids: torch.Tensor | list[int] | bytes,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The prompt followed by ``max_new_tokens`` sampled byte ids.

    ``prompt_ids`` is ``(T,)`` or ``(B, T)`` (or ``bytes``); the result has the
    same number of dimensions with ``T + max_new_tokens`` columns. When the
    sequence outgrows ``model.max_len`` the cache restarts from the newest
    half of the text, so generation can run past the position table.
    """
    if not model.lm:
        raise ValueError("generate needs a text model")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    device = next(model.parameters()).device
    if isinstance(prompt_ids, bytes):
        prompt_ids = list(prompt_ids)
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long, device=device)
    single = prompt.ndim == 1
    prompt = prompt[None] if single else prompt  # (B, T)
    if prompt.shape[1] == 0:
        raise UserError("the prompt is empty; give at least one byte")
    max_len = model.tokenizer.max_len
    was_training = model.training
    model.eval()  # dropout would make sampling depend on more than the generator
    try:
        context = prompt[:, -max_len:]
        logits, states = model.decode_step(context)
        offset = context.shape[1]
        new: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            token = sample(logits[:, -1], temperature, top_k, generator)  # (B, 1)
            new.append(token)
            if step == max_new_tokens - 1:
                break  # the last token needs no forward of its own
            if offset < max_len:
                logits, states = model.decode_step(token, states, offset)
                offset += 1
            else:
                context = torch.cat([prompt, *new], dim=1)[:, -max(1, max_len // 2) :]
                logits, states = model.decode_step(context)
                offset = context.shape[1]
    finally:
        model.train(was_training)
    out = torch.cat([prompt, *new], dim=1)  # (B, T + max_new_tokens)
    return out[0] if single else out
