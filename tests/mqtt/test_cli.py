"""`edgepack mqtt` and `edgepack serve --mqtt-*` as processes against a real broker."""
from __future__ import annotations

import json
import os
import queue
import threading
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mqtt_helpers import jpeg_bytes, make_bundle

EDGEPACK = [sys.executable, "-m", "edgepack.cli.main"]


def _start(args: list[str], marker: str, timeout: float = 90.0):
    proc = subprocess.Popen(EDGEPACK + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines_in: queue.Queue = queue.Queue()
    proc.lines_in, proc.err_lines = lines_in, []     # read by threads: pipes never fill up
    proc.readers = [
        threading.Thread(target=lambda: [lines_in.put(x) for x in iter(proc.stdout.readline, "")]
                         + [lines_in.put("")], daemon=True),
        threading.Thread(target=lambda: proc.err_lines.extend(iter(proc.stderr.readline, "")),
                         daemon=True)]
    for reader in proc.readers:
        reader.start()
    lines = []
    deadline = time.monotonic() + timeout
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
        if marker in line:
            return proc, lines
    proc.kill()
    proc.wait(timeout=30)
    for reader in proc.readers:      # both pipes read to their end (bounded)
        reader.join(timeout=10)
    raise AssertionError(f"no {marker!r} line: stdout={lines} "
                         f"stderr={''.join(proc.err_lines)[-3000:]}")


def _stop(proc) -> tuple[int, str, str]:
    """SIGTERM, wait (bounded), and return (exit code, rest of stdout, stderr)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    for reader in proc.readers:      # the process has exited: the pipes end (bounded)
        reader.join(timeout=10)
    out = []
    while True:
        try:
            line = proc.lines_in.get(timeout=10)
        except queue.Empty:
            break
        if not line:
            break
        out.append(line)
    return proc.returncode, "".join(out), "".join(proc.err_lines)


def test_mqtt_command_answers_and_stops_on_sigterm(broker, image_bundle, clients, topic):
    sub = clients(broker).subscribe(f"{topic}/cam/+/result")
    proc, _ = _start(["mqtt", str(image_bundle), "--broker", broker.url,
                      "--subscribe", f"{topic}/cam/+/frame",
                      "--publish", f"{topic}/cam/{{1}}/result", "--poll", "0"], "bridging")
    try:
        clients(broker).publish(f"{topic}/cam/door/frame", jpeg_bytes(1))
        got = sub.wait_for(1, timeout=20)
    finally:
        code, out, err = _stop(proc)
    assert len(got) == 1 and json.loads(got[0].payload)["model"] == "conv"
    assert got[0].topic == f"{topic}/cam/door/result"
    assert code == 0, err
    assert f"{topic}/cam/+/frame: 1 received, 1 answered, 0 errors, 0 dropped" in out


def test_mqtt_command_wrong_password_exit_10(secure_broker, image_bundle, topic):
    proc = subprocess.run(EDGEPACK + ["mqtt", str(image_bundle), "--broker", secure_broker.url,
                                      "--ca-file", str(secure_broker.ca_file),
                                      "--username", "camera", "--password", "nope",
                                      "--subscribe", f"{topic}/in", "--publish", f"{topic}/out"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 10, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refused the connection" in errors[0]
    assert "Traceback" not in proc.stderr


def test_mqtt_command_option_errors(image_bundle):
    proc = subprocess.run(EDGEPACK + ["mqtt", str(image_bundle), "--broker", "mqtt://127.0.0.1:1",
                                      "--subscribe", "a/+", "--publish", "b/{2}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 10
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: publish topic 'b/{2}' uses {2} but the subscription has 1 wildcard(s)")
    proc = subprocess.run(EDGEPACK + ["mqtt", str(image_bundle), "--subscribe", "a"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 10 and "--broker mqtt://HOST:1883" in proc.stderr


@pytest.mark.slow
def test_serve_with_mqtt_one_repository_one_metrics(broker, clients, topic, tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "conv").mkdir(parents=True)
    make_bundle(repo / "conv" / "1.edgepack")
    sub = clients(broker).subscribe(f"{topic}/out")
    proc, lines = _start(["serve", str(repo), "--port", "0", "--poll", "0.2",
                          "--mqtt-broker", broker.url, "--mqtt-subscribe", f"{topic}/in",
                          "--mqtt-publish", f"{topic}/out"], "answering MQTT")
    try:
        url = next(l.split(" at ")[1].split("/v2")[0] for l in lines if l.startswith("serving"))
        pub = clients(broker)
        pub.publish(f"{topic}/in", jpeg_bytes(1))
        assert len(sub.wait_for(1, timeout=20)) == 1
        # Hot swap: a new version copied into the repository answers MQTT too.
        staged = make_bundle(tmp_path / ".2.tmp", seed=3, version="2")
        staged.rename(repo / "conv" / "2.edgepack")
        deadline = time.monotonic() + 60
        version, sent = "1", 1
        while time.monotonic() < deadline and version != "2":
            pub.publish(f"{topic}/in", jpeg_bytes(1))
            sent += 1
            got = sub.wait_for(sent, timeout=20)   # the answer to this very message
            assert len(got) == sent, (sent, len(got))
            version = json.loads(got[-1].payload)["version"]
            time.sleep(0.1)                        # pace: the repository is polled at 0.2 s
        answered = len(sub.wait_for(sent, timeout=30))   # every answer is in before /metrics
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        with urllib.request.urlopen(f"{url}/v2/models/conv", timeout=10) as response:
            http_version = json.loads(response.read())["versions"]
    finally:
        code, out, err = _stop(proc)
    assert version == "2" and "2" in http_version, (version, http_version, err[-3000:])
    assert answered == sent
    assert f'edgepack_mqtt_messages_published_total{{subscription="{topic}/in"}} {answered}' \
        in metrics
    assert "edgepack_mqtt_connected 1" in metrics
    assert code == 0, err
