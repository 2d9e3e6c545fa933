"""Finding bundles on disk: one bundle, or a model repository of versioned bundles.

Layouts understood (names starting with "." are ignored, so a copy in progress can be
written as ``.3.tmp`` and renamed into place atomically):

- ``PATH`` is one bundle (``x.edgepack`` file, or an unpacked bundle directory holding
  ``manifest.json``): the model and version names come from its manifest;
- ``REPO/<model>/<version>.edgepack``;
- ``REPO/<model>/<version>/`` holding exactly one ``*.edgepack`` file, or an unpacked bundle
  (``manifest.json``).

A scan only lists candidates with a fingerprint (sizes, mtimes, inodes); loading and
verifying is the manager's job. The fingerprint lets the manager notice a bundle replaced in
place and wait until a file being copied has stopped changing.
"""
from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .config import valid_name
from .errors import ServeError

log = logging.getLogger(__name__)

BUNDLE_SUFFIX = ".edgepack"
Fingerprint = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class Candidate:
    """A bundle found on disk for (model, version); `problem` is set when the layout is bad."""

    model: str
    version: str
    path: Path
    fingerprint: Fingerprint
    problem: str | None = None


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting "10" after "9" and "1.10.0" after "1.9.0"; text parts after numbers."""
    parts = re.split(r"[.\-+_]", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def is_single_bundle(path: Path) -> bool:
    """True when `path` is one bundle rather than a repository of models."""
    return (path.is_file() and path.name.endswith(BUNDLE_SUFFIX)) or (
        path.is_dir() and (path / "manifest.json").is_file())


def scan(root: Path) -> dict[tuple[str, str], Candidate]:
    """List every (model, version) candidate under `root`.

    Raises `ServeError` when `root` does not exist or is neither a bundle nor a directory.
    """
    if not root.exists():
        raise ServeError(f"{root} does not exist: give a .edgepack bundle or a model "
                         "repository directory (REPO/<model>/<version>/...)")
    if is_single_bundle(root):
        cand = _single(root)
        return {(cand.model, cand.version): cand}
    if not root.is_dir():
        raise ServeError(f"{root} is neither a .edgepack bundle nor a directory")
    found: dict[tuple[str, str], Candidate] = {}
    for model_dir in _entries(root):
        if not model_dir.is_dir():
            continue
        if not valid_name(model_dir.name):
            log.warning("skipping %s: model directory names may hold letters, digits, '.', "
                        "'_' and '-' only", model_dir)
            continue
        for entry in _entries(model_dir):
            cand = _version_entry(model_dir.name, entry)
            if cand is not None:
                found[(cand.model, cand.version)] = cand
    return found


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as exc:  # removed between listing and reading: next scan sees the truth
        log.debug("cannot list %s: %s", directory, exc)
        return []


def _version_entry(model: str, entry: Path) -> Candidate | None:
    if entry.is_file() and entry.name.endswith(BUNDLE_SUFFIX):
        version = entry.name[: -len(BUNDLE_SUFFIX)]
        path = entry
    elif entry.is_dir():
        version = entry.name
        if (entry / "manifest.json").is_file():
            path = entry
        else:
            bundles = [p for p in _entries(entry) if p.name.endswith(BUNDLE_SUFFIX)]
            if len(bundles) != 1:
                problem = (f"{entry} holds {len(bundles)} *.edgepack files; a version "
                           "directory must hold exactly one (or be an unpacked bundle)")
                return Candidate(model, version, entry, _fingerprint(entry), problem) \
                    if valid_name(version) else None
            path = bundles[0]
    else:
        return None
    if not valid_name(version):
        log.warning("skipping %s: version names may hold letters, digits, '.', '_', '+', '-'",
                    entry)
        return None
    return Candidate(model, version, path, _fingerprint(path))


def _fingerprint(path: Path) -> Fingerprint:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    prints = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        prints.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(prints)


def peek_manifest(path: Path) -> dict:
    """The raw manifest.json of a bundle, unverified; {} when unreadable.

    Only for decisions made before loading (naming a lone bundle, choosing thread counts):
    the full load verifies everything and reports problems with its precise errors.
    """
    try:
        if path.is_dir():
            raw = (path / "manifest.json").read_bytes()
        else:
            with zipfile.ZipFile(path) as archive:
                raw = archive.read("manifest.json")
        manifest = json.loads(raw)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        log.debug("cannot read the manifest of %s: %s", path, exc)
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _single(path: Path) -> Candidate:
    """Name a lone bundle by its manifest; fall back to the file name if unreadable."""
    stem = path.name[: -len(BUNDLE_SUFFIX)] if path.name.endswith(BUNDLE_SUFFIX) else path.name
    manifest = peek_manifest(path)
    name = str(manifest.get("name") or stem)
    version = str(manifest.get("version") or "1")
    if not valid_name(name):
        name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-.") or "model"
    if not valid_name(version):
        version = re.sub(r"[^A-Za-z0-9._+-]", "-", version).strip("-.") or "1"
    return Candidate(name, version, path, _fingerprint(path))
