"""Every command and snippet in README.md runs, against what the quickstart produces.

The README's fenced ```bash/```sh/```python blocks are extracted in order and run in a
directory where `examples/quickstart.py --out out/quickstart` has run, with the venv's
`edgepack` first on PATH. A directive in an HTML comment on the line(s) just above a block
changes what happens to it:

    <!-- readme-test: skip REASON -->            not run here (the reason is required)
    <!-- readme-test: covered-by tests/x.py -->  run by that test (which must exist and
                                                 name README.md); not run here
    <!-- readme-test: serve BUNDLE -->           `edgepack serve BUNDLE` runs on a free
                                                 loopback port while the block runs, and
                                                 `pi:8000` in the block points at it
    <!-- readme-test: expect TEXT -->            the block's stdout must contain TEXT
                                                 (repeatable)

Blocks in other languages (ini, json, text) are configuration or output, not commands.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RUNNABLE = {"bash", "sh", "shell", "python"}
_DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(\w[\w-]*)\s*(.*?)\s*-->")

pytestmark = pytest.mark.slow


@dataclass
class Block:
    line: int
    lang: str
    code: str
    directives: list[tuple[str, str]] = field(default_factory=list)

    def directive(self, name: str) -> str | None:
        return next((arg for key, arg in self.directives if key == name), None)

    @property
    def id(self) -> str:
        first = next((ln for ln in self.code.splitlines() if ln.strip()), "")
        return f"L{self.line}-{self.lang}-{re.sub(r'[^A-Za-z0-9]+', '_', first)[:40]}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of `text`, each with the directives just above it."""
    blocks, pending, lines = [], [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        found = _DIRECTIVE.findall(line)
        if found:
            pending.extend(found)
        elif line.startswith("```"):
            lang = line[3:].strip().split()[0] if line[3:].strip() else ""
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(start, lang, "\n".join(body) + "\n", pending))
            pending = []
        elif line.strip():
            pending = []  # a directive applies only to the block right below it
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_every_runnable_block_is_run_or_says_why_not():
    for block in BLOCKS:
        if block.lang not in RUNNABLE:
            continue
        skip = block.directive("skip")
        assert skip is None or skip.strip(), f"README line {block.line}: skip needs a reason"
        covered = block.directive("covered-by")
        if covered:
            test = ROOT / covered
            assert test.is_file(), f"README line {block.line}: {covered} does not exist"
            assert "README" in test.read_text(encoding="utf-8"), (
                f"README line {block.line}: {covered} does not run README commands")


def test_directives_parse():
    blocks = readme_blocks("<!-- readme-test: expect a b -->\n<!-- readme-test: skip x -->\n"
                           "```bash\necho a b\n```\ntext\n<!-- readme-test: skip y -->\n\n"
                           "words\n```python\nprint(1)\n```\n")
    assert [(b.lang, b.directives) for b in blocks] == [
        ("bash", [("expect", "a b"), ("skip", "x")]), ("python", [])]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory where the quickstart has run (out/quickstart/...)."""
    work = tmp_path_factory.mktemp("readme")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", "out/quickstart"],
        cwd=work, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return work


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["EDGEPACK_REPO"] = str(ROOT)
    env.pop("EDGEPACK_TRUSTED_KEY", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, bundle: str, cwd: Path):
        self.port = _free_port()
        edgepack = shutil.which("edgepack", path=_env()["PATH"])
        self.process = subprocess.Popen(
            [edgepack, "serve", bundle, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"edgepack serve exited: {self.process.stderr.read()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("edgepack serve did not become ready in 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _run(block: Block, cwd: Path) -> subprocess.CompletedProcess:
    code = block.code
    server = None
    bundle = block.directive("serve")
    if bundle:
        server = _Server(bundle, cwd)
        code = code.replace("pi:8000", f"127.0.0.1:{server.port}")
    try:
        if block.lang == "python":
            script = cwd / f"readme_L{block.line}.py"
            script.write_text(code, encoding="utf-8")
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-euo", "pipefail", "-c", code]
        return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
    finally:
        if server is not None:
            server.stop()


RUN_HERE = [b for b in BLOCKS if b.lang in RUNNABLE
            and b.directive("skip") is None and b.directive("covered-by") is None]


@pytest.mark.parametrize("block", RUN_HERE, ids=[b.id for b in RUN_HERE])
def test_readme_block_runs(block: Block, workdir: Path):
    done = _run(block, workdir)
    assert done.returncode == 0, (
        f"README line {block.line} failed (exit {done.returncode}):\n{block.code}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    for key, text in block.directives:
        if key == "expect":
            assert text in done.stdout, (
                f"README line {block.line}: {text!r} not in its output:\n{done.stdout[-3000:]}")
