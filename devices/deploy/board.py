"""One board over SSH: what it is, its model repository, and its server's index.

Everything on the board runs through plain POSIX shell and coreutils (`cat`, `sha256sum`,
`sync`, `mv`), plus the board's own `edgepack` for `doctor --json`; nothing else needs to
be installed there. The server is reached through a port forward of the SSH connection, so
no port has to be opened on the board.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DeployError
from .ssh import SshSession, join

log = logging.getLogger(__name__)

#: Where `deploy --install-service` puts edgepack when the board has none on PATH.
DEFAULT_VENV = ".edgepack/venv"
_MARK = "@@edgepack-deploy@@"
NOT_SELECTED = "not selected by the version policy"   # runtime/serve/manager.py index()


def edgepack_lookup(edgepack: str | None) -> str:
    """Shell that sets $EP to the board's edgepack (given path, PATH, or the deploy venv)."""
    if edgepack:
        return f"EP={shlex.quote(edgepack)}"
    return (f'EP=$(command -v edgepack 2>/dev/null || echo "$HOME/{DEFAULT_VENV}/bin/edgepack")')


@dataclass(frozen=True)
class BoardInfo:
    """What `edgepack doctor --json` and `edgepack --version` said on the board."""

    edgepack: str                   # absolute path of the board's edgepack
    edgepack_version: str
    closest_profile: str
    reason: str
    host: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return str(self.host.get("arch", ""))

    @property
    def engines(self) -> dict[str, str]:
        return dict(self.host.get("engines") or {})


def probe(session: SshSession, edgepack: str | None = None) -> BoardInfo | None:
    """Ask the board what it is; None when it has no edgepack installed."""
    script = (f"{edgepack_lookup(edgepack)}\n"
              'if ! [ -x "$EP" ] && ! command -v "$EP" >/dev/null 2>&1; then exit 127; fi\n'
              'command -v "$EP" 2>/dev/null || echo "$EP"\n'
              f'echo {_MARK}\n'
              # the console script's interpreter answers in a fraction of a CLI start-up
              'PY=$(head -n 1 "$(command -v "$EP" || echo "$EP")" | sed -n "s/^#!//p")\n'
              '$PY -c "from importlib.metadata import version; print(version(\'edgepack\'))" '
              '2>/dev/null || "$EP" --version\n'
              f'echo {_MARK}\n"$EP" doctor --json\n')
    result = session.run(script, check=False, timeout=60)
    if result.returncode == 127:
        return None
    if result.returncode != 0:
        raise DeployError(f"`edgepack doctor --json` failed on {session.target.destination} "
                          f"(exit {result.returncode}): {result.stderr.strip()[-300:]}")
    parts = result.text.split(_MARK)
    if len(parts) != 3:
        raise DeployError(f"unexpected output from edgepack on {session.target.destination}")
    path, version_text, doctor_text = (p.strip() for p in parts)
    try:
        doctor = json.loads(doctor_text)
    except ValueError:
        raise DeployError(f"`edgepack doctor --json` on {session.target.destination} did not "
                          f"print JSON: {doctor_text[:200]!r}") from None
    match = re.search(r"(\d+(?:\.\d+)+\S*)", version_text)
    return BoardInfo(edgepack=path.splitlines()[-1] if path else "edgepack",
                     edgepack_version=match.group(1) if match else "unknown",
                     closest_profile=str(doctor.get("closest_profile", "")),
                     reason=str(doctor.get("reason", "")), host=dict(doctor.get("host") or {}))


# --- the repository on the board ------------------------------------------------------------
def list_versions(session: SshSession, model_dir: str) -> list[str]:
    """Version names present in REPO/MODEL (files N.edgepack or directories N)."""
    result = session.run(f"[ -d {shlex.quote(model_dir)} ] || exit 0\n"
                         f"cd {shlex.quote(model_dir)} && for f in *; do "
                         '[ -e "$f" ] && echo "$f"; done', timeout=30)
    versions = []
    for name in result.text.splitlines():
        name = name.strip()
        if not name or name.startswith("."):
            continue
        versions.append(name[:-len(".edgepack")] if name.endswith(".edgepack") else name)
    return versions


