"""The system OpenSSH client, driven through subprocess.

Shelling out to `ssh` (as git and Ansible do) means the user's ~/.ssh/config, agent, jump
hosts and known_hosts apply unchanged. Host keys are never accepted silently: every call runs
with BatchMode=yes, so an unknown or changed host key fails instead of prompting, and the
failure is reported as a `HostKeyError` naming the fix.

One `SshSession` keeps one master connection (ControlMaster, socket in a private temp dir)
for all the commands, uploads and port forwards of a deploy, so the key exchange happens once.
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import DeployError, HostKeyError

log = logging.getLogger(__name__)

_HOST_KEY_SIGNS = ("host key verification failed", "remote host identification has changed",
                   "no ed25519 host key is known", "host key for", "no matching host key")


@dataclass(frozen=True)
class SshTarget:
    """``[user@]host[:repository]`` as typed on the command line."""

    destination: str           # what ssh is given: "pi@board" or an ssh_config alias
    repository: str = "models"

    @classmethod
    def parse(cls, text: str, default_repository: str = "models") -> "SshTarget":
        text = text.strip()
        if not text or text.startswith("-") or any(c.isspace() for c in text):
            raise DeployError(f"{text!r} is not a board address: use [USER@]HOST[:REPOSITORY], "
                              "e.g. pi@raspberrypi.local:models")
        destination, _, repository = text.partition(":")
        if not destination:
            raise DeployError(f"{text!r} has no host before ':'")
        return cls(destination, repository or default_repository)

    @property
    def remote_repository(self) -> str:
        """The repository path as the remote shell should see it (~/ made relative)."""
        repo = self.repository
        if repo in ("~", "~/"):
            return "."
        return repo[2:] if repo.startswith("~/") else repo

    def __str__(self) -> str:
        return f"{self.destination}:{self.repository}"


@dataclass(frozen=True)
class SshOptions:
    """How to call ssh: a config file (-F), extra -o options, the binaries, timeouts."""

    config_file: str | None = None
    options: tuple[str, ...] = ()          # "Key=Value" pairs passed as -o
    ssh: str = "ssh"
    connect_timeout: float = 15.0
    command_timeout: float = 120.0

    def base_args(self) -> list[str]:
        args = [self.ssh]
        if self.config_file:
            args += ["-F", self.config_file]
        for option in self.options:
            args += ["-o", option]
        args += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}"]
        return args


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def _ssh_failure(target: str, stderr: str) -> DeployError:
    """Turn ssh's own exit-255 stderr into one clear error."""
    lowered = stderr.lower()
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    if any(sign in lowered for sign in _HOST_KEY_SIGNS):
        return HostKeyError(
            f"ssh refused {target}: its host key is unknown or has changed ({last}); edgepack "
            "never accepts host keys silently: check the key with the board's owner, then add "
            "it to known_hosts (`ssh-keyscan HOST >> ~/.ssh/known_hosts` after checking its "
            "fingerprint, or `ssh-keygen -R HOST` if the board was reinstalled)")
    if "permission denied" in lowered:
        return DeployError(f"ssh could not log in to {target} ({last}): load your key into "
                           "the agent (ssh-add) or set IdentityFile in ~/.ssh/config; "
                           "deploy never prompts for passwords")
    return DeployError(f"ssh could not reach {target}: {last}")


