"""Loaded model versions: background loading, verification, atomic swap, drain and release.

Concurrency model:

- The set of loaded versions is an immutable snapshot ``{model: {version: LoadedVersion}}``
  replaced in one assignment under `_lock`. A request takes a *lease* on one version under the
  same lock, so it either sees the old snapshot or the new one, never a half-loaded model
  (versions are fully loaded and smoke-tested before they enter a snapshot).
- A version dropped from the snapshot is *retired*: no new lease can reach it, requests
  already holding it finish on it, and the last one out closes it (releasing the engine's
  memory). Nothing waits on a timer.
- Only one thread (`sync`, called by the watcher) loads and publishes, serialised by
  `_sync_lock`, so loads never race each other.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..specs import example_feeds

from .config import ServeConfig
from .errors import RequestError, ServeError
from .memory import release_freed_memory
from .metrics import Metrics
from .repository import Candidate, Fingerprint, peek_manifest, scan, version_key

log = logging.getLogger(__name__)

Loader = Callable[[Path], Any]


@dataclass(eq=False)
class LoadedVersion:
    """One loaded model version and its lease count (guarded by the manager's lock)."""

    model_name: str
    version: str
    path: Path
    fingerprint: Fingerprint
    model: Any
    load_seconds: float
    refs: int = 0
    retired: bool = False
    closed: bool = False
    labels: tuple[tuple[str, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.labels = (("model", self.model_name), ("version", self.version))


@dataclass(frozen=True)
class VersionState:
    """What the repository index reports about one version."""

    model: str
    version: str
    state: str          # "READY" | "LOADING" (seen, waiting to settle) | "UNAVAILABLE"
    reason: str = ""


def smoke_test(model: Any) -> None:
    """Run one inference on the bundle's own example inputs (`Model.example_feeds`: the
    manifest's `examples` where given, so stateful/multi-input models get real values).

    Raises `ServeError` when an output the manifest declares does not come back.
    """
    examples = getattr(getattr(model, "manifest", None), "examples", None)
    if any(spec.dtype == "string" for spec in model.inputs) and not examples:
        log.info("smoke test skipped for %s: string inputs and no examples", model.name)
        return
    # Engines registered by applications may wrap a Model without example_feeds.
    feeds = (model.example_feeds() if hasattr(model, "example_feeds")
             else example_feeds(model.inputs))
    outputs = model.run(feeds)
    missing = [s.name for s in model.outputs if s.name not in outputs]
    if missing:
        raise ServeError(f"smoke inference did not return outputs {missing}")


class ModelManager:
    """Keeps the versions a repository's policy asks for loaded, and hands out leases."""

    def __init__(self, root: Path, config: ServeConfig, metrics: Metrics,
                 loader: Loader | None = None):
        self.root = Path(root)
        self.config = config
        self.metrics = metrics
        self._loader = loader or self._default_loader
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)    # notified when no lease is held
        self._active = 0
        self._closing = False
        self._sync_lock = threading.Lock()
        self._state: dict[str, dict[str, LoadedVersion]] = {}
        # The newest loaded version of each model, found once per swap rather than by a
        # version_key sort per request (a regex split per version: ~10 us a request).
        self._newest: dict[str, str] = {}
        self._failed: dict[tuple[str, str], tuple[Fingerprint, str]] = {}
        self._seen: dict[tuple[str, str], Fingerprint] = {}
        self._pending: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.synced = threading.Event()

    # --- loading -----------------------------------------------------------------------
    def _default_loader(self, path: Path) -> Any:
        from edgepack.runtime import load   # lazy: keeps this module importable alone

        engine = self.config.engine
        if engine is None:
            entry = peek_manifest(path).get("model")
            engine = entry.get("engine") if isinstance(entry, dict) else None
        threads = self.config.threads_for(engine)
        return load(path, engine=self.config.engine, threads=threads,
                    spin_wait=self.config.spin_wait_for(threads),
                    trusted_key=self.config.trusted_key)

    def _load(self, cand: Candidate) -> LoadedVersion:
        start = time.perf_counter()
        model = self._loader(cand.path)
        try:
            if self.config.smoke_test:
                smoke_test(model)
        except Exception:
            model.close()
            raise
        seconds = time.perf_counter() - start
        log.info("loaded %s version %s from %s in %.3f s", cand.model, cand.version, cand.path,
                 seconds)
        return LoadedVersion(cand.model, cand.version, cand.path, cand.fingerprint, model,
                             seconds)

    def sync(self, settle: bool = True) -> None:
        """Scan the repository once; load, swap in and retire versions as the policy says.

        With `settle`, a new or changed bundle is loaded only once its fingerprint is the same
        as in the previous scan, so a file still being copied is not read half-written.
        Raises `ServeError` only when the repository itself is unreadable.
        """
        with self._sync_lock:
            candidates = scan(self.root)
            by_model: dict[str, dict[str, Candidate]] = {}
            pending: set[tuple[str, str]] = set()
            for (model, version), cand in candidates.items():
                by_model.setdefault(model, {})[version] = cand
            new_state = {model: self._select(model, versions, settle, pending)
                         for model, versions in by_model.items()}
            self._pending = pending     # replaced whole: index() never sees a partial set
            self._seen = {key: cand.fingerprint for key, cand in candidates.items()}
            self._failed = {k: v for k, v in self._failed.items() if k in candidates}
            self._publish(new_state)
            self.synced.set()

    def _select(self, model: str, versions: dict[str, Candidate], settle: bool,
                pending: set[tuple[str, str]]) -> dict[str, LoadedVersion]:
        policy = self.config.policy_for(model)
        current = self._state.get(model, {})
        ordered = sorted(versions, key=version_key, reverse=True)
        if policy.kind == "specific":
            ordered = [v for v in ordered if v in policy.versions]
        keep: dict[str, LoadedVersion] = {}
        for version in ordered:
            if policy.kind == "latest" and len(keep) >= policy.count:
                break
            cand, loaded = versions[version], current.get(version)
            key = (model, version)
            if loaded is not None and loaded.fingerprint == cand.fingerprint:
                keep[version] = loaded
                continue
            failed = self._failed.get(key)
            not_settled = settle and self._seen.get(key) != cand.fingerprint
            if (failed is not None and failed[0] == cand.fingerprint) or not_settled:
                if not_settled and not (failed is not None and failed[0] == cand.fingerprint):
                    pending.add(key)
                if loaded is not None:          # replaced in place: keep the old bytes serving
                    keep[version] = loaded
                continue
            try:
                if cand.problem:
                    raise ServeError(cand.problem)
                keep[version] = self._load(cand)
                self.metrics.set_gauge("edgepack_model_load_seconds", keep[version].labels,
                                       keep[version].load_seconds)
            except Exception as exc:  # any failure refuses this version, never the server
                reason = f"{type(exc).__name__}: {exc}"
                self._failed[key] = (cand.fingerprint, reason)
                self.metrics.inc("edgepack_model_load_failures_total",
                                 (("model", model), ("version", version)))
                log.error("refused %s version %s (%s): %s; still serving %s", model, version,
                          cand.path, reason, sorted(current) or "nothing")
                if loaded is not None:
                    keep[version] = loaded
        return keep

    def _publish(self, new_state: dict[str, dict[str, LoadedVersion]]) -> None:
        kept = {id(lv) for versions in new_state.values() for lv in versions.values()}
        to_close = []
        with self._lock:
            old, self._state = self._state, new_state
            self._newest = {model: max(versions, key=version_key)
                            for model, versions in new_state.items() if versions}
            for versions in old.values():
                for lv in versions.values():
                    if id(lv) in kept:
                        continue
                    lv.retired = True
                    if lv.refs == 0 and not lv.closed:
                        lv.closed = True
                        to_close.append(lv)
                    log.info("retired %s version %s (%d request(s) still on it)",
                             lv.model_name, lv.version, lv.refs)
        for versions in new_state.values():
            for lv in versions.values():
                self.metrics.set_gauge("edgepack_model_loaded", lv.labels, 1)
        for lv in to_close:
            self._close(lv)

    def _close(self, lv: LoadedVersion) -> None:
        self.metrics.set_gauge("edgepack_model_loaded", lv.labels, None)
        try:
            lv.model.close()
        except Exception:  # a failing close must not take the request thread down with it
            log.exception("closing %s version %s failed", lv.model_name, lv.version)
        lv.model = None     # drop the engine so its memory can be reclaimed now
        if self.config.release_memory:
            release_freed_memory()      # else glibc keeps it: RSS grows with every swap
        log.info("released %s version %s", lv.model_name, lv.version)

    # --- requests ------------------------------------------------------------------------
    @contextmanager
    def lease(self, model: str, version: str | None = None) -> Iterator[LoadedVersion]:
        """Hold one loaded version for the duration of a request.

        `version` None picks the newest loaded version. Raises `RequestError` 404 for an
        unknown model or version, 503 when the model exists but no version is loaded.
        """
        with self._lock:
            if self._closing:
                raise RequestError(503, "the server is shutting down")
            versions = self._state.get(model)
            if versions is None:
                known = ", ".join(sorted(self._state)) or "none"
                raise RequestError(404, f"unknown model {model!r}; models served: {known}")
            if not versions:
                raise RequestError(503, f"model {model!r} has no loaded version (every "
                                        "candidate was refused; see the server log)")
            if version is None:
                version = self._newest[model]
            lv = versions.get(version)
            if lv is None:
                raise RequestError(404, f"model {model!r} has no loaded version {version!r}; "
                                        f"loaded: {', '.join(sorted(versions, key=version_key))}")
            lv.refs += 1
            self._active += 1
        try:
            yield lv
        finally:
            with self._lock:
                lv.refs -= 1
                self._active -= 1
                if self._active == 0:
                    self._idle.notify_all()
                close = lv.retired and lv.refs == 0 and not lv.closed
                if close:
                    lv.closed = True
            if close:
                self._close(lv)

    def snapshot(self) -> dict[str, dict[str, LoadedVersion]]:
        """The current {model: {version: LoadedVersion}} (do not keep leases-free refs long)."""
        with self._lock:
            return {m: dict(v) for m, v in self._state.items()}

    def index(self) -> list[VersionState]:
        """Every version on disk or loaded, with its state (the repository index)."""
        with self._lock:
            state = {m: dict(v) for m, v in self._state.items()}
            failed = dict(self._failed)
            seen = set(self._seen)
            pending = set(self._pending)
        rows = []
        for model, version in sorted(seen | {(m, v) for m in state for v in state[m]},
                                     key=lambda k: (k[0], version_key(k[1]))):
            if version in state.get(model, {}):
                rows.append(VersionState(model, version, "READY"))
            elif (model, version) in pending:
                rows.append(VersionState(model, version, "LOADING",
                                         "new or changed; loads once its files stop changing"))
            else:
                reason = failed[(model, version)][1] if (model, version) in failed else \
                    "not selected by the version policy"
                rows.append(VersionState(model, version, "UNAVAILABLE", reason))
        return rows

    def ready(self) -> bool:
        """True once the first scan is done and at least one version is loaded."""
        with self._lock:
            return self.synced.is_set() and any(self._state.values())

    # --- watching ------------------------------------------------------------------------
    def start_watching(self) -> None:
        """Poll the repository every `poll_interval` seconds in a daemon thread.

        Polling (a few stat() calls per poll) rather than inotify: it needs no dependency,
        works the same on SD cards, overlayfs, NFS and macOS, and a copy in progress is
        detected by an unchanged fingerprint across two polls.
        """
        if self.config.poll_interval <= 0 or self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._watch, name="edgepack-serve-watcher",
                                         daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        last_problem = None
        while not self._stop.wait(self.config.poll_interval):
            try:
                self.sync(settle=True)
                if last_problem is not None:
                    log.warning("repository %s is readable again", self.root)
                last_problem = None
            except ServeError as exc:   # e.g. the path was removed; it may come back
                if str(exc) != last_problem:    # once per problem, not every poll
                    log.error("%s; serving the versions already loaded", exc)
                last_problem = str(exc)
            except Exception:  # a bug: keep watching, say so loudly
                log.exception("scanning %s failed; serving the versions already loaded",
                              self.root)

    def close(self, drain_timeout: float = 10.0) -> bool:
        """Stop watching, refuse new requests (503), retire every version, and wait up to
        `drain_timeout` seconds for requests in flight to finish. Returns True if they did.
        """
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=max(5.0, 2 * self.config.poll_interval))
            self._watcher = None
        with self._sync_lock:
            with self._lock:
                self._closing = True
            self._publish({})
        with self._lock:
            drained = self._idle.wait_for(lambda: self._active == 0, timeout=drain_timeout)
        if not drained:
            log.warning("%d request(s) still running after %.0f s; stopping anyway",
                        self._active, drain_timeout)
        return drained
