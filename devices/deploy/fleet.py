"""Deploy to many boards: a canary first, then the rest with bounded parallelism.

The canary (the first host of the list) must take the bundle — READY and one smoke
inference — before any other board is touched. After it, up to `parallel` boards deploy at
once; the first failure stops new deploys from starting (those hosts are reported SKIPPED)
unless `keep_going`. Each board that fails rolls itself back (see `deployer.deploy`).

Hosts file: one board per line, ``[USER@]HOST[:REPOSITORY] [port=N] [edgepack=PATH]``;
blank lines and ``#`` comments are ignored.
"""
from __future__ import annotations

import logging
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from edgepack.runtime.errors import EdgepackError

from .deployer import DeployConfig, DeployResult, deploy
from .errors import DeployError, DeployRefused, NotReadyError
from .ssh import SshTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetHost:
    target: SshTarget
    port: int | None = None
    edgepack: str | None = None


def read_hosts(path: Path) -> list[FleetHost]:
    """Parse a hosts file; raises DeployError naming the line that is wrong."""
    hosts: list[FleetHost] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DeployError(f"cannot read the hosts file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        target = SshTarget.parse(words[0])
        options = {}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or key not in ("port", "edgepack"):
                raise DeployError(f"{path}:{number}: unknown option {word!r} (known: port=N, "
                                  "edgepack=PATH)")
            options[key] = value
        try:
            port = int(options["port"]) if "port" in options else None
        except ValueError:
            raise DeployError(f"{path}:{number}: port={options['port']!r} is not a number") \
                from None
        hosts.append(FleetHost(target, port, options.get("edgepack")))
    if not hosts:
        raise DeployError(f"the hosts file {path} lists no boards")
    return hosts


def _one(bundle: Path, host: FleetHost, config: DeployConfig) -> DeployResult:
    cfg = replace(config, port=host.port or config.port,
                  edgepack=host.edgepack or config.edgepack)
    try:
        return deploy(bundle, host.target, cfg)
    except DeployRefused as exc:
        state = "REFUSED"
        error: EdgepackError = exc
    except NotReadyError as exc:
        state = "ROLLED BACK"
        error = exc
    except EdgepackError as exc:
        state = "FAILED"
        error = exc
    return DeployResult(str(host.target), config.model or "", "", state, str(error))


def deploy_fleet(bundle: Path, hosts: list[FleetHost], config: DeployConfig,
                 parallel: int = 4, keep_going: bool = False) -> list[DeployResult]:
    """Canary first, then the rest; returns one result per host, in the file's order."""
    if parallel < 1:
        raise DeployError("--parallel must be at least 1")
    canary, rest = hosts[0], hosts[1:]
    results: dict[int, DeployResult] = {}
    first = _one(bundle, canary, replace(config, smoke=True))
    results[0] = first
    skipped = not first.ok and not keep_going
    stop = threading.Event()
    if skipped:
        stop.set()
        log.error("canary %s failed: %s", canary.target, first.message)

    def run(index: int, host: FleetHost) -> None:
        if stop.is_set():
            results[index] = DeployResult(str(host.target), config.model or "", "", "SKIPPED",
                                          "not started: an earlier board failed"
                                          + (" (the canary)" if skipped else ""))
            return
        result = _one(bundle, host, config)
        results[index] = result
        if not result.ok and not keep_going:
            stop.set()

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="edgepack-deploy") as pool:
        for future in [pool.submit(run, i, h) for i, h in enumerate(rest, 1)]:
            future.result()
    return [results[i] for i in range(len(hosts))]


__all__ = ["FleetHost", "deploy_fleet", "read_hosts"]
