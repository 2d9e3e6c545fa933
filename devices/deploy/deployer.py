"""Deploy one bundle to one board: check first, upload atomically, confirm READY, roll back.

    result = deploy(Path("digits.edgepack"), SshTarget.parse("pi@board:models"), DeployConfig())

Steps, each of which can stop the deploy before the next:
1. the bundle is verified locally (checksums, signature with a trusted key);
2. `edgepack doctor --json` on the board gives its profile; `check_bundle` against that
   profile plus the board's own facts (engines installed there) must find no error
   (`force` overrides) — nothing has been copied yet;
3. upload to a hidden name, fsync, sha256 on the board, atomic rename to MODEL/N.edgepack;
4. the board's server (through the SSH tunnel) must list MODEL/N READY within `timeout`
   and, with `smoke`, answer one inference; otherwise the file is removed — the server then
   keeps (or reloads) the previous version — and `NotReadyError` carries the server's reason.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.devices.catalog import load_profile
from edgepack.devices.check import Finding, check_bundle

from . import board as remote
from .errors import DeployError, DeployRefused, NotReadyError
from .ssh import SshOptions, SshSession, SshTarget, join

if TYPE_CHECKING:
    from .service import ServiceConfig

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# Runtime engine -> the package names `edgepack doctor` reports for it.
_ENGINE_PACKAGES = {"onnxruntime": ("onnxruntime",),
                    "litert": ("ai-edge-litert", "tflite-runtime", "tensorflow",
                               "tensorflow-cpu")}
_DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int8": "INT8",
              "uint8": "UINT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
              "bool": "BOOL"}


@dataclass(frozen=True)
class DeployConfig:
    """Options of one deploy (the CLI's flags)."""

    model: str | None = None            # model directory name [the bundle's manifest name]
    version: str | None = None          # [next integer]
    device: str | None = None           # profile to check against [the board's closest]
    force: bool = False                 # deploy even when the check finds errors
    timeout: float = 60.0               # seconds to wait for READY
    port: int = 8000                    # the board's `edgepack serve` port (on its loopback)
    edgepack: str | None = None         # the board's edgepack [PATH, then the deploy venv]
    smoke: bool = False                 # also run one inference on the new version
    trusted_key: str | None = None      # verify the bundle's signature locally
    install_service: "ServiceConfig | None" = None   # install edgepack + the systemd unit
    ssh: SshOptions = field(default_factory=SshOptions)


@dataclass(frozen=True)
class DeployResult:
    """What happened on one board."""

    host: str
    model: str
    version: str
    state: str                          # READY | REFUSED | ROLLED BACK | FAILED | SKIPPED
    message: str = ""
    previous: tuple[str, ...] = ()
    profile: str = ""
    seconds: float = 0.0
    findings: tuple[dict, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state == "READY"

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "model": self.model, "version": self.version,
                "state": self.state, "ok": self.ok, "message": self.message,
                "previous": list(self.previous), "profile": self.profile,
                "seconds": round(self.seconds, 2), "findings": list(self.findings),
                "notes": list(self.notes)}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:4])


def _satisfies(installed: str, spec: str) -> bool:
    """A minimal `>=X`, `==X`, `<X` comparison (what manifests' `requires` use)."""
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        match = re.fullmatch(r"(>=|<=|==|>|<|~=)?\s*([0-9][0-9.]*)\*?", clause)
        if not match:
            continue
        op, wanted = match.group(1) or ">=", _version_tuple(match.group(2))
        have = _version_tuple(installed)[:len(wanted)] if op in ("==", "~=") else \
            _version_tuple(installed)
        ok = {">=": have >= wanted, ">": have > wanted, "<=": have <= wanted,
              "<": have < wanted, "==": have == wanted, "~=": have >= wanted}[op]
        if not ok:
            return False
    return True


