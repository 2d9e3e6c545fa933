"""Repository layouts, single-bundle serving, signatures and the connection cap (real bundles)."""
from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest

from serve_fixtures import adder_onnx, call, make_adder, post_json
from edgepack.runtime import pack_bundle
from edgepack.runtime.serve import ModelServer, ServeConfig

FAST = dict(host="127.0.0.1", port=0, poll_interval=0.05, engine_threads=1)


def _y0(server, route="adder") -> tuple[str, float]:
    status, out = post_json(f"{server.url}/v2/models/{route}/infer", {"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]})
    assert status == 200, out
    return out["model_version"], out["outputs"][0]["data"][0]


def _until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_single_bundle_is_served_by_manifest_name_and_replaced_in_place(tmp_path):
    bundle = make_adder(tmp_path / "adder.edgepack", 1.0, name="plus", version="1.0.0")
    with ModelServer(bundle, ServeConfig(**FAST)) as server:
        assert _y0(server, "plus") == ("1.0.0", 1.0)
        staged = make_adder(tmp_path / "staging" / "adder.edgepack", 2.0, name="plus",
                            version="1.1.0")
        os.replace(staged, bundle)
        _until(lambda: "1.1.0" in server.manager.snapshot().get("plus", {}))
        assert _y0(server, "plus") == ("1.1.0", 2.0)
        assert call("GET", server.url + "/v2/models/plus/versions/1.0.0/ready")[0] == 404


def test_unpacked_and_ambiguous_version_directories(tmp_path):
    repo = tmp_path / "repo"
    pack_bundle(repo / "adder" / "1", adder_onnx(1.0), name="adder", version="1",
                directory=True)
    make_adder(repo / "adder" / "2" / "a.edgepack", 2.0)
    make_adder(repo / "adder" / "2" / "b.edgepack", 2.0)
    with ModelServer(repo, ServeConfig(**FAST)) as server:
        assert _y0(server) == ("1", 1.0)                    # 2 is ambiguous: refused
        status, _, body = call("GET", server.url + "/v2/repository/index")
        rows = {r["version"]: r for r in json.loads(body)}
        assert rows["1"]["state"] == "READY"
        assert rows["2"]["state"] == "UNAVAILABLE" and "exactly one" in rows["2"]["reason"]


def test_trusted_key_refuses_unsigned_versions(tmp_path):
    pytest.importorskip("cryptography")
    from edgepack.runtime import read_bundle
    from edgepack.runtime.bundle import write_bundle
    from edgepack.runtime.signing import generate_keypair

    private, public = generate_keypair()
    repo = tmp_path / "repo"
    signed = make_adder(repo / "adder" / "1.edgepack", 1.0, version="1")
    b = read_bundle(signed)
    write_bundle(signed, b.manifest, {n: b.read(n) for n in b.members}, signing_key=private)
    key = tmp_path / "trusted.pub"
    key.write_text(public + "\n")
    with ModelServer(repo, ServeConfig(trusted_key=str(key), **FAST)) as server:
        assert _y0(server) == ("1", 1.0)
        staged = make_adder(tmp_path / "staging" / "2.edgepack", 2.0, version="2")
        os.replace(staged, repo / "adder" / "2.edgepack")   # unsigned
        _until(lambda: any(r.version == "2" and r.state == "UNAVAILABLE"
                           for r in server.manager.index()))
        reason = {r.version: r.reason for r in server.manager.index()}["2"]
        assert "unsigned" in reason
        assert _y0(server) == ("1", 1.0)


def test_idle_connections_make_room_when_the_slots_are_full(tmp_path):
    make_adder(tmp_path / "repo" / "adder" / "1.edgepack", 1.0, version="1")
    with ModelServer(tmp_path / "repo", ServeConfig(max_connections=2, **FAST)) as server:
        held = []
        try:
            # both accepted, idle, each holding a handler thread (a fixed sleep raced a
            # loaded machine: a late accept left a free slot and nothing was dropped);
            # one at a time, so held[0] is the older as the server sees it (its handler
            # thread's clock: two handler threads started together may run in any order)
            for count in (1, 2):
                held.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
                _until(lambda: len(server._httpd.connections) == count)
            assert call("GET", server.url + "/v2/health/live")[0] == 200
            # the oldest idle connection was closed to make room
            assert held[0].recv(4096) == b""
        finally:
            for s in held:
                s.close()


def test_connections_over_the_cap_get_503_and_the_cap_frees_up(tmp_path):
    make_adder(tmp_path / "repo" / "adder" / "1.edgepack", 1.0, version="1")
    with ModelServer(tmp_path / "repo", ServeConfig(max_connections=2, **FAST)) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(2)]
        try:
            for s in held:                  # each mid-request: head sent, body pending
                s.sendall(b"POST /v2/models/adder/infer HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 100\r\n\r\n{")
            time.sleep(0.3)                 # both being served: neither may be dropped
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
                reply = extra.recv(4096)
            assert reply.startswith(b"HTTP/1.1 503")
            assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"].startswith("too many")
        finally:
            for s in held:
                s.close()
        _until(lambda: call("GET", server.url + "/v2/health/live")[0] == 200)
        np.testing.assert_equal(_y0(server), ("1", 1.0))


def test_vanished_path_keeps_serving_and_logs_once(tmp_path, caplog):
    bundle = make_adder(tmp_path / "adder.edgepack", 1.0, name="plus", version="1")
    with ModelServer(bundle, ServeConfig(**FAST)) as server:
        with caplog.at_level("ERROR", logger="edgepack.runtime.serve"):
            bundle.rename(tmp_path / "moved.edgepack")
            time.sleep(0.5)                          # ~10 polls
            assert _y0(server, "plus") == ("1", 1.0)
        errors = [r for r in caplog.records if "does not exist" in r.getMessage()]
        assert len(errors) == 1
