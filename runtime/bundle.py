"""Read and write bundles: a stored zip archive, or the same tree unpacked in a directory.

Reading verifies everything before anything is used: member names, sizes (zip-bomb
guard), the manifest, and the sha256 + size of every member. Each failure raises its own
`BundleError` subclass naming the member or field, and nothing else escapes: zipfile,
json and OS errors are translated here, in one place.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import stat
import threading
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from .errors import (BundleError, BundleTooLargeError, ChecksumError, ManifestError,
                     MissingMemberError, SignatureError, UnlistedMemberError)
from .manifest import FileEntry, Manifest, parse_manifest
from .members import BundleLimits, check_member_name, open_members

__all__ = ["Bundle", "BundleLimits", "read_bundle", "write_bundle", "trusted_key_setting"]

MANIFEST = "manifest.json"
SIGNATURE = "signature.ed25519"
_UNLISTED_OK = {MANIFEST, SIGNATURE}
_MAX_SIGNATURE_BYTES = 4096   # an Ed25519 signature is 64 bytes
# Fixed timestamp for archive members: the same inputs give byte-identical bundles.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class Bundle:
    """A verified bundle held in memory: its manifest and the bytes of every member."""

    def __init__(self, path: Path, manifest: Manifest, members: Mapping[str, bytes],
                 manifest_bytes: bytes, signature: bytes | None = None,
                 signed_by: str | None = None):
        self.path = path
        self.manifest = manifest
        self._members = dict(members)
        self.manifest_bytes = manifest_bytes
        #: signature.ed25519's bytes, or None for an unsigned bundle.
        self.signature = signature
        #: fingerprint of the trusted key the signature was checked against (None: not checked).
        self.signed_by = signed_by

    @property
    def members(self) -> list[str]:
        return sorted(self._members)

    def read(self, member: str) -> bytes:
        try:
            return self._members[member]
        except KeyError:
            raise MissingMemberError(f"{self.path}: no member {member!r} in this bundle") from None

    def model_bytes(self) -> bytes:
        return self.read(self.manifest.model.path)

    def labels(self) -> list[str] | None:
        if self.manifest.labels is None:
            return None
        text = self.read(self.manifest.labels)
        try:
            return [line.strip() for line in text.decode("utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise ManifestError(f"{self.path}: {self.manifest.labels} is not UTF-8") from e

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, name={self.manifest.name!r})"


def read_bundle(path: str | os.PathLike, *, limits: BundleLimits = BundleLimits(),
                trusted_key: bytes | str | os.PathLike | None = None) -> Bundle:
    """Open and fully verify a bundle (zip file or directory).

    Raises a `BundleError` subclass naming the problem; never returns a partly checked bundle.
    With `trusted_key` (or EDGEPACK_TRUSTED_KEY set), the manifest signature must verify.
    """
    path = Path(path)
    key = trusted_key_setting(trusted_key)   # a bad key setting fails before any reading
    with open_members(path, limits) as source:
        info = source.infos.get(MANIFEST)
        if info is None:
            raise MissingMemberError(
                f"{path}: {MANIFEST} is missing; this is not an edgepack bundle")
        too_big = lambda cap: BundleTooLargeError(f"{path}: {MANIFEST} is over {cap} bytes")  # noqa: E731
        if info.size > limits.max_manifest_bytes:
            raise too_big(limits.max_manifest_bytes)
        manifest_bytes = source.read(MANIFEST, limits.max_manifest_bytes, too_big)
        try:
            manifest = parse_manifest(manifest_bytes)
        except BundleError as e:
            raise type(e)(f"{path}: {e}") from e
        signature = None
        if SIGNATURE in source.infos:
            signature = source.read(SIGNATURE, _MAX_SIGNATURE_BYTES, lambda cap: BundleTooLargeError(
                f"{path}: {SIGNATURE} is over {cap} bytes; an Ed25519 signature is 64"))
        signed_by = None
        if key is not None:   # trust the manifest (which pins every member) before reading on
            from .signing import verify_signature
            signed_by = verify_signature(path, manifest_bytes, signature, key)
        members = _read_members(path, manifest, source)
    return Bundle(path, manifest, members, manifest_bytes, signature, signed_by)


def _read_members(path: Path, manifest: Manifest, source) -> dict[str, bytes]:
    """Read every member the manifest lists, each capped at its declared size and hashed as
    it streams; refuse unlisted members before reading anything."""
    available = {name: info for name, info in source.infos.items() if name not in _UNLISTED_OK}
    for name in available:
        if name not in manifest.files:
            raise UnlistedMemberError(
                f"{path}: member {name!r} is not listed in manifest.json files; "
                "rebuild the bundle with `edgepack pack` rather than editing it")
    for name, entry in manifest.files.items():
        check_member_name(path, name)
        if name not in available:
            raise MissingMemberError(f"{path}: manifest lists {name!r} but the bundle lacks it")
        if available[name].size != entry.bytes:
            raise ChecksumError(
                f"{path}: member {name!r} is {available[name].size} bytes, manifest says "
                f"{entry.bytes}; the bundle is truncated or was modified")
    members = {}
    for name, entry in manifest.files.items():
        digest = hashlib.sha256()
        data = source.read(name, entry.bytes, lambda cap, name=name: ChecksumError(
            f"{path}: member {name!r} holds more than the {cap} bytes the manifest says; "
            "the bundle is corrupt or was modified"), digest)
        _check_entry(path, name, entry, data, digest.hexdigest())
        members[name] = data
    _check_references(path, manifest)
    return members


def _check_entry(path: Path, name: str, entry: FileEntry, data: bytes, digest: str) -> None:
    if len(data) != entry.bytes:
        raise ChecksumError(
            f"{path}: member {name!r} is {len(data)} bytes, manifest says {entry.bytes}; "
            "the bundle is truncated or was modified")
    if digest != entry.sha256:
        raise ChecksumError(
            f"{path}: member {name!r} sha256 {digest[:16]}… does not match the manifest "
            f"({entry.sha256[:16]}…); the bundle is corrupt or was modified")


def _check_references(path: Path, manifest: Manifest) -> None:
    for field, member in (("model.path", manifest.model.path), ("labels", manifest.labels)):
        if member is not None and member not in manifest.files:
            raise ManifestError(f"{path}: {field} {member!r} is not listed in manifest.json files")


def trusted_key_setting(trusted_key: bytes | str | os.PathLike | None = None
                        ) -> bytes | str | os.PathLike | None:
    """The trusted key to check signatures with: `trusted_key`, else EDGEPACK_TRUSTED_KEY.

    An empty value is an error rather than "no key": a blank variable in a deployment must not
    turn signature checking off without a word.
    """
    if trusted_key is None:
        env = os.environ.get("EDGEPACK_TRUSTED_KEY")
        if env is None:
            return None
        if not env.strip():
            raise SignatureError(
                "EDGEPACK_TRUSTED_KEY is set but empty; set it to a public key file (PREFIX.pub "
                "from `edgepack keygen`), or unset it to accept unsigned bundles")
        return env.strip()
    if isinstance(trusted_key, (str, bytes)) and not trusted_key.strip():
        raise SignatureError("the trusted key is empty; give a public key file, or None to "
                             "accept unsigned bundles")
    return trusted_key


def _verify_members(path: Path, manifest: Manifest, members: dict[str, bytes]) -> None:
    """The writer's check of an in-memory member table against its manifest."""
    for name in members:
        if name not in manifest.files:
            raise UnlistedMemberError(f"{path}: member {name!r} is not listed in manifest.json files")
    for name, entry in manifest.files.items():
        check_member_name(path, name)
        if name not in members:
            raise MissingMemberError(f"{path}: manifest lists {name!r} but the bundle lacks it")
        _check_entry(path, name, entry, members[name], hashlib.sha256(members[name]).hexdigest())
    _check_references(path, manifest)