def board_findings(manifest, info: remote.BoardInfo) -> list[Finding]:
    """What the board itself says, beyond its profile: engines installed, edgepack version."""
    found = []
    engine = manifest.model.engine
    packages = _ENGINE_PACKAGES.get(engine, (engine,))
    installed = {p: v for p, v in info.engines.items() if p in packages}
    extra = "litert" if engine == "litert" else "onnx"
    if not installed:
        found.append(Finding("error", "ENGINE_NOT_INSTALLED",
                             f"the board has no {engine} engine installed "
                             f"(it has: {', '.join(info.engines) or 'none'})",
                             f"pip install 'edgepack[{extra},serve]' on the board, or deploy "
                             "with --install-service"))
    for requirement in (manifest.requires or {}).get("engines") or []:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(.*)", str(requirement))
        if not match or match.group(1) not in info.engines or not match.group(2):
            continue
        name, spec = match.group(1), match.group(2)
        if not _satisfies(info.engines[name], spec):
            found.append(Finding("error", "ENGINE_TOO_OLD",
                                 f"the bundle requires {name}{spec}; the board has "
                                 f"{name} {info.engines[name]}",
                                 f"upgrade {name} on the board (pip install -U '{name}{spec}')"))
    wanted = str((manifest.requires or {}).get("edgepack") or "")
    if wanted and info.edgepack_version != "unknown" and \
            not _satisfies(info.edgepack_version, wanted):
        found.append(Finding("error", "EDGEPACK_TOO_OLD",
                             f"the bundle requires edgepack{wanted}; the board runs "
                             f"{info.edgepack_version}", "pip install -U edgepack on the board"))
    return found


def smoke_inputs(manifest) -> list[dict] | None:
    """Zeros shaped like the bundle's inputs (dynamic dims -> 1), as V2 JSON tensors."""
    inputs = []
    for spec in manifest.inputs:
        datatype = _DATATYPES.get(spec.dtype)
        if datatype is None:
            return None
        shape = [1 if d < 0 else d for d in spec.shape]
        count = 1
        for d in shape:
            count *= d
        inputs.append({"name": spec.name, "shape": shape, "datatype": datatype,
                       "data": [False if datatype == "BOOL" else 0] * count})
    return inputs


def _refusal_message(host: str, profile: str, errors: list[Finding]) -> str:
    reasons = "; ".join(f"{f.code}: {f.message}" + (f" (fix: {f.fix})" if f.fix else "")
                        for f in errors)
    return (f"{host} ({profile}) cannot run this bundle, nothing was copied: {reasons}; "
            "--force deploys anyway")


def deploy(bundle: Path, target: SshTarget, config: DeployConfig = DeployConfig()) -> DeployResult:
    """Deploy `bundle` to one board; returns a READY result or raises a DeployError.

    Raises DeployRefused (check failed, nothing copied), NotReadyError (copied, not taken,
    rolled back), HostKeyError / DeployError (ssh or the board failed) and the runtime's
    BundleError when the bundle itself does not verify.
    """
    from edgepack.runtime import read_bundle

    start = time.monotonic()
    bundle = Path(bundle)
    read = read_bundle(bundle, trusted_key=config.trusted_key)
    manifest = read.manifest
    model = config.model or manifest.name
    if not _NAME.fullmatch(model):
        raise DeployError(f"model name {model!r} is not usable as a directory name: use "
                          "--model with letters, digits, '.', '_' and '-'")
    if config.version is not None and not _VERSION.fullmatch(config.version):
        raise DeployError(f"--version {config.version!r}: use letters, digits, '.', '_', '+', '-'")
    data_sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    host = str(target)
    notes: list[str] = []
    with SshSession(target, config.ssh) as session:
        info = remote.probe(session, config.edgepack)
        if info is None and config.install_service is not None:
            from .service import install_edgepack
            notes.append(install_edgepack(session, config.install_service, manifest))
            info = remote.probe(session, config.edgepack)
        if info is None:
            raise DeployError(f"{target.destination} has no edgepack (not on PATH, not in "
                              f"~/{remote.DEFAULT_VENV}): pass --edgepack PATH, or "
                              "--install-service to install it in a venv there")
        profile = load_profile(config.device or info.closest_profile)
        report = check_bundle(bundle, profile)
        findings = list(report.findings) + board_findings(manifest, info)
        errors = [f for f in findings if f.severity == "error"]
        as_dicts = tuple(f.to_dict() for f in findings)
        if errors and not config.force:
            raise DeployRefused(_refusal_message(target.destination, profile.name, errors),
                                as_dicts)
        if errors:
            notes.append(f"--force: deploying despite {len(errors)} check error(s)")
        model_dir = join(target.remote_repository, model)
        previous = tuple(remote.list_versions(session, model_dir))
        version = config.version or remote.next_version(list(previous))
        if version in previous:
            raise DeployError(f"{model} version {version} already exists on "
                              f"{target.destination}: pick another --version, or roll it "
                              "back first")
        remote.upload(session, bundle, model_dir, version, data_sha)
        log.info("copied %s to %s:%s/%s.edgepack", bundle, target.destination, model_dir,
                 version)
        if config.install_service is not None:
            from .service import install_service
            notes.extend(install_service(session, config.install_service, info, target))
        client = remote.ServerClient(session, config.port)
        row = remote.wait_for_state(client, model, version, config.timeout)
        problem = None
        if row.state != "READY":
            problem = f"the server reports {row.state}: {row.reason}"
        elif config.smoke:
            problem = _smoke(client, manifest, model, version)
        if problem is not None:
            remote.remove_version(session, model_dir, version)
            gone = remote.wait_until_gone(client, model, version, timeout=min(config.timeout, 30))
            raise NotReadyError(
                f"{target.destination}: {model} version {version} was not taken ({problem}); "
                f"rolled back: removed it{'' if gone else ' (the server has not rescanned yet)'}"
                f", the server keeps serving {', '.join(previous) or 'nothing'}")
    return DeployResult(host, model, version, "READY", f"{model} version {version} is READY",
                        previous, profile.name, time.monotonic() - start, as_dicts,
                        tuple(notes))


