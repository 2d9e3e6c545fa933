"""Bounded reading of bundle members, from a zip archive or an unpacked directory.

A bundle is untrusted input, and a zip's headers can promise anything. So everything that can
be checked from the listing is checked before a byte is inflated (names, kinds, member count,
each declared size, the sum of declared sizes, the compression ratio), and every read streams
with a cap chosen by the caller (for a listed member: the size the manifest declares), stopping
at the first chunk past it. Nothing is ever inflated in full before being checked.
"""
from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import BundleError, BundleTooLargeError, UnsafeMemberError

_CHUNK = 1 << 20
# Errors the stdlib raises on corrupt archives; all become BundleError.
ZIP_FAILURES = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
                OSError, ValueError, RuntimeError, zlib.error, struct.error, KeyError,
                IndexError, UnicodeDecodeError, OverflowError)


@dataclass(frozen=True)
class BundleLimits:
    """Upper bounds checked before and while reading (a bundle is untrusted input).

    `max_compression_ratio`: a compressed member may inflate to at most this many times its
    compressed size, once over `ratio_free_bytes` (small files may compress very well). edgepack
    writes members stored, so only archives rebuilt by other tools compress at all, and model
    weights or text compress far less than 32:1; a deflate bomb compresses about 1000:1.
    """

    max_member_bytes: int = 2 << 30
    max_total_bytes: int = 4 << 30
    max_members: int = 256
    max_manifest_bytes: int = 4 << 20
    max_compression_ratio: int = 32
    ratio_free_bytes: int = 1 << 20


@dataclass(frozen=True)
class MemberInfo:
    """A member as listed: `size` is what it claims to hold, `stored` what it takes on disk."""

    name: str
    size: int
    stored: int


def check_member_name(path: Path, name: str) -> None:
    """Refuse a member name that is not a plain, normalized relative path."""
    bad = (not name or name.startswith("/") or "\\" in name or "\x00" in name
           or (len(name) > 1 and name[1] == ":")
           or posixpath.normpath(name) != name or name.split("/")[0] == ".."
           or ".." in name.split("/"))
    if bad:
        raise UnsafeMemberError(
            f"{path}: member name {name!r} is not a plain relative path; refusing to read it")


def open_members(path: Path, limits: BundleLimits) -> "ZipMembers | DirectoryMembers":
    """The bundle at `path` as a listing plus bounded reads; raises BundleError."""
    if path.is_dir():
        return DirectoryMembers(path, limits)
    if path.is_file():
        return ZipMembers(path, limits)
    raise BundleError(f"{path}: no such bundle file or directory")


class _Members:
    path: Path
    limits: BundleLimits
    infos: dict[str, MemberInfo]

    def _check_listing(self) -> None:
        limits, total = self.limits, 0
        if len(self.infos) > limits.max_members:
            raise BundleTooLargeError(f"{self.path}: {len(self.infos)} members, more than the "
                                      f"limit of {limits.max_members}")
        for info in self.infos.values():
            if info.size > limits.max_member_bytes:
                raise BundleTooLargeError(
                    f"{self.path}: member {info.name!r} declares {info.size} bytes, over the "
                    f"per-member limit of {limits.max_member_bytes}")
            if info.size > max(info.stored * limits.max_compression_ratio,
                               limits.ratio_free_bytes):
                raise BundleTooLargeError(
                    f"{self.path}: member {info.name!r} inflates from {info.stored} to "
                    f"{info.size} bytes, a compression ratio over the limit of "
                    f"{limits.max_compression_ratio}:1 (a zip bomb?); rebuild the bundle with "
                    "`edgepack pack`, which stores members uncompressed")
            total += info.size
            if total > limits.max_total_bytes:
                raise BundleTooLargeError(
                    f"{self.path}: members add up to more than {limits.max_total_bytes} bytes")

    def read(self, name: str, cap: int, over: Callable[[int], BundleError],
             digest: "hashlib._Hash | None" = None) -> bytes:
        """Stream member `name`, at most `cap` bytes: `over(cap)` is raised at the first chunk
        past it. `digest` (a hashlib object) is fed as the bytes arrive."""
        out, size = io.BytesIO(), 0
        with self._translated(), self._open(name) as stream:
            while chunk := stream.read(min(_CHUNK, cap - size + 1)):
                size += len(chunk)
                if size > cap:
                    raise over(cap)
                out.write(chunk)
                if digest is not None:
                    digest.update(chunk)
        return out.getvalue()

    def _translated(self):
        raise NotImplementedError

    def _open(self, name: str):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass


class _Translate:
    """Turn the stdlib's errors on a corrupt archive/directory into one BundleError."""

    def __init__(self, path: Path, failures: tuple, message: str):
        self.path, self.failures, self.message = path, failures, message

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or isinstance(error, BundleError) or not isinstance(error, self.failures):
            return False
        raise BundleError(self.message.format(path=self.path, kind=type(error).__name__,
                                              error=error)) from error


class ZipMembers(_Members):
    def __init__(self, path: Path, limits: BundleLimits):
        self.path, self.limits, self._zip = path, limits, None
        with self._translated():
            self._zip = zipfile.ZipFile(path)
            self._infos = {}
            self.infos = {}
            try:
                for info in self._zip.infolist():
                    self._add(info)
                self._check_listing()
            except BaseException:
                self.close()
                raise

    def _add(self, info: zipfile.ZipInfo) -> None:
        name = info.filename
        check_member_name(self.path, name)
        # Many zip writers set no file-type bits; refuse only a type that is not regular.
        kind = stat.S_IFMT(info.external_attr >> 16)
        if info.is_dir() or kind not in (0, stat.S_IFREG):
            raise UnsafeMemberError(
                f"{self.path}: member {name!r} is a directory, link or device; "
                "bundles hold regular files only")
        if name in self.infos:
            raise UnsafeMemberError(f"{self.path}: member {name!r} appears twice")
        self._infos[name] = info
        stored = info.compress_size if info.compress_type != zipfile.ZIP_STORED else info.file_size
        self.infos[name] = MemberInfo(name, info.file_size, stored)

    def _translated(self):
        return _Translate(self.path, ZIP_FAILURES,
                          "{path}: not a readable bundle archive ({kind}: {error}); "
                          "re-download or rebuild it")

    def _open(self, name: str):
        return self._zip.open(self._infos[name])

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


class DirectoryMembers(_Members):
    def __init__(self, path: Path, limits: BundleLimits):
        self.path, self.limits, self.infos = path, limits, {}
        with self._translated():
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
                    if len(self.infos) >= limits.max_members:
                        raise BundleTooLargeError(f"{path}: more than {limits.max_members} files")
                    size = full.stat().st_size
                    self.infos[rel] = MemberInfo(rel, size, size)
            self._check_listing()

    def _translated(self):
        return _Translate(self.path, (OSError,), "{path}: cannot read bundle directory ({error})")

    def _open(self, name: str):
        # O_NOFOLLOW: a file swapped for a link after the listing is not followed.
        fd = os.open(self.path / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        return os.fdopen(fd, "rb")