# --- writing -------------------------------------------------------------------------------
def write_bundle(path: str | os.PathLike, manifest: Manifest, members: Mapping[str, bytes],
                 *, directory: bool = False,
                 signing_key: bytes | str | os.PathLike | None = None) -> Path:
    """Write `members` plus a manifest whose `files` table is computed here.

    The zip is written to a temporary file and renamed into place, so a crash never leaves
    a half-written bundle under the final name. With `signing_key` (Ed25519 private key),
    signature.ed25519 is computed over the exact manifest bytes written. Returns the path.
    """
    path = Path(path)
    for name in members:
        check_member_name(path, name)
        if name in _UNLISTED_OK:
            raise BundleError(f"{path}: {name!r} is reserved; pass it through `manifest`")
    files = {name: FileEntry(hashlib.sha256(data).hexdigest(), len(data))
             for name, data in sorted(members.items())}
    manifest = replace(manifest, files=files)
    manifest_bytes = manifest.to_json()
    # Catch a model/labels path that was not supplied before anything is written.
    parse_check = parse_manifest(manifest_bytes)
    _verify_members(path, parse_check, dict(members))

    entries = {MANIFEST: manifest_bytes, **dict(sorted(members.items()))}
    if signing_key is not None:
        from .signing import sign_manifest
        entries[SIGNATURE] = sign_manifest(manifest_bytes, signing_key)
    with _signals_clean_up():
        if directory:
            path.mkdir(parents=True, exist_ok=True)
            (path / SIGNATURE).unlink(missing_ok=True)
            for name, data in entries.items():
                target = path / name
                target.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(target, lambda out, data=data: out.write(data))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, lambda out: _write_zip(out, entries))
    return path


def _write_zip(out, entries: Mapping[str, bytes]) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, data)


def _atomic_write(target: Path, write) -> None:
    """Write through a temporary file beside `target`, then rename it into place.

    The temp file is created like any new file (mode 0666 less the umask, unlike mkstemp's
    0600) and is removed on any failure, including KeyboardInterrupt and (see
    `_signals_clean_up`) SIGTERM, so an interrupted write leaves neither a half-written
    bundle nor a `.edgepack-*` file behind.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):   # a name clash is astronomically rare; bounded anyway
        tmp = target.with_name(f".edgepack-{secrets.token_hex(6)}-{target.name}")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise BundleError(f"{target}: cannot create a temporary file beside it")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Terminated(BaseException):
    """Raised by the temporary SIGTERM handler so that cleanup code runs."""


@contextlib.contextmanager
def _signals_clean_up():
    """While writing, turn a default-handled SIGTERM into an exception (so the temp file is
    removed), then die by the signal as before. Only in the main thread, and only when nobody
    else handles SIGTERM; SIGINT already arrives as KeyboardInterrupt."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def terminate(signum, frame):
        raise _Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)   # cleaned up: now end as SIGTERM would have
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
