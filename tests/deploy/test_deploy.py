"""edgepack deploy / rollback / status against a real sshd "board" running a real server.

The board is this machine reached through OpenSSH on 127.0.0.1 (tests/deploy/services.py):
its own repository directory and `edgepack serve` on a free loopback port, reached by
deploy only through the SSH connection's port forward.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import urllib.error
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.cli.main import cli
from services import EDGEPACK, make_unloadable, start_sshd, stop, wait_until


def run(*args) -> "click.testing.Result":
    return CliRunner().invoke(cli, [str(a) for a in args])


def ssh_args(sshd, board) -> list[str]:
    return ["-F", sshd.config, "--port", board.port, "--edgepack", EDGEPACK, "--timeout", 30]


def target(board) -> str:
    return f"board:{board.repo}"


def versions_on_disk(board, model: str = "adder") -> list[str]:
    directory = board.repo / model
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_deploy_makes_the_new_version_ready_and_answering(sshd, boards, adders):
    board = boards()
    first = run("deploy", adders[1.0], target(board), *ssh_args(sshd, board), "--json")
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    assert (result["state"], result["version"], result["previous"]) == ("READY", "1", [])
    assert result["profile"] == "x86_64-workstation"        # from the board's doctor --json
    assert board.infer(10.0) == [11.0] * 4

    second = run("deploy", adders[2.0], target(board), *ssh_args(sshd, board))
    assert second.exit_code == 0, second.output
    assert "adder version 2 is READY" in second.stdout
    assert board.infer(10.0) == [12.0] * 4                  # the new version answers
    assert versions_on_disk(board) == ["1.edgepack", "2.edgepack"]   # no temporary left

    status = run("status", target(board), *ssh_args(sshd, board), "--json")
    assert status.exit_code == 0, status.output
    rows = {r["version"]: r["state"] for r in json.loads(status.stdout) if r["model"] == "adder"}
    assert rows["2"] == "READY"

    back = run("rollback", target(board), "--model", "adder", *ssh_args(sshd, board))
    assert back.exit_code == 0, back.output
    assert board.infer(10.0) == [11.0] * 4
    assert versions_on_disk(board) == [".2.edgepack.rolled-back", "1.edgepack"]


def test_a_bundle_the_board_cannot_run_is_refused_before_copying(sshd, boards, adders,
                                                                  tmp_path):
    board = boards()
    # The board's own facts: its doctor reports onnxruntime 1.x, the bundle wants >= 99.
    from edgepack.runtime import read_bundle, write_bundle
    source = read_bundle(adders[1.0])
    manifest = dataclasses.replace(source.manifest, requires={"engines": ["onnxruntime>=99"],
                                                               "edgepack": ">=0.1"})
    needy = write_bundle(tmp_path / "needy.edgepack", manifest,
                         {m: source.read(m) for m in source.members})
    result = run("deploy", needy, target(board), *ssh_args(sshd, board))
    assert result.exit_code == 7, result.output
    assert "ENGINE_TOO_OLD: the bundle requires onnxruntime>=99" in result.stderr
    assert "nothing was copied" in result.stderr
    assert versions_on_disk(board) == []

    # A profile that cannot run ONNX at all (armv7l has no onnxruntime wheels).
    result = run("deploy", adders[1.0], target(board), *ssh_args(sshd, board),
                 "--device", "generic-armv7l")
    assert result.exit_code == 7, result.output
    assert "ENGINE_UNAVAILABLE" in result.stderr and "--force" in result.stderr
    assert versions_on_disk(board) == []


def test_force_deploys_despite_check_errors_and_says_so(sshd, boards, adders):
    board = boards()
    result = run("deploy", adders[1.0], target(board), *ssh_args(sshd, board),
                 "--device", "generic-armv7l", "--force", "--smoke", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["state"] == "READY" and report["profile"] == "generic-armv7l"
    assert report["notes"] == ["--force: deploying despite 1 check error(s)"]
    assert [f["code"] for f in report["findings"] if f["severity"] == "error"] == \
        ["ENGINE_UNAVAILABLE"]
    assert board.infer(0.0) == [1.0] * 4


def test_an_unloadable_bundle_is_rolled_back_while_the_old_version_keeps_answering(
        sshd, boards, adders, tmp_path):
    board = boards()
    (board.repo / "adder").mkdir()
    shutil.copy(adders[1.0], board.repo / "adder" / "1.edgepack")
    wait_until(lambda: _answers(board), 30, "version 1")
    broken = make_unloadable(tmp_path / "broken.edgepack")

    counts = {"ok": 0, "failed": 0, "wrong": 0}
    done = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 120          # bounded even if the deploy hangs
        while not done.is_set() and time.monotonic() < deadline:
            try:
                answer = board.infer(1.0)
                counts["ok" if answer == [2.0] * 4 else "wrong"] += 1
            except (urllib.error.URLError, OSError):
                counts["failed"] += 1
    thread = threading.Thread(target=client)
    thread.start()
    try:
        result = run("deploy", broken, target(board), *ssh_args(sshd, board))
    finally:
        done.set()
        thread.join(30)
    assert result.exit_code == 7, result.output
    assert "adder version 2 was not taken" in result.stderr
    assert "UNAVAILABLE: EngineError" in result.stderr       # the server's own reason
    assert "rolled back" in result.stderr
    assert counts["failed"] == 0 and counts["wrong"] == 0 and counts["ok"] > 10, counts
    assert versions_on_disk(board) == ["1.edgepack"]
    assert board.infer(5.0) == [6.0] * 4


def _answers(board) -> bool:
    try:
        return board.infer(0.0, timeout=2) == [1.0] * 4
    except (urllib.error.URLError, OSError):
        return False


def test_fleet_stops_before_the_other_boards_when_the_canary_fails(sshd, boards, adders,
                                                                   tmp_path):
    from edgepack.runtime.signing import generate_keypair
    _, public = generate_keypair()
    key = tmp_path / "release.pub"
    key.write_text(public)
    canary = boards("canary", "--trusted-key", key)     # refuses the unsigned bundle
    others = [boards("b"), boards("c")]
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# canary first\n" + "".join(
        f"board:{b.repo} port={b.port}\n" for b in [canary, *others]))
    result = run("deploy", adders[1.0], "--hosts", hosts, "-F", sshd.config,
                 "--edgepack", EDGEPACK, "--timeout", 30, "--json")
    assert result.exit_code == 7, result.output
    rows = json.loads(result.stdout)
    assert [r["state"] for r in rows] == ["ROLLED BACK", "SKIPPED", "SKIPPED"]
    assert "SignatureError" in rows[0]["message"]
    assert versions_on_disk(canary) == []               # rolled back on the canary
    assert all(versions_on_disk(b) == [] for b in others)   # never touched


@pytest.mark.slow
def test_fleet_deploys_every_board_after_a_good_canary(sshd, boards, adders, tmp_path):
    fleet = [boards("a"), boards("b"), boards("c")]
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("".join(f"board:{b.repo} port={b.port}\n" for b in fleet))
    result = run("deploy", adders[3.0], "--hosts", hosts, "-F", sshd.config,
                 "--edgepack", EDGEPACK, "--timeout", 30, "--parallel", 2, "--json")
    assert result.exit_code == 0, result.output
    assert [r["state"] for r in json.loads(result.stdout)] == ["READY"] * 3
    assert [b.infer(0.0) for b in fleet] == [[3.0] * 4] * 3


def test_a_changed_host_key_is_refused(sshd, boards, adders, tmp_path):
    board = boards()
    impostor = start_sshd(tmp_path / "impostor")        # same user key, other host key
    server, proc = impostor
    try:
        # The client trusts the first server's host key for the impostor's address.
        key_line = sshd.known_hosts.read_text().split(" ", 1)[1]
        server.known_hosts.write_text(f"[127.0.0.1]:{server.port} {key_line}")
        result = run("deploy", adders[1.0], target(board), "-F", server.config,
                     "--port", board.port, "--edgepack", EDGEPACK)
    finally:
        stop(proc)
    assert result.exit_code == 7, result.output
    assert "host key is unknown or has changed" in result.stderr
    assert "never accepts host keys silently" in result.stderr
    assert versions_on_disk(board) == []


def test_install_service_is_idempotent(sshd, boards, adders, tmp_path):
    """No systemd runs here: the unit file is checked and systemctl is skipped, saying so."""
    board = boards()
    units = tmp_path / "units"
    args = ["--install-service", "--user", "--unit-dir", units, *ssh_args(sshd, board)]
    first = run("deploy", adders[1.0], target(board), *args)
    assert first.exit_code == 0, first.output
    assert "edgepack-serve.service: written" in first.stdout
    assert "systemd is not running" in first.stdout and "skipped systemctl" in first.stdout
    unit = (units / "edgepack-serve.service").read_text()

    second = run("deploy", adders[2.0], target(board), *args)
    assert second.exit_code == 0, second.output
    assert "edgepack-serve.service: unchanged" in second.stdout
    assert sorted(p.name for p in units.iterdir()) == ["edgepack-serve.service"]
    assert (units / "edgepack-serve.service").read_text() == unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (f"ExecStart={EDGEPACK} serve {board.repo} --host 127.0.0.1 "
                          f"--port {board.port} --poll 2")
    assert "Restart=on-failure" in unit and "WantedBy=default.target" in unit


def test_unit_and_pip_spec_follow_the_bundle_and_mode(adders):
    from edgepack.devices.deploy.service import ServiceConfig, pip_spec_for, unit_text
    from edgepack.runtime import read_bundle

    manifest = read_bundle(adders[1.0]).manifest
    assert pip_spec_for(manifest, ServiceConfig()) == "edgepack[onnx,serve]"
    system = unit_text("/home/pi/.edgepack/venv/bin/edgepack", "/home/pi/models",
                       ServiceConfig(host="0.0.0.0"), user="pi")
    assert "User=pi" in system and "WantedBy=multi-user.target" in system
    assert "ExecStart=/home/pi/.edgepack/venv/bin/edgepack serve /home/pi/models " \
           "--host 0.0.0.0 --port 8000 --poll 2" in system


def test_bad_targets_and_hosts_files_are_one_clear_error(tmp_path, adders):
    result = run("deploy", adders[1.0], ":models")
    assert result.exit_code == 7 and "':models' has no host before ':'" in result.stderr
    result = run("deploy", adders[1.0], "pi@board :models")
    assert result.exit_code == 7 and "is not a board address" in result.stderr
    hosts = tmp_path / "hosts"
    hosts.write_text("board:/x colour=blue\n")
    result = run("deploy", adders[1.0], "--hosts", hosts)
    assert result.exit_code == 7 and f"{hosts}:1: unknown option 'colour=blue'" in result.stderr
    result = run("deploy", adders[1.0])
    assert result.exit_code == 2 and "give either TARGET or --hosts FILE" in result.output


def test_a_board_without_edgepack_is_named_with_the_fix(sshd, adders, tmp_path):
    result = run("deploy", adders[1.0], f"board:{tmp_path / 'models'}", "-F", sshd.config,
                 "--edgepack", tmp_path / "no" / "edgepack")
    assert result.exit_code == 7, result.output
    assert "has no edgepack" in result.stderr and "--install-service" in result.stderr
    assert not (tmp_path / "models").exists()
