"""Real services for the deploy tests: OpenSSH's sshd and the reference OCI registry.

Imported by name (`from services import ...`), not as a conftest, so the names never collide
with other test folders. Every service binds 127.0.0.1 on a free port, has a bounded
readiness wait, and is stopped by the fixture that started it.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SSHD = "/usr/sbin/sshd"
REGISTRY = "/usr/bin/docker-registry"
EDGEPACK = str(Path(sys.executable).with_name("edgepack"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None,
               interval: float = 0.05):
    """Call `check` until it returns a truthy value; fail after `timeout` s or if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


# --- sshd ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    home: Path                 # where the client-side files live
    config: Path               # ssh -F file: host alias "board" + identity + known_hosts
    known_hosts: Path
    host_key_pub: Path

    @property
    def ssh_options(self) -> tuple[str, ...]:
        return ("-F", str(self.config))


def start_sshd(root: Path) -> tuple[SshServer, subprocess.Popen]:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    host_key, user_key = root / "host_ed25519", root / "id_ed25519"
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
    authorized = root / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    os.chmod(authorized, 0o600)
    port = free_port()
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True,
                                                    text=True).stdout.strip()
    sshd_config = root / "sshd_config"
    sshd_config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {authorized}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
PermitUserEnvironment no
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    known_hosts = root / "known_hosts"
    host_pub = host_key.with_suffix(".pub")
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub.read_text().split(' ', 2)[0]} "
                           f"{host_pub.read_text().split()[1]}\n")
    client_config = root / "ssh_config"
    client_config.write_text(f"""\
Host board
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {user_key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    LogLevel ERROR
""")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # sshd started by root needs its (empty) privilege-separation directory; Debian's
        # service unit creates it at boot, a container without systemd never does.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(sshd_config)],
                            stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "wb"))
    server = SshServer(port, user, root, client_config, known_hosts, host_pub)

    def ready() -> bool:
        result = subprocess.run(["ssh", "-F", str(client_config), "board", "true"],
                                capture_output=True, timeout=15)
        return result.returncode == 0
    try:
        wait_until(lambda: port_open(port), 10, "sshd", proc)
        wait_until(ready, 15, "sshd login", proc, interval=0.2)
    except Exception:
        stop(proc)
        raise
    return server, proc


# --- the reference OCI registry -------------------------------------------------------------
def start_registry(root: Path, htpasswd: Path | None = None
                   ) -> tuple[str, Path, subprocess.Popen]:
    """Returns (address host:port, storage directory, process); `htpasswd` turns on logins."""
    root.mkdir(parents=True, exist_ok=True)
    auth = f"auth:\n  htpasswd:\n    realm: edgepack-test\n    path: {htpasswd}\n" \
        if htpasswd else ""
    port, debug_port = free_port(), free_port()
    storage = root / "storage"
    config = root / "config.yml"
    config.write_text(f"""\
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  debug:
    addr: 127.0.0.1:{debug_port}
{auth}""")
    proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(root / "registry.log", "wb"))

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as resp:
                return resp.status == 200
        except urllib.error.HTTPError as err:   # 401: up, and asking for a login
            return err.code == 401
        except (OSError, urllib.error.URLError):
            return False
    try:
        wait_until(ready, 15, "registry", proc)
    except Exception:
        stop(proc)
        raise
    return f"127.0.0.1:{port}", storage, proc


# --- tiny bundles -----------------------------------------------------------------------------
def adder_onnx(offset: float) -> bytes:
    """y = x + offset for x float32 [N, 4]: the answer says which version replied."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    off = numpy_helper.from_array(np.full((1, 4), offset, np.float32), "off")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "off"], ["y"])], "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [off])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def make_adder(path: Path, offset: float, version: str = "1.0.0", name: str = "adder") -> Path:
    from edgepack.runtime import pack_bundle

    path.parent.mkdir(parents=True, exist_ok=True)
    return pack_bundle(path, adder_onnx(offset), name=name, version=version)


def make_unloadable(path: Path) -> Path:
    """A bundle whose checksums are right but whose model no engine can open."""
    from edgepack.runtime import TensorSpec, pack_bundle

    path.parent.mkdir(parents=True, exist_ok=True)
    return pack_bundle(path, b"\x08\x07 this is not an onnx graph" * 8, name="adder",
                       version="9.0.0", engine="onnxruntime",
                       inputs=[TensorSpec("x", (-1, 4), "float32")],
                       outputs=[TensorSpec("y", (-1, 4), "float32")])


# --- a board: a repository and a real `edgepack serve` ---------------------------------------
@dataclass
class Board:
    repo: Path
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def infer(self, value: float = 0.0, timeout: float = 10) -> list[float]:
        import json
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                       "data": [value] * 4}]}).encode()
        req = urllib.request.Request(f"{self.url}/v2/models/adder/infer", data=body,
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())["outputs"][0]["data"]


def start_board(repo: Path, *extra: str) -> Board:
    repo.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([EDGEPACK, "serve", str(repo), "--port", str(port), "--poll", "0.2",
                             "--workers", "2", "--threads", "1", "--quiet", *extra],
                            stdout=subprocess.DEVNULL,
                            stderr=open(repo.parent / f"{repo.name}-serve.log", "wb"))
    try:
        wait_until(lambda: port_open(port), 30, "edgepack serve", proc, interval=0.1)
    except Exception:
        stop(proc)
        raise
    return Board(repo, port, proc)