def _smoke(client: remote.ServerClient, manifest, model: str, version: str) -> str | None:
    inputs = smoke_inputs(manifest)
    if inputs is None:
        return None         # string inputs: the server's own load check is all we can do
    try:
        status, body = client.infer(model, version, inputs)
    except OSError as exc:
        return f"the smoke inference failed: {exc}"
    if status != 200:
        reason = body.get("error") if isinstance(body, dict) else body
        return f"the smoke inference answered HTTP {status}: {reason}"
    return None


def rollback(target: SshTarget, model: str, to: str | None = None,
             config: DeployConfig = DeployConfig()) -> DeployResult:
    """Take the newest version(s) of MODEL off a board so `to` (default: the one before the
    newest) serves again. Rolled-back files are kept, hidden, as ``.N.edgepack.rolled-back``.
    """
    start = time.monotonic()
    with SshSession(target, config.ssh) as session:
        model_dir = join(target.remote_repository, model)
        from edgepack.runtime.serve.repository import version_key

        versions = sorted(remote.list_versions(session, model_dir), key=version_key)
        if not versions:
            raise DeployError(f"{target.destination} has no versions of {model} in "
                              f"{model_dir}")
        if to is None:
            if len(versions) < 2:
                raise DeployError(f"{model} has only version {versions[0]} on "
                                  f"{target.destination}: nothing to roll back to")
            to = versions[-2]
        if to not in versions:
            raise DeployError(f"{model} has no version {to} on {target.destination} "
                              f"(it has {', '.join(versions)})")
        newer = [v for v in versions if version_key(v) > version_key(to)]
        for version in newer:
            remote.remove_version(session, model_dir, version, keep_as="rolled-back")
        client = remote.ServerClient(session, config.port)
        row = remote.wait_for_state(client, model, to, config.timeout)
        if row.state != "READY":
            raise NotReadyError(f"{target.destination}: removed {', '.join(newer) or 'nothing'}"
                                f", but {model} version {to} is {row.state}: {row.reason}")
    return DeployResult(str(target), model, to, "READY",
                        f"rolled back to {to}" + (f" (hid {', '.join(newer)})" if newer else ""),
                        tuple(versions), seconds=time.monotonic() - start)


def status(target: SshTarget, config: DeployConfig = DeployConfig()) -> list[remote.VersionRow]:
    """Every model version the board's server knows, with its state and reason."""
    with SshSession(target, config.ssh) as session:
        return remote.ServerClient(session, config.port).index()


__all__ = ["DeployConfig", "DeployResult", "board_findings", "deploy", "rollback",
           "smoke_inputs", "status"]
