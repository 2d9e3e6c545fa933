"""Typed, frozen configuration of the model server and of its version policy."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal

from ..images import DEFAULT_MAX_PIXELS
from .errors import ServeError

PolicyKind = Literal["latest", "all", "specific"]


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are kept loaded.

    - ``latest`` with ``count`` N: the N newest versions that load and pass the smoke test;
      a bad newest version is skipped, so the previous good one keeps serving.
    - ``all``: every valid version.
    - ``specific``: exactly the listed versions (pinning; the default route serves the newest
      of them).
    """

    kind: PolicyKind = "latest"
    count: int = 1
    versions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        """Parse ``latest``, ``latest:N``, ``all`` or a comma list of versions (``1,3``)."""
        text = text.strip()
        if text == "all":
            return cls("all")
        if text == "latest":
            return cls("latest", 1)
        match = re.fullmatch(r"latest:(\d+)", text)
        if match:
            count = int(match.group(1))
            if count < 1:
                raise ServeError(f"version policy {text!r}: N must be at least 1, e.g. latest:2")
            return cls("latest", count)
        versions = tuple(v.strip() for v in text.split(",") if v.strip())
        if not versions or any(not _VERSION_NAME.fullmatch(v) for v in versions):
            raise ServeError(
                f"version policy {text!r} is not understood: use latest, latest:N, all, "
                "or a comma-separated list of version names such as 1,3")
        return cls("specific", versions=versions)

    def describe(self) -> str:
        if self.kind == "latest":
            return "latest" if self.count == 1 else f"latest:{self.count}"
        if self.kind == "all":
            return "all"
        return ",".join(self.versions)


#: Version and model names become URL path segments and Prometheus label values.
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def valid_name(name: str) -> bool:
    """True when `name` is usable as a model name or a version name in a URL."""
    return bool(MODEL_NAME.fullmatch(name)) or bool(_VERSION_NAME.fullmatch(name))


@dataclass(frozen=True)
class ServeConfig:
    """Everything `edgepack serve` can be told.

    `workers` bounds how many inferences run at once (connections beyond that wait, they are
    not refused); `engine_threads` is passed to `edgepack.runtime.load` for each model's
    intra-op threads. Left unset it is cores // workers for ONNX Runtime, so that workers x
    engine_threads matches the core count: each engine otherwise starts one thread per core,
    and 4 workers on a 4-core board would run 16 compute threads fighting over 4 cores
    (LiteRT, which runs one request at a time per model, gets every core; see `threads_for`).
    With `trusted_key` (a public key file), every version must carry a valid signature or it
    is refused.

    Slow or hostile clients: a connection may sit idle between requests for
    `keepalive_timeout` s; once a request's first byte arrives, its whole head (request line
    and headers) must arrive within `header_timeout` s and its body within `body_timeout` s,
    however slowly it trickles. When all `max_connections` slots are taken, the connection
    that has waited longest without a complete request head is dropped to make room, so
    trickling clients cannot lock well-behaved ones out. Images (`/predict`, pipeline BYTES)
    over `max_image_pixels` are refused from their header (413) before decoding.
    `release_memory` hands the heap freed by an unloaded version back to the OS (glibc
    `malloc_trim`), which keeps RSS flat across hot swaps.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    engine_threads: int | None = None
    engine_spin_wait: bool | None = None
    engine: str | None = None
    trusted_key: str | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    max_connections: int = 64
    keepalive_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    release_memory: bool = True
    poll_interval: float = 2.0
    smoke_test: bool = True
    default_policy: VersionPolicy = VersionPolicy()
    model_policies: tuple[tuple[str, VersionPolicy], ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ServeError(f"port {self.port} is out of range: use 0..65535 (0 = any free port)")
        if self.workers < 1:
            raise ServeError(f"workers must be at least 1, got {self.workers}")
        if self.engine_threads is not None and self.engine_threads < 1:
            raise ServeError(f"engine threads must be at least 1, got {self.engine_threads}")
        if self.max_body_bytes < 1024:
            raise ServeError(f"max body size {self.max_body_bytes} is too small: use >= 1024 bytes")
        if self.max_connections < 1:
            raise ServeError(f"max connections must be at least 1, got {self.max_connections}")
        for name in ("keepalive_timeout", "header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ServeError(f"{name.replace('_', ' ')} must be > 0 seconds, got "
                                 f"{getattr(self, name)}")
        if self.max_image_pixels < 1:
            raise ServeError(f"max image pixels must be at least 1, got {self.max_image_pixels}")
        if self.poll_interval < 0:
            raise ServeError("poll interval must be >= 0 seconds (0 disables watching)")

    def threads_for(self, engine: str | None) -> int:
        """Engine intra-op threads to load a model of `engine` with.

        ONNX Runtime sessions run requests in parallel, so the cores are shared out among the
        workers. A LiteRT interpreter is not thread-safe and the runtime runs one inference
        at a time per model, so it gets every core instead.
        """
        if self.engine_threads is not None:
            return self.engine_threads
        cores = os.cpu_count() or 1
        if engine == "litert":
            return cores
        return max(1, cores // self.workers)

    def spin_wait_for(self, threads: int) -> bool | None:
        """`spin_wait` to load a model with `threads` engine threads (see runtime.load).

        Left unset, the engine's default (ONNX Runtime: workers spin between runs). Measured
        with benchmarks/serve.py (--workers 1 --threads 2, a 0.3 ms MLP, 4 clients, 3
        interleaved pairs): spinning served 7-19% more requests/s, so sleeping is opt-in
        here (--no-spin-wait), for boards that also run other work or several models.
        """
        if threads <= 1:
            return None   # no worker threads to spin
        return self.engine_spin_wait

    def policy_for(self, model: str) -> VersionPolicy:
        """The version policy of one model: its own if given, else the default."""
        for name, policy in self.model_policies:
            if name == model:
                return policy
        return self.default_policy
