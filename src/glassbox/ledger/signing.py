"""Ed25519 keys for the ledger: where the signing key lives, and signing and checking bytes.

The signing key never enters a run folder: a folder that carried its own
key would let anyone who can edit the folder re-sign it. It lives in the
user's config directory (``$XDG_CONFIG_HOME/glassbox/ledger.key``, else
``~/.config/glassbox/ledger.key``), created with mode 0600 on first use, or
wherever ``GLASSBOX_LEDGER_KEY`` points (a CI secret, a hardware-backed
mount, a test's temporary folder). Each run folder gets the public half as
``ledger.pub``; ``glassbox verify`` trusts the local key's public half (or one
given with ``--key``), not the folder's copy, so a folder re-signed with
another key and given a matching ``ledger.pub`` still fails.

>>> import tempfile, pathlib
>>> key = load_or_create_key(pathlib.Path(tempfile.mkdtemp()) / "k")
>>> pub = load_public(public_pem(key))
>>> sig = sign(key, b"entry")
>>> check(pub, sig, b"entry"), check(pub, sig, b"entrY")
(True, False)
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from glassbox.errors import UserError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ENV = "GLASSBOX_LEDGER_KEY"


def default_key_path() -> Path:
    """Where the signing key is: ``$GLASSBOX_LEDGER_KEY``, else the user's config directory."""
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "glassbox" / "ledger.key"


def load_or_create_key(path: str | Path | None = None) -> Ed25519PrivateKey:
    """The private key at ``path`` (default ``default_key_path()``), created there if missing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path) if path is not None else default_key_path()
    if path.exists():
        return load_private(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: two runs starting at once must not each write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_private(path)
    except OSError as err:
        raise UserError(
            f"cannot create the ledger signing key {path} ({err.strerror}); set {KEY_ENV} to a writable path"
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load_private(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path``, or a UserError saying what is wrong."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise UserError(f"cannot read the ledger signing key {path} ({err.strerror})") from None
    except (ValueError, TypeError):
        raise UserError(
            f"{path} is not an unencrypted PEM private key; "
            f"move it away (a new key is created) or set {KEY_ENV} to the right file"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 key; the ledger signs with Ed25519"
        )
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The public half as PEM (SubjectPublicKeyInfo), what ``ledger.pub`` holds."""
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key() if hasattr(key, "public_key") else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public(data: bytes | str | Path) -> Ed25519PublicKey:
    """A public key from PEM bytes, or from a file holding a public or a private PEM key.

    Raises ValueError when the bytes are not an Ed25519 key (callers say which file).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    if isinstance(data, str | Path):
        data = Path(data).read_bytes()
    if b"PRIVATE KEY" in data:
        # --key may name the signing key itself; only its public half is used.
        priv = serialization.load_pem_private_key(data, password=None)
        if not isinstance(priv, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 key")
        return priv.public_key()
    pub = serialization.load_pem_public_key(data)
    if not isinstance(pub, Ed25519PublicKey):
        raise ValueError("not an Ed25519 key")
    return pub


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key() if hasattr(key, "public_key") else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: how people compare keys by eye."""
    return hashlib.sha256(raw_public(key)).hexdigest()


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """The Ed25519 signature of ``data``, base64 (64 bytes -> 88 characters)."""
    return base64.b64encode(key.sign(data)).decode("ascii")


def check(pub: Ed25519PublicKey, signature: str, data: bytes) -> bool:
    """Whether ``signature`` (base64) is ``pub``'s signature of ``data``; never raises."""
    from cryptography.exceptions import InvalidSignature

    try:
        raw = base64.b64decode(signature, validate=True)
        pub.verify(raw, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
