"""The V2 REST API over real HTTP on 127.0.0.1, with real ONNX bundles."""
from __future__ import annotations

import gzip
import http.client
import io
import json
import re
import struct

import numpy as np
import pytest

from serve_fixtures import COLOR_LABELS, call, post_json


def infer_url(server, model="adder", version=None):
    v = f"/versions/{version}" if version else ""
    return f"{server.url}/v2/models/{model}{v}/infer"


X = {"name": "x", "shape": [2, 4], "datatype": "FP32",
     "data": [[0, 1, 2, 3], [4, 5, 6, 7.5]]}


def test_health_server_and_model_metadata(server):
    assert call("GET", server.url + "/v2/health/live")[0] == 200
    status, _, body = call("GET", server.url + "/v2/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    meta = json.loads(call("GET", server.url + "/v2")[2])
    assert meta["name"] == "edgepack" and "binary_tensor_data" in meta["extensions"]
    model = json.loads(call("GET", server.url + "/v2/models/adder")[2])
    assert model["name"] == "adder" and model["versions"] == ["2"]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert model["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert call("GET", server.url + "/v2/models/adder/versions/2/ready")[0] == 200
    assert call("GET", server.url + "/v2/models/adder/ready")[0] == 200
    # version 1 is on disk but the default policy (latest) does not load it
    assert call("GET", server.url + "/v2/models/adder/versions/1/ready")[0] == 404


def test_json_inference_matches_in_process_run(server):
    status, out = post_json(infer_url(server), {"id": "abc", "inputs": [X]})
    assert status == 200
    assert out["model_name"] == "adder" and out["model_version"] == "2" and out["id"] == "abc"
    (y,) = out["outputs"]
    assert y["name"] == "y" and y["datatype"] == "FP32" and y["shape"] == [2, 4]
    expected = np.array(X["data"], np.float32) + 2.0
    np.testing.assert_allclose(np.array(y["data"]).reshape(2, 4), expected, rtol=0, atol=1e-6)


def test_binary_extension_over_raw_http_client(server):
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    head = json.dumps({"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v2/models/adder/versions/2/infer", head + x.tobytes(),
                     {"Inference-Header-Content-Length": str(len(head)),
                      "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        hlen = int(resp.getheader("Inference-Header-Content-Length"))
        meta = json.loads(body[:hlen])
        assert meta["outputs"][0]["parameters"]["binary_data_size"] == x.nbytes
        y = np.frombuffer(body[hlen:], "<f4").reshape(3, 4)
        np.testing.assert_array_equal(y, x + np.float32(2.0))   # bit-exact through the wire
    finally:
        conn.close()


def test_pinned_version_route_and_classification(server):
    status, out = post_json(infer_url(server, "color"), {
        "inputs": [{"name": "image", "shape": [1, 4, 4, 3], "datatype": "FP32",
                    "data": [0.1, 0.2, 0.9] * 16}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2}}]})
    assert status == 200
    assert out["outputs"][0]["datatype"] == "BYTES" and out["outputs"][0]["shape"] == [1, 2]
    first, second = out["outputs"][0]["data"]
    score, index, label = first.split(":")
    assert (int(index), label) == (2, "blue") and abs(float(score) - 0.9) < 1e-5
    assert second.split(":")[2] == "green"


def _jpeg(rgb) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_pipeline_parameter_takes_a_jpeg_and_returns_labelled_topk(server):
    pytest.importorskip("PIL")
    jpeg = _jpeg((230, 20, 30))
    head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(jpeg) + 4}}],
                       "parameters": {"edgepack_pipeline": True}}).encode()
    status, headers, body = call("POST", infer_url(server, "color"),
                                 head + struct.pack("<I", len(jpeg)) + jpeg,
                                 {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, body
    out = json.loads(body)
    (logits,) = out["outputs"]
    assert logits["datatype"] == "BYTES"
    topk = json.loads(logits["data"][0])
    assert [t["label"] for t in topk] == ["red", "blue"]
    # softmax of channel means ~ (0.90, 0.08, 0.12): red, then blue
    assert topk[0]["score"] > 0.45 and topk[0]["index"] == 0


def test_predict_route_takes_raw_image_bytes(server):
    pytest.importorskip("PIL")
    status, _, body = call("POST", server.url + "/v2/models/color/predict",
                           _jpeg((10, 200, 20)), {"Content-Type": "image/jpeg"})
    assert status == 200, body
    out = json.loads(body)
    assert out["model_version"] == "1"
    assert out["outputs"]["logits"][0]["label"] == "green"
    assert {t["label"] for t in out["outputs"]["logits"]} <= set(COLOR_LABELS)


def _adder(**over):
    tensor = dict(X)
    tensor.update(over)
    return {"inputs": [tensor]}


BAD_REQUESTS = [
    ("malformed json", "adder", b'{"inputs": [', {"Content-Type": "application/json"}, 400,
     "not valid JSON"),
    ("wrong datatype", "adder", json.dumps(_adder(datatype="INT32", data=[0] * 8)).encode(),
     {}, 400, "must be FP32"),
    ("wrong shape", "adder", json.dumps(_adder(shape=[2, 3], data=[0] * 6)).encode(), {}, 400,
     "must have shape [-1, 4]"),
    # Same element count, wrong shape: a server that silently reshaped would answer 200.
    ("same-size wrong shape", "adder", json.dumps(_adder(shape=[4, 2])).encode(), {}, 400,
     "must have shape [-1, 4] (-1 = any size), got [4, 2]"),
    ("same-size wrong rank", "adder", json.dumps(_adder(shape=[8])).encode(), {}, 400,
     "must have shape [-1, 4] (-1 = any size), got [8]"),
    ("same-size NCHW for NHWC", "color", json.dumps({"inputs": [
        {"name": "image", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.5] * 48}]}
    ).encode(), {}, 400, "must have shape [-1, 4, 4, 3] (-1 = any size), got [1, 3, 4, 4]"),
    ("wrong size", "adder", json.dumps(_adder(data=[0] * 7)).encode(), {}, 400,
     "needs 8 elements"),
    ("unknown input", "adder", json.dumps(_adder(name="q")).encode(), {}, 400,
     "no input 'q'"),
    ("unknown model", "nosuch", json.dumps(_adder()).encode(), {}, 404, "unknown model"),
    ("unknown version", "adder/versions/7", json.dumps(_adder()).encode(), {}, 404,
     "no loaded version '7'"),
    ("too large", "adder", b"x" * (64 * 1024 + 1), {}, 413, "over the limit"),
    ("content type", "adder", b"hello", {"Content-Type": "text/plain"}, 415,
     "not supported"),
    ("gzip bomb", "adder", gzip.compress(b" " * (1024 * 1024)),
     {"Content-Encoding": "gzip"}, 413, "decompressed body"),
]


@pytest.mark.parametrize("case, route, body, headers, status, fragment", BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_json_4xx_and_the_server_keeps_serving(
        server, case, route, body, headers, status, fragment):
    got, resp_headers, resp = call("POST", f"{server.url}/v2/models/{route}/infer", body,
                                   headers)
    assert got == status
    assert resp_headers["Content-Type"] == "application/json"
    assert fragment in json.loads(resp)["error"]
    ok, out = post_json(infer_url(server), _adder())
    assert ok == 200 and out["outputs"][0]["data"][0] == 2.0


def test_gzip_request_body_is_accepted(server):
    body = gzip.compress(json.dumps(_adder()).encode())
    status, _, resp = call("POST", infer_url(server), body, {"Content-Encoding": "gzip"})
    assert status == 200 and json.loads(resp)["outputs"][0]["data"][:2] == [2.0, 3.0]


def test_errors_keep_the_keepalive_connection_usable(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for body, status in ((b"{bad", 400), (json.dumps(_adder()).encode(), 200),
                             (json.dumps(_adder(data=[1])).encode(), 400),
                             (json.dumps(_adder()).encode(), 200)):
            conn.request("POST", "/v2/models/adder/infer", body)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == status
        conn.request("GET", "/v2/nope")
        resp = conn.getresponse()
        assert resp.status == 404 and "error" in json.loads(resp.read())
        conn.request("GET", "/v2/models/adder/infer")
        resp = conn.getresponse()
        assert resp.status == 405
        resp.read()
        # Refused before the body is read: the body must still be taken off the stream.
        for method, path, status in (("POST", "/v2/nope", 404),
                                     ("POST", "/v2/health/live", 405),
                                     ("POST", "/v2/models/adder/infer", 200)):
            conn.request(method, path, json.dumps(_adder()).encode())
            resp = conn.getresponse()
            resp.read()
            assert resp.status == status, (method, path)
    finally:
        conn.close()


def _metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_requests_errors_and_latency(server):
    for _ in range(5):
        assert post_json(infer_url(server), _adder())[0] == 200
    for _ in range(2):
        assert post_json(infer_url(server), _adder(data=[1]))[0] == 400
    post_json(infer_url(server, "ghost"), _adder())       # unknown: no per-model series
    status, headers, body = call("GET", server.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert _metric(text, "edgepack_requests_total", model="adder", version="2") == 5
    assert _metric(text, "edgepack_request_errors_total", model="adder", version="2",
                   code="400") == 2
    assert _metric(text, "edgepack_inference_seconds_count", model="adder", version="2") == 5
    assert _metric(text, "edgepack_inference_seconds_bucket", model="adder", version="2",
                   le="+Inf") == 5
    assert _metric(text, "edgepack_model_loaded", model="adder", version="2") == 1
    assert _metric(text, "edgepack_model_loaded", model="color", version="1") == 1
    assert 0 < _metric(text, "edgepack_model_load_seconds", model="adder", version="2") < 30
    assert 'model="ghost"' not in text
    assert _metric(text, "edgepack_http_requests_total", code="404") >= 1


@pytest.mark.parametrize("raw, status", [
    (b"GET /v2 extra HTTP/1.1\r\n\r\n", 400),
    (b"PUT /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
    (b"FROB /v2 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n",
     431),
])
def test_protocol_level_errors_are_json_too(server, raw, status):
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode()
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["error"]
    ok, _ = post_json(infer_url(server), _adder())
    assert ok == 200
