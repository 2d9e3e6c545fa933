"""`deploy --install-service`: edgepack in a venv on the board, and a systemd unit for serve.

Idempotent: the venv is created only when the board has no edgepack; the unit file is
rewritten only when its content changes, and systemd is told to reload/restart only then
(an unchanged, running service is left alone). On a board where systemd is not running
(containers, some minimal images) the unit is still written and systemctl is skipped with
a note saying so.
"""
from __future__ import annotations

import hashlib
import logging
import shlex
from dataclasses import dataclass

from .board import DEFAULT_VENV, BoardInfo
from .errors import DeployError
from .ssh import SshSession, SshTarget

log = logging.getLogger(__name__)

UNIT_NAME = "edgepack-serve.service"


@dataclass(frozen=True)
class ServiceConfig:
    """How the board's server should run."""

    user_unit: bool = False          # systemctl --user (no root needed) instead of system
    host: str = "127.0.0.1"          # what serve listens on (0.0.0.0 for other machines)
    port: int = 8000
    poll: float = 2.0
    unit_dir: str | None = None      # [~/.config/systemd/user or /etc/systemd/system]
    pip_spec: str | None = None      # [edgepack[onnx,serve] or edgepack[litert,serve]]
    extra_args: tuple[str, ...] = ()  # more `edgepack serve` options (e.g. --trusted-key K)

    @property
    def directory(self) -> str:
        if self.unit_dir:
            return self.unit_dir
        return ".config/systemd/user" if self.user_unit else "/etc/systemd/system"


def pip_spec_for(manifest, config: ServiceConfig) -> str:
    """The extras a board needs for this bundle: the engine it names, plus serve."""
    if config.pip_spec:
        return config.pip_spec
    engine = "litert" if manifest.model.engine == "litert" else "onnx"
    return f"edgepack[{engine},serve]"


def install_edgepack(session: SshSession, config: ServiceConfig, manifest) -> str:
    """Create ~/.edgepack/venv on the board and pip-install edgepack there."""
    spec = pip_spec_for(manifest, config)
    script = (f'set -e\nV="$HOME/{DEFAULT_VENV}"\n'
              'command -v python3 >/dev/null || { echo "python3 is not installed" >&2; exit 3; }\n'
              '[ -x "$V/bin/python" ] || python3 -m venv "$V"\n'
              f'"$V/bin/python" -m pip install --quiet {shlex.quote(spec)}\n')
    result = session.run(script, check=False, timeout=1800)
    if result.returncode != 0:
        raise DeployError(f"installing {spec} on {session.target.destination} failed: "
                          f"{result.stderr.strip()[-400:]} (on Debian/Raspberry Pi OS: "
                          "`sudo apt install python3-venv`)")
    return f"installed {spec} in ~/{DEFAULT_VENV} on {session.target.destination}"


def unit_text(edgepack: str, repository: str, config: ServiceConfig,
              user: str | None = None) -> str:
    """The systemd unit running `edgepack serve REPOSITORY` (absolute paths)."""
    command = [edgepack, "serve", repository, "--host", config.host, "--port", str(config.port),
               "--poll", f"{config.poll:g}", *config.extra_args]
    lines = ["[Unit]",
             "Description=edgepack serve: KServe V2 inference for the models in " + repository,
             "After=network-online.target", "Wants=network-online.target", "",
             "[Service]", "Type=simple",
             "ExecStart=" + " ".join(_systemd_quote(c) for c in command)]
    if user and not config.user_unit:
        lines.append(f"User={user}")
    lines += ["Restart=on-failure", "RestartSec=2",
              "# SIGTERM: serve finishes the requests in flight, then exits",
              "KillSignal=SIGTERM", "TimeoutStopSec=30", "",
              "[Install]", "WantedBy=" + ("default.target" if config.user_unit
                                          else "multi-user.target"), ""]
    return "\n".join(lines)


def _systemd_quote(word: str) -> str:
    if word and all(c.isalnum() or c in "/._-:=+,@" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def install_service(session: SshSession, config: ServiceConfig, info: BoardInfo,
                    target: SshTarget) -> list[str]:
    """Write (if changed) and enable the unit; returns notes of what was done or skipped."""
    where = session.run(f"cd {shlex.quote(target.remote_repository)} && pwd && id -un",
                        timeout=30).text.split()
    repository, user = where[0], where[1] if len(where) > 1 else None
    text = unit_text(info.edgepack, repository, config, user)
    digest = hashlib.sha256(text.encode()).hexdigest()
    directory = config.directory
    unit = f"{directory.rstrip('/')}/{UNIT_NAME}"
    systemctl = "systemctl --user" if config.user_unit else "systemctl"
    sudo = "" if config.user_unit or config.unit_dir else \
        'S=""; [ "$(id -u)" = 0 ] || S="sudo -n"; '
    prefix = "$S " if sudo else ""
    script = f"""{sudo}D={shlex.quote(directory)}; U={shlex.quote(unit)}
if [ -f "$U" ] && [ "$(sha256sum "$U" | cut -d' ' -f1)" = {digest} ]; then
  echo unit-unchanged
else
  {prefix}mkdir -p "$D" && {prefix}tee "$U.tmp" >/dev/null && {prefix}mv -f "$U.tmp" "$U" || exit 4
  echo unit-written
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  {prefix}{systemctl} daemon-reload && {prefix}{systemctl} enable --quiet {UNIT_NAME} || exit 5
  if {prefix}{systemctl} is-active --quiet {UNIT_NAME}; then echo active; else echo inactive; fi
else
  echo no-systemd
fi
"""
    result = session.run(script, stdin=text.encode(), check=False, timeout=120)
    if result.returncode == 4:
        raise DeployError(f"cannot write {unit} on {session.target.destination}: "
                          f"{result.stderr.strip()[-200:]} (a system unit needs root or "
                          "password-less sudo; --user installs a user unit instead)")
    if result.returncode != 0:
        raise DeployError(f"systemctl failed on {session.target.destination}: "
                          f"{result.stderr.strip()[-300:]}")
    words = result.text.split()
    notes = [f"{unit}: {'unchanged' if 'unit-unchanged' in words else 'written'}"]
    if "no-systemd" in words:
        notes.append(f"systemd is not running on {session.target.destination}: wrote the unit, "
                     "skipped systemctl (enable it there with "
                     f"`{systemctl} enable --now {UNIT_NAME}`)")
        return notes
    changed = "unit-written" in words
    action = "restart" if changed and "active" in words else (
        "start" if "inactive" in words else None)
    if action:
        session.run(f"{sudo}{prefix}{systemctl} {action} {UNIT_NAME}", timeout=120)
        notes.append(f"{systemctl} {action} {UNIT_NAME}")
    else:
        notes.append(f"{UNIT_NAME} already running with this unit")
    return notes


__all__ = ["ServiceConfig", "UNIT_NAME", "install_edgepack", "install_service",
           "pip_spec_for", "unit_text"]
