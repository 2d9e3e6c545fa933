"""Read and write bundles: a stored zip archive, or the same tree unpacked in a directory.

Reading verifies everything before anything is used: member names, sizes (zip-bomb
guard), the manifest, and the sha256 + size of every member. Each failure raises its own
`BundleError` subclass naming the member or field, and nothing else escapes: zipfile,
json and OS errors are translated here, in one place.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from .errors import (BundleError, BundleTooLargeError, ChecksumError, ManifestError,
                     MissingMemberError, SignatureError, UnlistedMemberError, UnsafeMemberError)
from .manifest import FileEntry, Manifest, parse_manifest

MANIFEST = "manifest.json"
SIGNATURE = "signature.ed25519"
_UNLISTED_OK = {MANIFEST, SIGNATURE}
# Fixed timestamp for archive members: the same inputs give byte-identical bundles.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# Errors the stdlib raises on corrupt archives; all become BundleError.
_ZIP_FAILURES = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
                 OSError, ValueError, RuntimeError, zlib.error, struct.error, KeyError,
                 IndexError, UnicodeDecodeError, OverflowError)


@dataclass(frozen=True)
class BundleLimits:
    """Upper bounds checked before and while reading (a bundle is untrusted input)."""

    max_member_bytes: int = 2 << 30
    max_total_bytes: int = 4 << 30
    max_members: int = 256
    max_manifest_bytes: int = 4 << 20


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
    if path.is_dir():
        raw = _read_directory(path, limits)
    elif path.is_file():
        raw = _read_zip(path, limits)
    else:
        raise BundleError(f"{path}: no such bundle file or directory")

    manifest_bytes = raw.pop(MANIFEST, None)
    if manifest_bytes is None:
        raise MissingMemberError(f"{path}: {MANIFEST} is missing; this is not an edgepack bundle")
    if len(manifest_bytes) > limits.max_manifest_bytes:
        raise BundleTooLargeError(f"{path}: {MANIFEST} is over {limits.max_manifest_bytes} bytes")
    try:
        manifest = parse_manifest(manifest_bytes)
    except BundleError as e:
        raise type(e)(f"{path}: {e}") from e
    signature = raw.pop(SIGNATURE, None)
    _verify_members(path, manifest, raw)

    key = trusted_key_setting(trusted_key)
    signed_by = None
    if key is not None:
        from .signing import verify_signature
        signed_by = verify_signature(path, manifest_bytes, signature, key)
    return Bundle(path, manifest, raw, manifest_bytes, signature, signed_by)


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
    for name in members:
        if name not in manifest.files:
            raise UnlistedMemberError(
                f"{path}: member {name!r} is not listed in manifest.json files; "
                "rebuild the bundle with `edgepack pack` rather than editing it")
    for name, entry in manifest.files.items():
        _check_member_name(path, name)
        if name not in members:
            raise MissingMemberError(f"{path}: manifest lists {name!r} but the bundle lacks it")
        data = members[name]
        if len(data) != entry.bytes:
            raise ChecksumError(
                f"{path}: member {name!r} is {len(data)} bytes, manifest says {entry.bytes}; "
                "the bundle is truncated or was modified")
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise ChecksumError(
                f"{path}: member {name!r} sha256 {digest[:16]}… does not match the manifest "
                f"({entry.sha256[:16]}…); the bundle is corrupt or was modified")
    for field, member in (("model.path", manifest.model.path), ("labels", manifest.labels)):
        if member is not None and member not in manifest.files:
            raise ManifestError(f"{path}: {field} {member!r} is not listed in manifest.json files")


def _check_member_name(path: Path, name: str) -> None:
    bad = (not name or name.startswith("/") or "\\" in name or "\x00" in name
           or (len(name) > 1 and name[1] == ":")
           or posixpath.normpath(name) != name or name.split("/")[0] == ".."
           or ".." in name.split("/"))
    if bad:
        raise UnsafeMemberError(
            f"{path}: member name {name!r} is not a plain relative path; refusing to read it")


def _read_zip(path: Path, limits: BundleLimits) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > limits.max_members:
                raise BundleTooLargeError(
                    f"{path}: {len(infos)} members, more than the limit of {limits.max_members}")
            total = 0
            members: dict[str, bytes] = {}
            for info in infos:
                name = info.filename
                _check_member_name(path, name)
                # Many zip writers set no file-type bits; refuse only a type that is not regular.
                kind = stat.S_IFMT(info.external_attr >> 16)
                if info.is_dir() or kind not in (0, stat.S_IFREG):
                    raise UnsafeMemberError(
                        f"{path}: member {name!r} is a directory, link or device; "
                        "bundles hold regular files only")
                if name in members:
                    raise UnsafeMemberError(f"{path}: member {name!r} appears twice")
                if info.file_size > limits.max_member_bytes:
                    raise BundleTooLargeError(
                        f"{path}: member {name!r} declares {info.file_size} bytes, over the "
                        f"per-member limit of {limits.max_member_bytes}")
                data = _read_bounded(archive, info, limits.max_member_bytes, path)
                total += len(data)
                if total > limits.max_total_bytes:
                    raise BundleTooLargeError(
                        f"{path}: members add up to more than {limits.max_total_bytes} bytes")
                members[name] = data
            return members
    except BundleError:
        raise
    except _ZIP_FAILURES as e:
        raise BundleError(
            f"{path}: not a readable bundle archive ({type(e).__name__}: {e}); "
            "re-download or rebuild it") from e


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int,
                  path: Path) -> bytes:
    # The header's size can lie; read at most limit+1 bytes to catch a bomb that does.
    chunks, size = [], 0
    with archive.open(info) as stream:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise BundleTooLargeError(
                    f"{path}: member {info.filename!r} inflates past the per-member limit "
                    f"of {limit} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def _read_directory(path: Path, limits: BundleLimits) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    total = 0
    try:
        for root, dirs, files in os.walk(path, followlinks=False):
            for name in sorted(dirs + files):
                full = Path(root, name)
                rel = full.relative_to(path).as_posix()
                if full.is_symlink():
                    raise UnsafeMemberError(f"{path}: {rel!r} is a symbolic link; refusing it")
                if name in dirs:
                    continue
                if not full.is_file():
                    raise UnsafeMemberError(f"{path}: {rel!r} is not a regular file")
                if len(members) >= limits.max_members:
                    raise BundleTooLargeError(f"{path}: more than {limits.max_members} files")
                size = full.stat().st_size
                if size > limits.max_member_bytes:
                    raise BundleTooLargeError(
                        f"{path}: {rel!r} is {size} bytes, over the limit of "
                        f"{limits.max_member_bytes}")
                total += size
                if total > limits.max_total_bytes:
                    raise BundleTooLargeError(
                        f"{path}: files add up to more than {limits.max_total_bytes} bytes")
                members[rel] = full.read_bytes()
    except OSError as e:
        raise BundleError(f"{path}: cannot read bundle directory ({e})") from e
    return members


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
        _check_member_name(path, name)
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
    if directory:
        path.mkdir(parents=True, exist_ok=True)
        (path / SIGNATURE).unlink(missing_ok=True)
        for name, data in entries.items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, data)
        return path

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".edgepack-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
            for name, data in entries.items():
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                zf.writestr(info, data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _atomic_write(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
