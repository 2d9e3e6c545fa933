"""Hot updates under load: many keep-alive clients on 127.0.0.1 while versions are swapped.

Each adder version N adds N to its input, so every response proves which version computed it;
the response's model_version must name that same version. Bounded: at most ~20 s of traffic,
8 clients, and every wait has a deadline.
"""
from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serve_fixtures import make_adder
from edgepack.runtime.serve import ModelServer, ServeConfig

CLIENTS = 8
TRAFFIC_DEADLINE = 20.0


def _fds() -> int:
    """Open fds other than directories. The server's poller holds the repository's
    directories open for a moment every poll (iterdir/rglob, every 50 ms here), so a plain
    count saw one more or one less at random (CI failed once on 20 <= 19); a leak of what
    this test guards (sockets, bundle files, engines' pipes) is never a directory."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:         # closed meanwhile: the listing's own fd, a poll's
            continue
        if not os.path.isdir(target):
            count += 1
    return count


def _install(repo: Path, staging: Path, version: int) -> None:
    """Copy a new version in the way the README says: build aside, then rename into place."""
    built = make_adder(staging / f"{version}.edgepack", float(version), version=str(version))
    os.replace(built, repo / "adder" / f"{version}.edgepack")


def _wait_for(server: ModelServer, version: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(server.manager.snapshot().get("adder", {})) == {version}:
            return
        time.sleep(0.02)
    raise AssertionError(f"version {version} not alone in service after {timeout} s: "
                         f"{sorted(server.manager.snapshot().get('adder', {}))}")


def _client(port: int, index: int, stop: threading.Event, seen: dict, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    x = np.full((1, 4), float(index * 100), np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    deadline = time.monotonic() + TRAFFIC_DEADLINE
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("POST", "/v2/models/adder/infer", body,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
            except Exception as exc:  # recorded; the test asserts there are none
                errors.append(f"client {index}: {type(exc).__name__}: {exc}")
                conn.close()
                continue
            if resp.status != 200:
                errors.append(f"client {index}: {resp.status} {payload[:200]!r}")
                continue
            out = json.loads(payload)
            version = out["model_version"]
            y = np.array(out["outputs"][0]["data"], np.float32)
            if not np.array_equal(y, x.ravel() + np.float32(float(version))):
                errors.append(f"client {index}: version {version} answered {y.tolist()}")
            seen[version] = seen.get(version, 0) + 1
    finally:
        conn.close()


class Traffic:
    """CLIENTS keep-alive clients hammering the adder until `stop()` (or the deadline)."""

    def __init__(self, port: int):
        self.stop_event = threading.Event()
        self.seen: list[dict] = [{} for _ in range(CLIENTS)]
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=_client, args=(port, i, self.stop_event,
                                                               self.seen[i], self.errors))
                        for i in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=TRAFFIC_DEADLINE + 10)

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.seen:
            for version, n in counts.items():
                out[version] = out.get(version, 0) + n
        return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts fds in /proc")
def test_swaps_under_load_fail_no_request_and_leak_nothing(tmp_path):
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    make_adder(repo / "adder" / "1.edgepack", 1.0, version="1")
    config = ServeConfig(host="127.0.0.1", port=0, workers=4, poll_interval=0.05,
                         engine_threads=1)
    with ModelServer(repo, config) as server:
        time.sleep(0.2)
        threads_before, fds_before = threading.active_count(), _fds()
        traffic = Traffic(server.port)
        try:
            time.sleep(0.3)
            for version in (2, 3, 4):
                _install(repo, staging, version)
                _wait_for(server, str(version))
                time.sleep(0.2)
            (repo / "adder" / "4.edgepack").unlink()          # roll back: 3 comes back
            _wait_for(server, "3")
            time.sleep(0.2)
            (repo / "adder" / "5.edgepack").write_bytes(b"PK\x03\x04 not a bundle")
            time.sleep(0.5)                                   # refused; 3 keeps serving
            assert set(server.manager.snapshot()["adder"]) == {"3"}
            _install(repo, staging, 6)
            _wait_for(server, "6")
            time.sleep(0.3)
        finally:
            traffic.stop()
        assert not traffic.errors, traffic.errors[:5]
        totals = traffic.totals()
        assert set(totals) <= {"1", "2", "3", "4", "6"}
        assert len(totals) >= 4, totals       # traffic really spanned the swaps
        assert sum(totals.values()) >= 100, totals
        index = {r.version: r for r in server.manager.index()}
        assert index["5"].state == "UNAVAILABLE"
        # Retired versions were closed (engines released) once drained.
        assert set(server.manager.snapshot()["adder"]) == {"6"}
        metrics = server.metrics.render()
        assert 'edgepack_model_loaded{model="adder",version="6"} 1' in metrics
        for old in ("1", "2", "3", "4"):
            assert f'edgepack_model_loaded{{model="adder",version="{old}"}}' not in metrics
        # Connection threads and sockets are gone once clients hang up.
        deadline = time.monotonic() + 10
        fds = _fds()
        while time.monotonic() < deadline and (threading.active_count() > threads_before
                                               or fds > fds_before):
            time.sleep(0.05)
            fds = _fds()
        assert threading.active_count() <= threads_before
        assert fds <= fds_before


class SlowFake:
    """Stand-in model whose run takes 5 ms and fails loudly if called after close().

    With 5 ms per request and 8 clients, requests are in flight at every swap, so closing a
    version before it drains turns into failed requests here.
    """

    def __init__(self, path: Path):
        from edgepack.runtime.specs import TensorSpec

        self.offset = float(json.loads(path.read_text())["offset"])
        self.inputs = (TensorSpec("x", (-1, 4), "float32"),)
        self.outputs = (TensorSpec("y", (-1, 4), "float32"),)
        self.engine_name, self.labels, self.closed = "fake", None, False

    def run(self, feeds):
        time.sleep(0.005)
        if self.closed:
            raise RuntimeError("run() on a closed model: a version was released too early")
        return {"y": feeds["x"] + np.float32(self.offset)}

    def close(self):
        self.closed = True


def test_versions_are_released_only_after_in_flight_requests_drain(tmp_path):
    repo = tmp_path / "repo" / "adder"
    repo.mkdir(parents=True)

    def install(version: int) -> None:
        tmp = repo / f".{version}.tmp"
        tmp.write_text(json.dumps({"offset": version}))
        os.replace(tmp, repo / f"{version}.edgepack")

    install(1)
    config = ServeConfig(host="127.0.0.1", port=0, workers=8, poll_interval=0.02)
    with ModelServer(tmp_path / "repo", config, loader=SlowFake) as server:
        traffic = Traffic(server.port)
        try:
            for version in range(2, 8):
                install(version)
                _wait_for(server, str(version))
                time.sleep(0.1)
        finally:
            traffic.stop()
        assert not traffic.errors, traffic.errors[:5]
        assert len(traffic.totals()) >= 5, traffic.totals()
