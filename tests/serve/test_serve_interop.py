"""Interop with the V2 clients of KServe (0.21 InferenceRESTClient) and MLServer (1.7 codecs).

Neither package can be installed next to edgepack's pins (both would downgrade protobuf 7 to
6.33, and kserve psutil 7 to 5.9), so these tests send the exact JSON those clients produce
and decode the answers the way they do, as read from their sources:

- kserve `InferRequest.to_rest()`: ``id`` (a uuid), ``model_name``, inputs without ``data`` when
  binary (with ``parameters.binary_data_size``), sent as orjson bytes; its pydantic
  `InferenceRequest.model_dump()` (and `InferInput.to_dict()`) write every unset optional field
  as null (``id``, ``parameters``, ``outputs``, an input's ``parameters``, a binary input's
  ``data``). Responses are parsed with `orjson.loads` (which refuses NaN/Infinity tokens) and
  `InferOutput.as_numpy()` = ``np.array(data, dtype).reshape(shape)``.
- MLServer: `NumpyCodec.encode_input` puts ``parameters: {"content_type": "np"}`` and
  ``data = array.flatten().tolist()``; pydantic dumps unset fields as null and orjson writes
  NaN as null; `NumpyCodec.decode_output` is ``np.array(data, dtype).reshape(shape)``.
"""
from __future__ import annotations

import json
import uuid

import numpy as np

from serve_fixtures import call


def strict_loads(body: bytes):
    """Parse like orjson: NaN/Infinity tokens are an error, not a float."""
    def refuse(token):
        raise AssertionError(f"response holds {token}, which is not JSON")
    return json.loads(body, parse_constant=refuse)


def as_numpy(output: dict) -> np.ndarray:
    """kserve InferOutput.as_numpy / MLServer NumpyCodec.decode_output for JSON data."""
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}[output["datatype"]]
    return np.array(output["data"], dtype=dtype).reshape(output["shape"])


X = np.array([[0, 1.5, -2, 3], [4, np.nan, 6, 7.25]], np.float32)


def infer(server, payload: dict | bytes, headers: dict | None = None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, resp_headers, resp = call("POST", f"{server.url}/v2/models/adder/infer", body,
                                      headers or {"content-type": "application/json"})
    return status, resp_headers, resp


def json_data(x: np.ndarray) -> list:
    """What orjson makes of `array.flatten().tolist()`: NaN as null."""
    return [None if np.isnan(v) else v for v in x.ravel().tolist()]


def test_kserve_pydantic_request_with_nulls_and_nan_as_null(server):
    payload = {"id": None, "parameters": None, "outputs": None,
               "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                           "parameters": None, "data": json_data(X)}]}
    status, _, body = infer(server, payload)
    assert status == 200, body
    out = strict_loads(body)
    y = as_numpy(out["outputs"][0])
    expected = X + np.float32(2)
    np.testing.assert_array_equal(y, expected)      # bit-equal, NaN in the same place
    assert out["outputs"][0]["data"][5] is None


def test_kserve_requested_outputs_with_null_parameters(server):
    payload = {"id": "a", "parameters": None,
               "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                           "parameters": None, "data": json_data(X)}],
               "outputs": [{"name": "y", "parameters": None}]}
    status, _, body = infer(server, payload)
    assert status == 200, body
    assert strict_loads(body)["id"] == "a"


def test_kserve_to_rest_binary_request(server):
    request_id = str(uuid.UUID(int=7))
    head = json.dumps({"id": request_id, "model_name": "adder",
                       "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": X.nbytes}}]},
                      separators=(",", ":")).encode()
    status, headers, body = infer(server, head + X.tobytes(),
                                  {"inference-header-content-length": str(len(head)),
                                   "content-type": "application/octet-stream"})
    assert status == 200, body
    length = int(headers.get("Inference-Header-Content-Length", len(body)))
    out = strict_loads(body[:length])
    assert out["id"] == request_id and out["model_name"] == "adder"
    np.testing.assert_array_equal(as_numpy(out["outputs"][0]), X + np.float32(2))


def test_kserve_to_dict_binary_input_with_null_data(server):
    head = json.dumps({"id": None, "model_name": "adder", "parameters": None,
                       "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                   "data": None,
                                   "parameters": {"binary_data_size": X.nbytes}}]}).encode()
    status, _, body = infer(server, head + X.tobytes(),
                            {"inference-header-content-length": str(len(head))})
    assert status == 200, body


def test_mlserver_numpy_codec_request(server):
    payload = {"id": None, "parameters": None, "outputs": None,
               "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                           "parameters": {"content_type": "np", "headers": None},
                           "data": json_data(X)}]}
    status, _, body = infer(server, payload)
    assert status == 200, body
    y = as_numpy(strict_loads(body)["outputs"][0])
    np.testing.assert_array_equal(y, X + np.float32(2))


def test_infinities_are_null_too(server):
    x = np.array([[np.inf, -np.inf, 1, 2]], np.float32)
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    status, _, body = infer(server, head + x.tobytes(),
                            {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200
    assert strict_loads(body)["outputs"][0]["data"] == [None, None, 3.0, 4.0]


def test_platform_follows_the_spec_names(server):
    status, _, body = call("GET", f"{server.url}/v2/models/adder")
    assert status == 200 and strict_loads(body)["platform"] == "onnx_onnxv1"
    status, _, body = call("GET", f"{server.url}/v2/models/adder/config")
    assert status == 200 and strict_loads(body)["platform"] == "onnxruntime_onnx"
