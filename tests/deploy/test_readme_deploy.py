"""The README's "Deploying" commands, run as written against a real sshd board and registry.

README.md's blocks under "## Deploying" are extracted and run in a temporary directory
holding `digits.edgepack` (a tiny adder bundle named digits) and `boards.txt`. What this
test changes, and only that: `pi@raspberrypi.local:models` becomes the sshd fixture's board,
`registry.local:5000` the registry fixture's address, and deploy/status/rollback get the
fixture's `-F ssh_config --port N --edgepack PATH` (and `--unit-dir` so no real systemd
directory is written). `serve --pull` runs until the pulled version is on disk.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.cli.main import cli
from services import EDGEPACK, free_port, make_adder, stop, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"


def deploying_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Deploying", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        commands += [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    return commands


@pytest.mark.slow
def test_readme_deploying_commands_run(sshd, registry, boards, tmp_path, monkeypatch):
    address, _ = registry
    board = boards()
    fleet = [boards("f1"), boards("f2")]
    monkeypatch.chdir(tmp_path)
    make_adder(tmp_path / "digits.edgepack", 1.0, name="digits")
    (board.repo / "digits").mkdir()
    shutil.copy(tmp_path / "digits.edgepack", board.repo / "digits" / "1.edgepack")
    (tmp_path / "boards.txt").write_text("".join(f"board:{b.repo} port={b.port}\n"
                                                 for b in fleet))
    commands = deploying_commands()
    assert [c.split()[1] for c in commands] == ["deploy", "status", "rollback", "deploy",
                                                "push", "pull", "serve", "kserve"]
    outputs = []
    for command in commands:
        words = [w.replace("pi@raspberrypi.local:models", f"board:{board.repo}")
                  .replace("registry.local:5000", address) for w in shlex.split(command)]
        assert words[0] == "edgepack"
        if words[1] in ("deploy", "status", "rollback"):
            words[2:2] = ["-F", str(sshd.config), "--edgepack", EDGEPACK, "--timeout", "30"]
            if "--hosts" not in words:
                words[2:2] = ["--port", str(board.port)]
            if "--install-service" in words:
                words += ["--unit-dir", str(tmp_path / "units")]
        if words[1] == "serve":
            outputs.append(_serve_pull(words, tmp_path))
            continue
        result = CliRunner().invoke(cli, words[1:])
        assert result.exit_code == 0, (command, result.output)
        outputs.append(result.stdout)
    deploy, status, rollback, fleet_json, push, pull, serve, kserve = outputs
    assert "digits version 2 is READY" in deploy
    assert "systemd is not running" in deploy
    assert re.search(r"digits\s+2\s+READY", status)
    assert "rolled back to 1" in rollback
    assert [r["state"] for r in json.loads(fleet_json)] == ["READY", "READY"]
    assert "digest: sha256:" in push and "verified" in pull
    assert (tmp_path / "pulled.edgepack").read_bytes() == (tmp_path / "digits.edgepack").read_bytes()
    assert serve == "pulled"
    assert "wrote digits-kserve.yaml" in kserve and (tmp_path / "digits-kserve.yaml").exists()


def _serve_pull(words: list[str], tmp_path: Path) -> str:
    (tmp_path / "models").mkdir(exist_ok=True)
    words = words + ["--port", str(free_port()), "--quiet"]
    pulled = tmp_path / "models" / "digits" / "1.edgepack"
    log = open(tmp_path / "serve-pull.log", "wb")
    proc = subprocess.Popen([EDGEPACK, *words[1:]], stdout=log, stderr=log)
    try:
        wait_until(pulled.exists, 30, "serve --pull's first pull", proc)
    finally:
        stop(proc)
        log.close()
    return "pulled"
