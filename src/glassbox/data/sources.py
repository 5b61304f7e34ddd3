"""The built-in datasets, found by name from a recipe's ``data.source``.

All of them ship with the install (scikit-learn's bundled sets, a generator,
the interpreter's own standard library), so every recipe and test runs with
no network. Each entry is ``(cfg: DataConfig) -> Dataset``; ``SOURCE_INFO``
holds what ``glassbox datasets`` lists before anything is loaded.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glassbox.config import DataConfig
from glassbox.data.base import Dataset
from glassbox.data.text import windows_dataset
from glassbox.errors import UserError
from glassbox.registry import Registry

SourceFn = Callable[[DataConfig], Dataset]
SOURCES: Registry[SourceFn] = Registry("dataset")

SOURCE_INFO: dict[str, dict[str, str]] = {
    "breast-cancer": {
        "kind": "tabular",
        "description": "Wisconsin breast-cancer biopsies: 30 cell measurements, malignant or benign",
    },
    "wine": {"kind": "tabular", "description": "13 chemical measurements of wines from three cultivars"},
    "iris": {"kind": "tabular", "description": "Fisher's iris flowers: 4 measurements, three species"},
    "fraud": {
        "kind": "tabular",
        "description": "synthetic card transactions, ~2% fraud, with a sensitive 'group' for fairness audits",
    },
    "digits": {"kind": "image", "description": "8 x 8 grey handwritten digits 0-9"},
    "spoken-digits": {
        "kind": "audio",
        "description": "the words zero to nine spoken by ~100 eSpeak NG voices in 7 accents, made here",
    },
    "python-corpus": {
        "kind": "text",
        "description": "bytes of this Python's standard-library source, for byte-level language models",
    },
}


def _sklearn_table(name: str, bunch: Any) -> Dataset:
    return Dataset(
        name=name,
        kind="tabular",
        task="classification",
        X=torch.as_tensor(bunch.data, dtype=torch.float32),  # (N, F)
        y=torch.as_tensor(bunch.target, dtype=torch.long),  # (N,)
        feature_names=[str(f) for f in bunch.feature_names],
        classes=[str(c) for c in bunch.target_names],
        description=SOURCE_INFO[name]["description"],
    )


# scikit-learn is imported inside the loaders: importing it costs most of a
# second, which `import glassbox.data` should not pay for a CSV run.
@SOURCES.register("breast-cancer")
def breast_cancer(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import load_breast_cancer

    return _sklearn_table("breast-cancer", load_breast_cancer())


@SOURCES.register("wine")
def wine(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import load_wine

    return _sklearn_table("wine", load_wine())


@SOURCES.register("iris")
def iris(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import load_iris

    return _sklearn_table("iris", load_iris())


# Fixed, not taken from the recipe: "fraud" must be the same table in every
# run, so that results from different recipes and machines are comparable.
FRAUD_SEED = 20250
FRAUD_ROWS = 20_000
FRAUD_RATE = 0.02
_CHANNELS = np.array(["atm", "online", "phone", "pos"])
_GROUPS = np.array(["A", "B", "C"])


def _standard(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / v.std()


@SOURCES.register("fraud")
def fraud(cfg: DataConfig) -> Dataset:
    """Transactions whose fraud odds follow a known logistic model, so the best possible AUROC is ~0.9.

    The group is never a feature, but group C has younger accounts, more
    online use and a higher base rate, and group B more foreign purchases, so
    a model that never sees the group still treats the groups differently:
    the gap a fairness audit should find.
    """
    rng = np.random.default_rng(FRAUD_SEED)
    n = FRAUD_ROWS
    g = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])  # (N,) 0 = A, 1 = B, 2 = C
    is_b, is_c = g == 1, g == 2
    # Channel mix per group, in _CHANNELS order.
    mix = np.cumsum([[0.08, 0.40, 0.07, 0.45], [0.10, 0.45, 0.05, 0.40], [0.07, 0.60, 0.08, 0.25]], axis=1)
    channel = _CHANNELS[(rng.random(n)[:, None] > mix[g]).sum(1)]  # (N,) str
    online = channel == "online"

    amount = np.round(rng.lognormal(3.6 + 0.3 * online, 1.0), 2)
    daytime = np.clip(rng.normal(14, 4, n), 0, 23)
    hour = np.floor(np.where(rng.random(n) < 0.85, daytime, rng.integers(0, 24, n)))
    merchant_risk = rng.beta(2, 8, n)
    distance_km = np.round(rng.lognormal(2.0 + 0.5 * is_c + 0.8 * online, 1.2), 1)
    velocity_1h = rng.poisson(1.0 + 0.5 * online).astype(float)
    account_age_days = np.round(rng.exponential(np.where(is_c, 300.0, 900.0)))
    prior_chargebacks = rng.poisson(0.08, n).astype(float)
    card_present = (np.isin(channel, ["atm", "pos"]) & (rng.random(n) < 0.97)).astype(float)
    foreign = (rng.random(n) < np.where(is_b, 0.12, 0.04)).astype(float)
    new_device = (rng.random(n) < np.where(online, 0.15, 0.03)).astype(float)

    logit = (
        0.9 * _standard(np.log(amount))
        + 0.8 * (hour <= 5)
        + 4.0 * merchant_risk
        + 0.5 * _standard(np.log1p(distance_km))
        + 0.45 * velocity_1h
        - 0.6 * _standard(np.log1p(account_age_days))
        + 0.9 * prior_chargebacks
        - 0.8 * card_present
        + 1.0 * foreign
        + 1.2 * new_device
        + 0.5 * (channel == "phone")
        + 0.4 * is_c  # a direct group effect, not explained by any feature
    )
    # Shift the intercept until the mean fraud probability is FRAUD_RATE.
    lo, hi = -20.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        p = 1 / (1 + np.exp(-(logit + mid)))
        lo, hi = (lo, mid) if p.mean() > FRAUD_RATE else (mid, hi)
    y = (rng.random(n) < p).astype(np.int64)  # sampled, so no model can be perfect

    numeric = {
        "amount": amount,
        "hour": hour,
        "merchant_risk": merchant_risk,
        "distance_km": distance_km,
        "velocity_1h": velocity_1h,
        "account_age_days": account_age_days,
        "prior_chargebacks": prior_chargebacks,
        "card_present": card_present,
        "foreign": foreign,
        "new_device": new_device,
    }
    onehot = {f"channel={c}": (channel == c).astype(float) for c in _CHANNELS}
    columns = {**numeric, **onehot}
    return Dataset(
        name="fraud",
        kind="tabular",
        task="classification",
        X=torch.as_tensor(np.column_stack(list(columns.values())), dtype=torch.float32),  # (N, 14)
        y=torch.from_numpy(y),  # (N,)
        feature_names=list(columns),
        classes=["legit", "fraud"],
        sensitive=_GROUPS[g],  # (N,) str
        sensitive_name="group",
        description=SOURCE_INFO["fraud"]["description"],
    )


@SOURCES.register("digits")
def digits(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    if cfg.image_size is not None and cfg.image_size != 8:
        size = (cfg.image_size, cfg.image_size)
        X = torch.nn.functional.interpolate(X, size=size, mode="bilinear", align_corners=False)
        X = X.clamp_(0.0, 1.0)  # (N, 1, S, S)
    return Dataset(
        name="digits",
        kind="image",
        task="classification",
        X=X,
        y=torch.as_tensor(bunch.target, dtype=torch.long),  # (N,)
        classes=[str(c) for c in bunch.target_names],
        description=SOURCE_INFO["digits"]["description"],
    )


# Tests are most of the stdlib's bytes and repetitive; site-packages is not
# the stdlib and differs between machines.
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files in a fixed order (sorted relative paths)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        found.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def stdlib_files_after(max_bytes: int) -> list[Path]:
    """The stdlib files ``python-corpus`` with this ``max_bytes`` never reads from (held out).

    The corpus takes files in ``stdlib_files`` order up to ``max_bytes``, the
    last one cut short; held out is every file that starts at or after that point.
    """
    start, out = 0, []
    for path in stdlib_files():
        if start >= max_bytes:
            out.append(path)
        start += path.stat().st_size
    return out


@SOURCES.register("spoken-digits")
def spoken_digits(cfg: DataConfig) -> Dataset:
    from glassbox.data.audio import spoken_digits as generate

    return generate(cfg)


@SOURCES.register("python-corpus")
def python_corpus(cfg: DataConfig) -> Dataset:
    chunks: list[bytes] = []
    total = 0
    for path in stdlib_files():
        if total >= cfg.max_bytes:
            break
        data = path.read_bytes()[: cfg.max_bytes - total]
        chunks.append(data)
        total += len(data)
    if total < 2 * (cfg.seq_len + 1):
        raise UserError(
            "python-corpus found no standard-library sources in this Python (an embedded build?);"
            " use text:PATH with a text file of your own"
        )
    return windows_dataset(
        "python-corpus", b"".join(chunks), cfg.seq_len, f"{total:,} bytes of the Python standard library"
    )


def _corpus_listing(cfg: DataConfig) -> dict[str, Any]:
    # Sizes from the directory alone: reading megabytes to print a table is waste.
    available = min(sum(p.stat().st_size for p in stdlib_files()), cfg.max_bytes)
    return {"rows": available // (cfg.seq_len + 1), "shape": [cfg.seq_len + 1], "bytes": available}


def list_sources() -> list[dict[str, Any]]:
    """One row per registered dataset at the recipe defaults, for ``glassbox datasets``.

    Keys: name, kind, task, rows, shape, features (tabular) and classes (a
    count; 0 for text), description; python-corpus adds bytes.
    """
    cfg = DataConfig()
    out = []
    for name in SOURCES.names():
        info = SOURCE_INFO.get(name, {})
        if name == "python-corpus":
            listing = _corpus_listing(cfg)
            row = {
                "kind": "text",
                "task": "lm",
                "rows": listing["rows"],
                "shape": listing["shape"],
                "features": None,
                "classes": 0,
                "bytes": listing["bytes"],
            }
        elif name == "spoken-digits":
            # From the plan alone: listing must not synthesize thousands of clips.
            from glassbox.data.audio import AUDIO_RATE, generation_plan
            from glassbox.data.espeak import available

            rows = len(generation_plan(cfg.audio)) if available() else 0
            row = {"kind": "audio", "task": "classification", "rows": rows,
                   "shape": [round(cfg.audio.seconds * AUDIO_RATE)], "features": None,
                   "classes": len(cfg.audio.words)}  # fmt: skip
        else:
            # The other built-ins load in milliseconds; loading is the only way
            # to describe a source registered by a plugin.
            ds = SOURCES.get(name)(cfg)
            row = {
                "kind": ds.kind,
                "task": ds.task,
                "rows": len(ds),
                "shape": list(ds.X.shape[1:]),
                "features": len(ds.feature_names) if ds.kind == "tabular" else None,
                "classes": ds.n_classes,
            }
        out.append({"name": name, **row, "description": info.get("description", "")})
    return out


# Generated token tasks (mqar, parity) live in their own module; importing it
# registers them. Placed last because it imports SOURCES from here.
from glassbox.data import synthetic as _synthetic  # noqa: E402, F401
