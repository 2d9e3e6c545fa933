"""Ed25519 signatures over the exact bytes of manifest.json, and the key files behind them.

The manifest pins every member by sha256, so signing it signs the whole bundle.

Key files. `edgepack keygen` writes PEM: PKCS#8 for the private key (`PREFIX.key`, mode 0600)
and SubjectPublicKeyInfo for the public key (`PREFIX.pub`, mode 0644), so a key's kind is in
the file and a key given in the wrong place is named as such. Raw 32-byte keys written as 64 hex
characters are still read (in a file, or inline as a string); their data does not say which
kind they are, so a `.pub`/`.key` file name is taken as the kind.

A key's fingerprint is the first 16 hex characters of sha256 over its raw 32-byte public key
(for a private key: over the public key it derives). `cryptography` is imported only when a
key is actually used, so the runtime stays numpy-only otherwise.
"""
from __future__ import annotations

import hashlib
import os
import string
from dataclasses import dataclass
from pathlib import Path

from .errors import KeyFileError, SignatureError

PRIVATE, PUBLIC = "private", "public"
SIGNATURE_BYTES = 64
_MAX_KEY_FILE = 64 << 10   # a key file is a few hundred bytes; refuse to read anything big
_HEX = frozenset(string.hexdigits)


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise SignatureError(
            "a signing or trusted key is configured but the 'cryptography' package is missing; "
            "pip install 'edgepack[sign]' (or cryptography)") from e
    return ed25519, serialization, InvalidSignature


@dataclass(frozen=True)
class KeyData:
    """A key's bytes, where they came from (for messages) and its kind if that is known."""

    data: bytes
    source: str
    kind: str | None


def read_key(key: bytes | str | os.PathLike) -> KeyData:
    """Resolve `key` (a key file path, inline hex/PEM text, or key bytes) to its data.

    Raises KeyFileError for an empty key, a path that does not exist, or an unreadable file.
    """
    if isinstance(key, bytes):
        data, source, path = key.strip(), "the key given", None
    elif isinstance(key, str) and not _is_file(key) and _looks_inline(key):
        data, source, path = key.strip().encode(), "the key given inline", None
    elif isinstance(key, (str, os.PathLike)):
        if isinstance(key, str) and not key.strip():
            raise KeyFileError("the key is an empty string; give a key file (from `edgepack keygen`)")
        path = Path(key)
        if not _is_file(path):
            if path.exists():
                raise KeyFileError(f"key file {path} is not a regular file")
            raise KeyFileError(f"key file {path} does not exist; create a key pair with "
                               "`edgepack keygen PREFIX` or check the path")
        try:
            if path.stat().st_size > _MAX_KEY_FILE:
                raise KeyFileError(f"key file {path} is over {_MAX_KEY_FILE} bytes; "
                                   "it is not an Ed25519 key")
            data = path.read_bytes().strip()
        except OSError as e:
            raise KeyFileError(f"cannot read key file {path}: {e.strerror or e}") from e
        source = f"key file {path}"
    else:
        raise KeyFileError(f"a key must be a file path, hex text or bytes, not {type(key).__name__}")
    if not data:
        raise KeyFileError(f"{source} is empty")
    return KeyData(data, source, _kind(data, path))


def _is_file(path: str | os.PathLike) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):   # name too long, NUL byte: not a file we can open
        return False


def _looks_inline(text: str) -> bool:
    text = text.strip()
    return text.startswith("-----BEGIN") or (len(text) == 64 and set(text) <= _HEX)


def _kind(data: bytes, path: Path | None) -> str | None:
    head = data.split(b"\n", 1)[0]
    if head.startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in head:
            return PRIVATE
        if b"PUBLIC KEY" in head:
            return PUBLIC
    if path is not None:
        return {".key": PRIVATE, ".pub": PUBLIC}.get(path.suffix.lower())
    return None


def _bad_key(key: KeyData, kind: str, detail: str = "") -> KeyFileError:
    return KeyFileError(
        f"{key.source} is not an Ed25519 {kind} key (PEM from `edgepack keygen`, or 64 hex "
        f"characters)" + (f": {detail}" if detail else ""))


def _raw(key: KeyData) -> bytes:
    if len(key.data) == 64 and set(key.data.decode("ascii", "replace")) <= _HEX:
        return bytes.fromhex(key.data.decode())
    return key.data


def _load(key: KeyData, kind: str, from_pem, from_raw, wanted: type):
    """Parse `key` as PEM or raw bytes; any parse failure or other key type is one
    KeyFileError naming the file and the expected kind."""
    try:
        loaded = from_pem(key.data) if key.data.startswith(b"-----BEGIN") else \
            from_raw(_raw(key))
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise _bad_key(key, kind, str(e)) from e
    if not isinstance(loaded, wanted):
        raise _bad_key(key, kind, f"it is a {type(loaded).__name__}")
    return loaded