def next_version(versions: list[str]) -> str:
    """One more than the highest integer version (1 for an empty model directory)."""
    numbers = [int(v) for v in versions if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def upload(session: SshSession, local: Path, model_dir: str, version: str, sha256: str) -> str:
    """Copy `local` to MODEL_DIR/VERSION.edgepack atomically; returns the remote path.

    The bytes go to a dot-prefixed name (the server ignores those), are fsynced, their
    sha256 is checked on the board, and only then renamed into place in one step.
    """
    final = f"{version}.edgepack"
    part = f".{version}.edgepack.part"
    q_dir = shlex.quote(model_dir)
    session.run(f"mkdir -p {q_dir} && cd {q_dir} || exit 1\n"
                f"if [ -e {final} ] || [ -e {version} ]; then echo 'version {version} already "
                f"exists in {model_dir}' >&2; exit 17; fi\ncat > {part}", stdin=local,
                timeout=max(120.0, local.stat().st_size / 200_000))
    script = f"""cd {q_dir} || exit 1
sync -- {part} 2>/dev/null || sync
sum=$(sha256sum {part} | cut -d' ' -f1)
if [ "$sum" != {sha256} ]; then rm -f {part}; echo "checksum on the board is $sum, expected {sha256}" >&2; exit 3; fi
if [ -e {final} ]; then rm -f {part}; echo "version {version} appeared meanwhile" >&2; exit 17; fi
mv -f {part} {final}
sync -- . 2>/dev/null || sync
"""
    session.run(script, timeout=120)
    return join(model_dir, final)


def remove_version(session: SshSession, model_dir: str, version: str,
                   keep_as: str | None = None) -> None:
    """Take a version out of the repository: delete it, or rename it to a hidden name."""
    q_dir = shlex.quote(model_dir)
    names = f"{shlex.quote(version + '.edgepack')} {shlex.quote(version)}"
    if keep_as:
        script = (f"cd {q_dir} && for f in {names}; do [ -e \"$f\" ] && "
                  f"mv -f \"$f\" \".$f.{keep_as}\"; done; sync -- . 2>/dev/null || sync; true")
    else:
        script = f"cd {q_dir} && rm -rf -- {names}; sync -- . 2>/dev/null || sync; true"
    session.run(script, timeout=60)


# --- the server, through the tunnel ---------------------------------------------------------
@dataclass(frozen=True)
class VersionRow:
    model: str
    version: str
    state: str
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version, "state": self.state,
                "reason": self.reason}


class ServerClient:
    """HTTP calls to the board's `edgepack serve` through a forwarded local port."""

    def __init__(self, session: SshSession, remote_port: int, timeout: float = 10.0):
        self.session = session
        self.remote_port = remote_port
        self.timeout = timeout
        self._local: int | None = None

    @property
    def url(self) -> str:
        if self._local is None:
            self._local = self.session.forward(self.remote_port)
        return f"http://127.0.0.1:{self._local}"

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            try:
                payload = json.loads(err.read() or b"null")
            except ValueError:
                payload = None
            return err.code, payload

    def index(self) -> list[VersionRow]:
        """The repository index; raises DeployError when the server does not answer."""
        try:
            status, rows = self._call("GET", "/v2/repository/index")
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise DeployError(f"the edgepack server on {self.session.target.destination} port "
                              f"{self.remote_port} does not answer ({getattr(err, 'reason', err)}): "
                              "is `edgepack serve` running there? (--install-service sets it "
                              "up as a systemd service)") from None
        if status != 200 or not isinstance(rows, list):
            raise DeployError(f"the server on {self.session.target.destination} answered "
                              f"/v2/repository/index with HTTP {status}")
        return [VersionRow(str(r.get("name")), str(r.get("version")), str(r.get("state")),
                           str(r.get("reason") or "")) for r in rows if isinstance(r, dict)]

    def infer(self, model: str, version: str, inputs: list[dict]) -> tuple[int, Any]:
        return self._call("POST", f"/v2/models/{model}/versions/{version}/infer",
                          {"inputs": inputs})


def wait_for_state(client: ServerClient, model: str, version: str, timeout: float,
                   poll: float = 0.2) -> VersionRow:
    """Poll the index until MODEL/VERSION is READY or UNAVAILABLE, or `timeout` passes.

    Returns the last row seen (state "MISSING" when the server never listed it, "NO SERVER"
    when it never answered).
    """
    deadline = time.monotonic() + timeout
    last = VersionRow(model, version, "MISSING", f"the server did not list it within "
                                                 f"{timeout:.0f} s")
    while True:
        try:
            rows = client.index()
        except DeployError as exc:
            last = VersionRow(model, version, "NO SERVER", str(exc))
            rows = []
        for row in rows:
            if row.model == model and row.version == version:
                last = row
                # "not selected by the version policy" is what a server says between a
                # file change and its next scan: only a refusal with a reason is final.
                if row.state == "READY" or (row.state == "UNAVAILABLE"
                                            and row.reason != NOT_SELECTED):
                    return row
        if time.monotonic() >= deadline:
            return last
        time.sleep(poll)


def wait_until_gone(client: ServerClient, model: str, version: str, timeout: float,
                    poll: float = 0.2) -> bool:
    """After a rollback: wait until the server no longer lists MODEL/VERSION."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not any(r.model == model and r.version == version for r in client.index()):
                return True
        except DeployError:
            return False
        time.sleep(poll)
    return False


__all__ = ["BoardInfo", "ServerClient", "VersionRow", "list_versions", "next_version",
           "probe", "remove_version", "upload", "wait_for_state", "wait_until_gone"]