class SshSession:
    """A master connection to one board; run commands, upload files, forward ports."""

    def __init__(self, target: SshTarget, options: SshOptions = SshOptions()):
        self.target = target
        self.options = options
        self._dir: str | None = None
        self._master: subprocess.Popen | None = None
        self._forwards: list[str] = []

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def _socket(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "master.sock")

    def _mux_args(self) -> list[str]:
        return self.options.base_args() + ["-S", self._socket, "-o", "ControlMaster=no"]

    def _control(self, command: str, *extra: str) -> list[str]:
        return self.options.base_args() + ["-S", self._socket, "-O", command, *extra,
                                           self.target.destination]

    def open(self) -> "SshSession":
        """Connect (raises HostKeyError / DeployError with ssh's reason)."""
        if shutil.which(self.options.ssh) is None:
            raise DeployError(f"the OpenSSH client '{self.options.ssh}' is not installed: "
                              "install openssh-client")
        # A short private directory: socket paths are limited to ~100 bytes.
        self._dir = tempfile.mkdtemp(prefix="ep-ssh-")
        log_path = os.path.join(self._dir, "master.log")
        args = self.options.base_args() + ["-M", "-N", "-S", self._socket,
                                           "-o", "ControlPersist=no",
                                           "-E", log_path, self.target.destination]
        log.debug("ssh master: %s", shlex.join(args))
        self._master = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.options.connect_timeout + 5
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                message = Path(log_path).read_text(errors="replace") \
                    if os.path.exists(log_path) else ""
                self.close()
                raise _ssh_failure(self.target.destination, message)
            check = subprocess.run(self._control("check"),
                                   capture_output=True, timeout=10)
            if check.returncode == 0:
                return self
            time.sleep(0.05)
        self.close()
        raise DeployError(f"ssh to {self.target.destination} did not connect within "
                          f"{self.options.connect_timeout:.0f} s")

    def close(self) -> None:
        """Stop the forwards and the master connection; remove the socket directory."""
        if self._master is not None:
            if self._master.poll() is None:
                subprocess.run(self._control("exit"),
                               capture_output=True, timeout=10)
                try:
                    self._master.wait(5)
                except subprocess.TimeoutExpired:
                    self._master.terminate()
                    self._master.wait(5)
            self._master = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "SshSession":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- commands -------------------------------------------------------------------------
    def run(self, script: str, *, stdin: bytes | Path | None = None,
            timeout: float | None = None, check: bool = True) -> CommandResult:
        """Run `script` with the board's sh; returns its output.

        Exit 255 is ssh's own failure (connection lost) and always raises; any other non-zero
        status raises DeployError with the script's stderr when `check`.
        """
        args = self._mux_args() + [self.target.destination, "--", "sh", "-c",
                                   shlex.quote(script)]
        timeout = timeout or self.options.command_timeout
        log.debug("on %s: %s", self.target.destination, script)
        try:
            if isinstance(stdin, Path):
                with open(stdin, "rb") as source:
                    proc = subprocess.run(args, stdin=source, capture_output=True,
                                          timeout=timeout)
            else:
                proc = subprocess.run(args, input=stdin or b"", capture_output=True,
                                      timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"a command on {self.target.destination} did not finish within "
                              f"{timeout:.0f} s") from None
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == 255:
            raise _ssh_failure(self.target.destination, stderr)
        if check and proc.returncode != 0:
            last = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
            raise DeployError(f"on {self.target.destination}: command failed with exit "
                              f"{proc.returncode}: {last}")
        return CommandResult(proc.returncode, proc.stdout, stderr)

    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> int:
        """Forward a free local loopback port to `remote_host:remote_port` on the board."""
        last = ""
        for _ in range(3):      # the free port may be taken between choosing and binding it
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                local = s.getsockname()[1]
            spec = f"127.0.0.1:{local}:{remote_host}:{remote_port}"
            proc = subprocess.run(self._control("forward", "-L", spec),
                                  capture_output=True, timeout=10)
            if proc.returncode == 0:
                self._forwards.append(spec)
                return local
            last = proc.stderr.decode("utf-8", "replace").strip()
        raise DeployError(f"could not forward a local port to {remote_host}:{remote_port} on "
                          f"{self.target.destination}: {last}")


def quote(path: str) -> str:
    """Shell-quote a remote path (relative paths are relative to the login directory)."""
    return shlex.quote(path)


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts if p)


__all__ = ["CommandResult", "SshOptions", "SshSession", "SshTarget", "quote", "join"]