def load_private_key(key: bytes | str | os.PathLike | KeyData):
    """The Ed25519 private key in `key`; KeyFileError if it is a public key or not a key."""
    ed25519, serialization, _ = _crypto()
    key = key if isinstance(key, KeyData) else read_key(key)
    if key.kind == PUBLIC:
        raise KeyFileError(
            f"{key.source} is a public key; signing needs the private key "
            "(PREFIX.key from `edgepack keygen`)")
    return _load(key, PRIVATE,
                 lambda data: serialization.load_pem_private_key(data, password=None),
                 ed25519.Ed25519PrivateKey.from_private_bytes, ed25519.Ed25519PrivateKey)


def load_public_key(key: bytes | str | os.PathLike | KeyData):
    """The Ed25519 public key in `key`; KeyFileError if it is a private key or not a key."""
    ed25519, serialization, _ = _crypto()
    key = key if isinstance(key, KeyData) else read_key(key)
    if key.kind == PRIVATE:
        raise KeyFileError(
            f"{key.source} is a private key; a trusted key must be the public key "
            "(PREFIX.pub from `edgepack keygen`). Keep the private key off devices.")
    return _load(key, PUBLIC, serialization.load_pem_public_key,
                 ed25519.Ed25519PublicKey.from_public_bytes, ed25519.Ed25519PublicKey)


def _public_raw(public_key) -> bytes:
    _, serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key) -> str:
    """First 16 hex characters of sha256(raw 32-byte public key), for any key or key file."""
    if hasattr(key, "private_bytes"):      # a loaded private key
        key = key.public_key()
    elif not hasattr(key, "public_bytes"):  # a path, text or bytes
        data = key if isinstance(key, KeyData) else read_key(key)
        key = load_private_key(data).public_key() if data.kind == PRIVATE else \
            load_public_key(data)
    return hashlib.sha256(_public_raw(key)).hexdigest()[:16]


def generate_keypair() -> tuple[str, str]:
    """Return (private, public) raw keys as 64-character hex strings."""
    ed25519, serialization, _ = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    priv = private.private_bytes(raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    return priv.hex(), _public_raw(private.public_key()).hex()


def write_keypair(prefix: str | os.PathLike, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write PREFIX.key (PEM private, mode 0600) and PREFIX.pub (PEM public, mode 0644).

    Refuses (KeyFileError) when either file exists, unless `force`; nothing is written then.
    Returns (private path, public path, fingerprint).
    """
    ed25519, serialization, _ = _crypto()
    prefix = Path(prefix)
    private_path, public_path = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    if not force:
        for path in (private_path, public_path):
            if path.exists() or path.is_symlink():
                raise KeyFileError(f"{path} already exists; refusing to overwrite a key "
                                   "(pass --force to replace the key pair)")
    private = ed25519.Ed25519PrivateKey.generate()
    pem = serialization.Encoding.PEM
    _write_key_file(private_path, private.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600, force)
    _write_key_file(public_path, private.public_key().public_bytes(
        pem, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644, force)
    return private_path, public_path, fingerprint(private)


def _write_key_file(path: Path, data: bytes, mode: int, force: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as e:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key "
                           "(pass --force to replace the key pair)") from e
    except OSError as e:
        raise KeyFileError(f"cannot write key file {path}: {e.strerror or e}") from e
    try:
        # The mode is set explicitly: the umask and an overwritten file's old mode do not count.
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def sign_manifest(manifest_bytes: bytes, private_key: bytes | str | os.PathLike) -> bytes:
    """The 64-byte Ed25519 signature of `manifest_bytes`."""
    return load_private_key(private_key).sign(manifest_bytes)


def verify_signature(path, manifest_bytes: bytes, signature: bytes | None,
                     public_key: bytes | str | os.PathLike) -> str:
    """Check `signature` over `manifest_bytes`; return the trusted key's fingerprint.

    Raises SignatureError when the bundle is unsigned or the signature does not verify, and
    KeyFileError when the key is missing, malformed, or a private key.
    """
    key = read_key(public_key)
    trusted = load_public_key(key)
    fp = fingerprint(trusted)
    if signature is None:
        raise SignatureError(
            f"{path}: a trusted key ({fp}) is configured but the bundle is unsigned; "
            "sign it with `edgepack sign` or remove the key")
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(
            f"{path}: signature.ed25519 is {len(signature)} bytes, an Ed25519 signature is "
            f"{SIGNATURE_BYTES}; re-sign the bundle")
    _, _, invalid = _crypto()
    try:
        trusted.verify(signature, manifest_bytes)
    except invalid as e:
        if key.kind is None and _signed_by_as_private(key, signature, manifest_bytes):
            raise KeyFileError(
                f"{key.source} is the private key that signed this bundle; a trusted key must "
                "be its public key (PREFIX.pub). Keep the private key off devices.") from e
        raise SignatureError(
            f"{path}: signature does not verify against the trusted key {fp}; "
            "the manifest was modified or signed with another key") from e
    return fp


def _signed_by_as_private(key: KeyData, signature: bytes, manifest_bytes: bytes) -> bool:
    _, _, invalid = _crypto()
    try:
        load_private_key(key).public_key().verify(signature, manifest_bytes)
    except (KeyFileError, invalid):
        return False
    return True
