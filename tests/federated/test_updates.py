from __future__ import annotations

import hashlib
import struct

import pytest
import torch

from glassbox.federated.updates import (
    check_update,
    flatten,
    state_digest,
    strip_prefix,
    unflatten,
    update_norm,
)


@pytest.fixture
def ref():
    return {"layer.weight": torch.zeros(3, 4), "layer.bias": torch.zeros(4), "norm.mean": torch.zeros(2)}


def good(ref):
    return {k: torch.randn_like(v) for k, v in ref.items()}


def test_check_update_accepts_a_good_update(ref):
    assert check_update(good(ref), ref) is None
    half = {k: v.half() for k, v in good(ref).items()}  # any floating dtype is fine
    assert check_update(half, ref) is None


def test_check_update_names_missing_and_extra_keys(ref):
    u = good(ref)
    del u["layer.bias"], u["norm.mean"]
    u["head.weight"] = torch.zeros(1)
    assert check_update(u, ref) == "missing keys: layer.bias, norm.mean; extra keys: head.weight"
    u = good(ref)
    u["_module.x"] = torch.zeros(1)
    assert check_update(u, ref) == "extra keys: _module.x"


def test_check_update_wrong_shape_dtype_and_type(ref):
    u = good(ref)
    u["layer.weight"] = torch.zeros(4, 3)
    assert check_update(u, ref) == "'layer.weight': shape (4, 3), expected (3, 4)"
    u = good(ref)
    u["layer.bias"] = torch.zeros(4, dtype=torch.int64)
    assert check_update(u, ref) == "'layer.bias': dtype int64 is not floating point"
    u = good(ref)
    u["norm.mean"] = [0.0, 0.0]
    assert check_update(u, ref) == "'norm.mean': not a tensor (got list)"


def test_check_update_counts_nan_and_inf(ref):
    u = good(ref)
    u["layer.weight"][0, 0] = float("nan")
    u["layer.weight"][1, :2] = float("inf")
    u["layer.weight"][2, 3] = float("-inf")
    assert check_update(u, ref) == "'layer.weight': 1 NaN and 3 Inf of 12 values"
    u = good(ref)
    u["norm.mean"][1] = float("inf")
    assert check_update(u, ref) == "'norm.mean': 1 Inf of 2 values"


def test_flatten_unflatten_round_trip(ref):
    u = good(ref)
    vec = flatten(u)
    assert vec.shape == (12 + 4 + 2,)
    back = unflatten(vec, ref)
    assert list(back) == list(ref)
    for k in u:
        torch.testing.assert_close(back[k], u[k], rtol=0, atol=0)
    # Another dict order, flattened in the reference's key order, lines up coordinate by coordinate.
    shuffled = dict(reversed(list(u.items())))
    torch.testing.assert_close(flatten(shuffled, keys=list(ref)), vec, rtol=0, atol=0)
    assert flatten(u, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="does not fit"):
        unflatten(vec[:-1], ref)


def test_update_norm():
    u = {"a": torch.tensor([3.0]), "b": torch.tensor([[4.0, 0.0]])}
    assert update_norm(u) == pytest.approx(5.0, abs=1e-12)


def test_state_digest_ignores_layout_and_sees_every_value():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    transposed_view = base.t()  # non-contiguous
    assert not transposed_view.is_contiguous()
    d = state_digest({"w": transposed_view, "b": torch.ones(2)})
    assert d == state_digest({"b": torch.ones(2), "w": transposed_view.contiguous()})  # order of keys too
    assert d == state_digest(
        {"w": transposed_view.clone(memory_format=torch.contiguous_format), "b": torch.ones(2)}
    )
    strided = torch.arange(8.0)[1::2]  # a strided view with a storage offset
    assert state_digest({"x": strided}) == state_digest({"x": torch.tensor([1.0, 3.0, 5.0, 7.0])})
    assert state_digest({"x": torch.ones(3, requires_grad=True)}) == state_digest({"x": torch.ones(3)})
    assert len(d) == 64 and int(d, 16) >= 0

    changed = transposed_view.contiguous().clone()
    changed[2, 1] = torch.nextafter(changed[2, 1], torch.tensor(1e9))  # one value, one ulp
    assert state_digest({"w": changed, "b": torch.ones(2)}) != d
    # Name, dtype and shape are part of what is hashed, not only the bytes.
    assert state_digest({"w2": transposed_view, "b": torch.ones(2)}) != d
    assert state_digest({"x": torch.zeros(4)}) != state_digest({"x": torch.zeros(2, 2)})
    assert state_digest({"x": torch.zeros(4)}) != state_digest({"x": torch.zeros(4, dtype=torch.float64)})
    assert state_digest({"x": torch.zeros(2, dtype=torch.float64)}) != state_digest({"x": torch.zeros(4)})
    # Lazily negated/conjugated views hash as the values they show; bfloat16 hashes (numpy lacks it).
    assert state_digest({"x": torch.ones(3).neg()}) == state_digest({"x": -torch.ones(3)})
    z = torch.tensor([1 + 2j, 3 - 1j])
    assert state_digest({"z": z.conj()}) == state_digest({"z": torch.tensor([1 - 2j, 3 + 1j])})
    assert state_digest({"h": torch.ones(3, dtype=torch.bfloat16)}) != state_digest({"h": torch.ones(3)})


def test_state_digest_layout_is_the_documented_one():
    # The ledger compares digests across machines and versions, so the byte layout is spelled out
    # here independently: tag, then length-prefixed count, and per sorted key name, dtype, shape, values.
    def put(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b

    stream = b"glassbox-state-digest-v1" + put(b"2")
    stream += put(b"a") + put(b"torch.float64") + put(struct.pack("<q", 1)) + put(struct.pack("<d", 0.5))
    stream += (
        put(b"w") + put(b"torch.float32") + put(struct.pack("<qq", 1, 2)) + put(struct.pack("<ff", 1, -2))
    )
    want = hashlib.sha256(stream).hexdigest()
    state = {"w": torch.tensor([[1.0, -2.0]]), "a": torch.tensor([0.5], dtype=torch.float64)}
    assert state_digest(state) == want
    assert want == "cd88461056c418a0a343169c7db21e805813426dc5cee363b15ff911c5a8d508"  # pinned


def test_strip_prefix():
    s = {"_module.fc.weight": torch.zeros(1), "_module.fc.bias": torch.zeros(1), "other": torch.zeros(1)}
    assert list(strip_prefix(s)) == ["fc.weight", "fc.bias", "other"]
    assert list(strip_prefix(s, prefix="_module.fc.")) == ["weight", "bias", "other"]
    with pytest.raises(ValueError, match="two keys named 'a'"):
        strip_prefix({"a": torch.zeros(1), "_module.a": torch.zeros(1)})
