"""Ed25519 signatures over the exact bytes of manifest.json.

The manifest pins every member by sha256, so signing it signs the whole bundle. Keys are
raw 32-byte Ed25519 keys stored as 64 hex characters (or PEM). `cryptography` is imported
only when a key is actually configured, so the runtime stays numpy-only otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import SignatureError


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise SignatureError(
            "a trusted key is configured but the 'cryptography' package is missing; "
            "pip install 'edgepack[sign]' (or cryptography)") from e
    return ed25519, serialization, InvalidSignature


def _key_bytes(key: bytes | str | os.PathLike) -> bytes:
    if isinstance(key, (str, os.PathLike)) and Path(key).is_file():
        key = Path(key).read_bytes()
    if isinstance(key, str):
        key = key.encode()
    return key.strip()


def _load(key: bytes | str | os.PathLike, private: bool):
    ed25519, serialization, _ = _crypto()
    data = _key_bytes(key)
    try:
        if data.startswith(b"-----BEGIN"):
            loader = serialization.load_pem_private_key if private else \
                serialization.load_pem_public_key
            return loader(data, password=None) if private else loader(data)
        raw = bytes.fromhex(data.decode()) if len(data) == 64 else data
        cls = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
        return cls.from_private_bytes(raw) if private else cls.from_public_bytes(raw)
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        kind = "private" if private else "public"
        raise SignatureError(
            f"the {kind} key is not an Ed25519 key (64 hex characters or PEM): {e}") from e


def generate_keypair() -> tuple[str, str]:
    """Return (private, public) keys as hex strings."""
    ed25519, serialization, _ = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    priv = private.private_bytes(raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    pub = private.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return priv.hex(), pub.hex()


def sign_manifest(manifest_bytes: bytes, private_key: bytes | str | os.PathLike) -> bytes:
    return _load(private_key, private=True).sign(manifest_bytes)


def verify_signature(path, manifest_bytes: bytes, signature: bytes | None,
                     public_key: bytes | str | os.PathLike) -> None:
    if signature is None:
        raise SignatureError(
            f"{path}: a trusted key is configured but the bundle is unsigned; "
            "sign it with `edgepack sign` or remove the key")
    _, _, invalid = _crypto()
    try:
        _load(public_key, private=False).verify(signature, manifest_bytes)
    except invalid as e:
        raise SignatureError(
            f"{path}: signature does not verify against the trusted key; "
            "the manifest was modified or signed with another key") from e
