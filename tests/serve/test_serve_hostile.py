"""Hostile and careless clients on raw sockets: every refusal is an HTTP status line plus a
JSON error, the server keeps serving, and trickling clients cannot lock others out.

Every wait is bounded (socket timeouts, loop counts, deadlines); at most ~15 s in all.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from edgepack.runtime.serve import ModelServer, ServeConfig
from serve_fixtures import call, make_adder, post_json

X = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}


@pytest.fixture
def tight(tmp_path: Path):
    """A server with short head/body deadlines and few connection slots."""
    make_adder(tmp_path / "repo" / "adder" / "1.edgepack", 1.0, version="1")
    config = ServeConfig(host="127.0.0.1", port=0, workers=1, poll_interval=0,
                         engine_threads=1, max_connections=8, keepalive_timeout=5.0,
                         header_timeout=1.0, body_timeout=1.0, max_body_bytes=64 * 1024)
    with ModelServer(tmp_path / "repo", config) as srv:
        yield srv


def raw(server, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, then read until the server closes (bounded by `timeout`)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_and_json(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode()
    assert status_line.startswith("HTTP/1."), f"no status line: {response[:80]!r}"
    assert b"content-type: application/json" in head.lower()
    return int(status_line.split()[1]), json.loads(body)


def still_serving(server) -> None:
    status, out = post_json(f"{server.url}/v2/models/adder/infer", {"inputs": [X]})
    assert status == 200 and out["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("request_bytes, status, fragment", [
    (b"GARBAGE\r\n\r\n", 400, "Bad request"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "Bad request"),  # TLS hello
    (b"GET /v2 HTTP/9.1\r\n\r\n", 505, ""),
    (b"FROB /v2 HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method FROB not allowed"),
])
def test_garbage_request_lines_get_a_status_line_and_json(tight, request_bytes, status,
                                                          fragment):
    got, body = status_and_json(raw(tight, request_bytes))
    assert got == status and fragment in body["error"]
    still_serving(tight)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_json_with_allow(tight, method):
    status, headers, body = call(method, f"{tight.url}/v2/models/adder/infer", b"{}")
    assert status == 405 and "not allowed" in json.loads(body)["error"]
    assert call(method, f"{tight.url}/v2/nosuch", b"{}")[0] == 404
    status, _, body = call("FROB", f"{tight.url}/v2/models/adder/infer")
    assert status == 405 and headers.get("Content-Type") == "application/json"
    still_serving(tight)


def test_body_shorter_than_content_length_is_400_after_the_body_deadline(tight):
    body = json.dumps({"inputs": [X]}).encode()
    request = (b"POST /v2/models/adder/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
               + str(len(body) + 50).encode() + b"\r\n\r\n" + body)
    started = time.monotonic()
    status, out = status_and_json(raw(tight, request, timeout=15))
    assert status == 400
    assert out["error"] == (f"body ended after {len(body)} of {len(body) + 50} bytes: the rest "
                            "did not arrive within 1 s (Content-Length larger than the body?)")
    assert time.monotonic() - started < 10     # bounded by body_timeout, not 30 s or forever
    still_serving(tight)


def _trickle(port: int, stop: threading.Event, closed_after: list) -> None:
    """A slow loris: one header line every 0.2 s, reconnecting when dropped."""
    for _ in range(100):                       # bounded reconnects
        if stop.is_set():
            return
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.05)
            continue
        opened = time.monotonic()
        try:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
            for i in range(200):                # bounded: 40 s at most, never reached
                if stop.is_set():
                    return
                sock.sendall(b"X-Slow-%d: 1\r\n" % i)
                time.sleep(0.2)
        except OSError:                         # the server dropped us
            closed_after.append(time.monotonic() - opened)
        finally:
            sock.close()


def test_slow_loris_clients_cannot_lock_out_a_normal_client(tight):
    stop = threading.Event()
    closed_after: list[float] = []
    loris = [threading.Thread(target=_trickle, args=(tight.port, stop, closed_after),
                              daemon=True) for _ in range(16)]   # twice the 8 slots
    for t in loris:
        t.start()
    try:
        time.sleep(0.5)                         # every slot is now held by a trickler
        statuses = []
        for _ in range(10):
            statuses.append(call("GET", f"{tight.url}/v2/health/live")[0])
            statuses.append(post_json(f"{tight.url}/v2/models/adder/infer",
                                      {"inputs": [X]})[0])
            time.sleep(0.1)
        assert statuses == [200] * 20
        deadline = time.monotonic() + 8
        while not closed_after and time.monotonic() < deadline:
            time.sleep(0.1)
        # each trickler is cut off: to make room, or at the latest at the 1 s head deadline
        assert closed_after and max(closed_after) < 5
    finally:
        stop.set()
        for t in loris:
            t.join(timeout=10)
    assert not any(t.is_alive() for t in loris)
    still_serving(tight)
