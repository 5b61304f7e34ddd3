"""Client updates as data: checking, flattening, hashing.

A federated round receives one state dict (``dict[str, Tensor]``) per client.
Before anything is aggregated, each is checked against the global model
(``check_update``): a client that sends the wrong keys, wrong shapes, integer
tensors or NaN/Inf is dropped from the round with the one-line reason this
returns, instead of poisoning the average. ``state_digest`` is the SHA-256 the
ledger records for every client update and every aggregated model.

>>> import torch
>>> ref = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
>>> check_update({"w": torch.ones(2, 3), "b": torch.ones(3)}, ref) is None
True
>>> check_update({"w": torch.ones(3, 2), "b": torch.ones(3)}, ref)
"'w': shape (3, 2), expected (2, 3)"
>>> check_update({"w": torch.full((2, 3), float("nan")), "b": torch.ones(3)}, ref)
"'w': 6 NaN of 6 values"
>>> vec = flatten(ref)
>>> vec.shape, sorted(unflatten(vec, ref))
(torch.Size([9]), ['b', 'w'])
>>> state_digest({"w": torch.eye(2).t()}) == state_digest({"w": torch.eye(2).contiguous()})
True
>>> sorted(strip_prefix({"_module.fc.weight": torch.zeros(1)}))
['fc.weight']
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch

State = Mapping[str, torch.Tensor]

# Bumped if the digest's byte layout ever changes, so old and new hashes can never collide.
_DIGEST_TAG = b"glassbox-state-digest-v1"


def _names(keys: Iterable[str]) -> str:
    return ", ".join(sorted(keys))


def check_update(update: Mapping[str, object], reference: State) -> str | None:
    """None if ``update`` can be aggregated with ``reference``'s model, else a one-line reason.

    Checked in this order, the first failure wins: missing or extra keys (all
    named), a value that is not a tensor, a non-floating dtype, a wrong shape,
    NaN or Inf values (counted). Any floating dtype is accepted (a client may
    send float16); the aggregation casts.
    """
    missing = set(reference) - set(update)
    extra = set(update) - set(reference)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys: {_names(missing)}")
        if extra:
            parts.append(f"extra keys: {_names(extra)}")
        return "; ".join(parts)
    for key, expected in reference.items():
        value = update[key]
        if not isinstance(value, torch.Tensor):
            return f"{key!r}: not a tensor (got {type(value).__name__})"
        if not value.is_floating_point():
            return f"{key!r}: dtype {str(value.dtype).removeprefix('torch.')} is not floating point"
        if tuple(value.shape) != tuple(expected.shape):
            return f"{key!r}: shape {tuple(value.shape)}, expected {tuple(expected.shape)}"
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            n_nan = int(torch.isnan(value).sum())
            n_inf = int(bad.sum()) - n_nan
            counts = [f"{n} {name}" for n, name in ((n_nan, "NaN"), (n_inf, "Inf")) if n]
            what = " and ".join(counts)
            return f"{key!r}: {what} of {value.numel()} values"
    return None


def flatten(
    state: State, keys: Iterable[str] | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """One 1-D tensor: the tensors of ``state`` raveled and joined in ``keys``' order (default: its own).

    Pass the reference's keys when flattening several states so their
    coordinates line up even if their dicts were built in different orders.
    ``dtype`` None keeps torch's type promotion across the tensors.
    """
    order = list(state) if keys is None else list(keys)
    parts = [state[k].detach().reshape(-1) for k in order]
    if not parts:
        return torch.zeros(0, dtype=dtype or torch.get_default_dtype())
    out = torch.cat(parts) if dtype is None else torch.cat([p.to(dtype) for p in parts])
    return out


def unflatten(vec: torch.Tensor, like: State) -> dict[str, torch.Tensor]:
    """Inverse of ``flatten(like)``: slices of ``vec`` shaped and typed as ``like``'s tensors."""
    total = sum(t.numel() for t in like.values())
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(f"vector of shape {tuple(vec.shape)} does not fit a state of {total} values")
    out: dict[str, torch.Tensor] = {}
    i = 0
    for key, t in like.items():
        n = t.numel()
        out[key] = vec[i : i + n].reshape(t.shape).to(t.dtype).clone()
        i += n
    return out


def update_norm(update: State) -> float:
    """The L2 norm of all of ``update``'s values together, accumulated in float64."""
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in update.values()))


def _le_bytes(t: torch.Tensor) -> bytes:
    """The tensor's values in C order, each scalar component little-endian, whatever the host."""
    # resolve_conj/neg: lazily conjugated or negated views must hash as the values they show.
    flat = t.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    size = flat.element_size()
    if size == 1 or flat.numel() == 0:
        return flat.view(torch.uint8).numpy().tobytes()
    # Reinterpret as same-width integers (numpy has no bfloat16), then fix the byte order.
    as_int = flat.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[size]).numpy()
    return as_int.astype(as_int.dtype.newbyteorder("<"), copy=False).tobytes()


def state_digest(state: State) -> str:
    """SHA-256 (hex) over the sorted key names, dtypes, shapes and values' bytes (little-endian).

    Equal tensors give equal digests whatever their memory layout (strides,
    non-contiguous views, device, requires_grad); any changed bit of any value
    (or a renamed key, a dtype, a shape) changes it. It hashes bits, so 0.0
    and -0.0 differ, as they should for provenance. Every field is
    length-prefixed so no two different states can serialize alike.
    """
    h = hashlib.sha256(_DIGEST_TAG)

    def put(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    put(str(len(state)).encode())
    for key in sorted(state):
        t = state[key]
        put(key.encode("utf-8"))
        put(str(t.dtype).encode())
        put(np.asarray(tuple(t.shape), dtype="<i8").tobytes())
        put(_le_bytes(t))
    return h.hexdigest()


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "_module.") -> dict[str, torch.Tensor]:
    """``state`` with ``prefix`` removed from the keys that start with it (Opacus's ``_module.``).

    An Opacus-wrapped model's state dict names ``fc.weight`` ``_module.fc.weight``;
    stripping lets DP and non-DP clients exchange the same keys. Keys without
    the prefix are kept as they are; a clash (both ``a`` and ``_module.a``) is an error.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.removeprefix(prefix)
        if new in out:
            raise ValueError(f"stripping {prefix!r} makes two keys named {new!r}")
        out[new] = value
    return out
