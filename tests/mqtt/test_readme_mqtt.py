"""The README.md MQTT section runs as written: the bridge command, the mosquitto_pub/
mosquitto_sub example, the Python snippet and the systemd unit's ExecStart, against the
fixture broker (the README's port 1883, quickstart bundle and photo substituted)."""
from __future__ import annotations

import io
import json
import os
import queue
import threading
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mqtt_helpers import make_bundle

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## IoT: answering MQTT messages"
BUNDLE = "out/quickstart/digits-int8.edgepack"
PHOTO = "out/quickstart/digit-0-label-7.png"


def section_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], flags=re.S)


@pytest.fixture()
def readme(tmp_path, broker):
    """The README's blocks with the fixture broker, a tiny bundle and a photo swapped in."""
    from PIL import Image
    bundle = make_bundle(tmp_path / "conv.edgepack")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(photo)
    venv_bin = Path(sys.executable).parent

    def substitute(code: str) -> str:
        return (code.replace(BUNDLE, str(bundle)).replace(PHOTO, str(photo))
                .replace("mqtt://127.0.0.1:1883", f"mqtt://127.0.0.1:{broker.port}")
                .replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {broker.port}")
                .replace("/opt/edgepack/.venv/bin/", f"{venv_bin}/")
                .replace("/opt/edgepack/models", str(tmp_path / "models")))
    blocks = [(lang, substitute(code)) for lang, code in section_blocks()]
    (tmp_path / "models" / "conv").mkdir(parents=True)
    make_bundle(tmp_path / "models" / "conv" / "1.edgepack")
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    return blocks, env, bundle, photo


def _start(command: str, env: dict, shell: bool = True) -> subprocess.Popen:
    proc = subprocess.Popen(command if shell else shlex.split(command), shell=shell, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 90     # start-up imports ONNX Runtime; slow under load
    lines_in: queue.Queue = queue.Queue()
    err: list[str] = []      # both pipes read by threads: they never fill up
    threading.Thread(target=lambda: [lines_in.put(x) for x in iter(proc.stdout.readline, "")]
                     + [lines_in.put("")], daemon=True).start()
    threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")),
                     daemon=True).start()
    lines = []
    while time.monotonic() < deadline:
        try:     # a reader thread: never block on a child that prints nothing
            line = lines_in.get(timeout=1.0)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if not line:
            break
        lines.append(line)
        if line.startswith("bridging"):
            return proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    raise AssertionError(f"the bridge did not start: {lines} {''.join(err)[-2000:]}")


def _stop(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return proc.returncode


def _pub_sub(block: str, env: dict, model: str = "conv") -> dict:
    out = subprocess.run(["bash", "-c", block], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out
    doc = json.loads(lines[0])
    assert doc["model"] == model and doc["topic"] == "cameras/door/frame"
    return doc


def test_readme_mqtt_commands_run(readme, image_model):
    from mqtt_helpers import expected
    blocks, env, bundle, photo = readme
    langs = [lang for lang, _ in blocks]
    assert langs == ["bash", "bash", "json", "python", "ini"], langs
    command, pub_sub, sample, snippet, unit = (code for _, code in blocks)
    assert '"label":"7"' in sample and '"topic":"cameras/door/frame"' in sample

    bridge = _start("exec " + command.replace("\\\n", " "), env)   # the shell becomes it
    try:
        doc = _pub_sub(pub_sub, env)
    finally:
        assert _stop(bridge) == 0
    assert doc["result"] == expected(image_model, photo.read_bytes())

    out = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == doc["result"]

    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines()
                      if line.startswith("ExecStart="))
    service = _start(exec_start, env, shell=False)    # systemd splits words, no shell
    try:
        at_qos0 = _pub_sub(pub_sub, env)
    finally:
        assert _stop(service) == 0
    assert at_qos0["result"] == doc["result"] and at_qos0["mid"] == 0
