"""`serve --pull`: a board follows a registry tag and pulls each new bundle into the
model repository it serves, as the next version (`TagFollower`). The registry client and
the verified pull are `runtime/oci.py`'s."""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path

from .errors import EdgepackError
from .oci import ANNOTATION_PREFIX, Artifact, Reference, RegistryClient, RegistryConfig, \
    pull_bundle

log = logging.getLogger("edgepack.runtime.oci")


class TagFollower:
    """Polls a tag; when its digest changes, pulls the bundle into a served repository.

    The bundle is written as the next integer version ``ROOT/MODEL/N.edgepack`` through a
    dot-prefixed temporary file and an atomic rename, so the server's own repository watcher
    loads, verifies and swaps it in like any copied file (and keeps the old version if it
    fails). The digest last written is remembered in ``ROOT/MODEL/.oci-follow.json`` so a
    restart does not pull the same bundle again.
    """

    def __init__(self, ref: Reference, root: Path, *, model: str | None = None,
                 poll_interval: float = 30.0, config: RegistryConfig = RegistryConfig(),
                 trusted_key: str | os.PathLike | None = None):
        self.ref = ref
        self.root = Path(root)
        self.model = model
        self.poll_interval = poll_interval
        self.config = config
        self.trusted_key = trusted_key
        self._client = RegistryClient(config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None

    def _state_file(self, model: str) -> Path:
        return self.root / model / ".oci-follow.json"

    def _known_digest(self, model: str) -> str | None:
        try:
            state = json.loads(self._state_file(model).read_text())
        except (OSError, ValueError):
            return None
        return state.get("digest") if state.get("reference") == str(self.ref) else None

    def check_once(self) -> Path | None:
        """Look at the tag once; returns the path written when a new bundle arrived."""
        digest = self._client.digest_of(self.ref)
        model = self.model
        if model and digest == self._known_digest(model):
            return None
        artifact = self._client.resolve(self.ref)
        model = self.model = self.model or self._model_name(artifact)
        if digest != artifact.digest:       # retagged between the two calls: take the newest
            digest = artifact.digest
        if digest == self._known_digest(model):
            return None
        directory = self.root / model
        directory.mkdir(parents=True, exist_ok=True)
        version = _next_version(directory)
        target = directory / f"{version}.edgepack"
        pull_bundle(self.ref, target, self.config, self.trusted_key, artifact)
        state = {"reference": str(self.ref), "digest": digest, "version": version}
        tmp = directory / ".oci-follow.json.part"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_file(model))
        log.info("pulled %s (%s) as %s version %d", self.ref, digest, model, version)
        return target

    def _model_name(self, artifact: Artifact) -> str:
        """The bundle's own name from the annotations, else the repository's last part."""
        name = artifact.annotations.get(ANNOTATION_PREFIX + "name")
        if name and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            return name
        return self.ref.repository.rsplit("/", 1)[-1]

    def start(self) -> "TagFollower":
        """Check now, then every `poll_interval` seconds in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="edgepack-oci-follow",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.check_once()
                self._last_error = None
            except EdgepackError as exc:   # registry down, tampered blob...: keep serving
                if str(exc) != self._last_error:
                    log.error("following %s: %s; serving the versions already there",
                              self.ref, exc)
                self._last_error = str(exc)
            except Exception:  # a bug: keep following, say so loudly
                log.exception("following %s failed", self.ref)
            if self._stop.wait(self.poll_interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout + 5)


def _next_version(directory: Path) -> int:
    numbers = [0]
    for entry in directory.iterdir():
        stem = entry.name[:-len(".edgepack")] if entry.name.endswith(".edgepack") else entry.name
        if stem.isdigit():
            numbers.append(int(stem))
    return max(numbers) + 1


__all__ = ["TagFollower"]
