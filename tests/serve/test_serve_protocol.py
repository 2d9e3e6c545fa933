"""Open Inference Protocol encoding/decoding, without a server."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edgepack.runtime.serve.errors import RequestError
from edgepack.runtime.serve.protocol import (decode_infer_request, encode_infer_response,
                                             parse_header_length)


def _binary_body(header: dict, *blobs: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


def test_json_nested_and_flat_data_decode_to_the_same_array():
    flat = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                        "data": [1, 2, 3, 4, 5, 6.5]}]}
    nested = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                          "data": [[1, 2, 3], [4, 5, 6.5]]}]}
    a = decode_infer_request(json.dumps(flat).encode(), None).inputs[0].array
    b = decode_infer_request(json.dumps(nested).encode(), None).inputs[0].array
    assert a.dtype == np.float32 and a.shape == (2, 3)
    np.testing.assert_array_equal(a, b)
    assert a[1, 2] == 6.5


def test_binary_tensor_extension_round_trips_fp32_int64_and_bytes():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    n = np.array([-(2 ** 40), 3], dtype=np.int64)
    words = [b"hello", b"\x00\xffbin"]
    strings = b"".join(struct.pack("<I", len(w)) + w for w in words)
    header = {"id": "r1", "inputs": [
        {"name": "x", "shape": [2, 3], "datatype": "FP32",
         "parameters": {"binary_data_size": x.nbytes}},
        {"name": "n", "shape": [2], "datatype": "INT64", "data": [-(2 ** 40), 3]},
        {"name": "s", "shape": [2], "datatype": "BYTES",
         "parameters": {"binary_data_size": len(strings)}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    body, hlen = _binary_body(header, x.tobytes(), strings)
    req = decode_infer_request(body, parse_header_length(str(hlen), len(body)))
    got = {t.name: t.array for t in req.inputs}
    np.testing.assert_array_equal(got["x"], x)              # bit-exact, no tolerance
    np.testing.assert_array_equal(got["n"], n)
    assert list(got["s"]) == words
    assert req.id == "r1" and req.outputs[0].binary is True

    out, out_hlen = encode_infer_response("m", "1", "r1", [("y", x * 2, True),
                                                            ("z", n, False)])
    head = json.loads(out[:out_hlen])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == x.nbytes
    assert head["outputs"][1]["data"] == [-(2 ** 40), 3]
    np.testing.assert_array_equal(
        np.frombuffer(out[out_hlen:], "<f4").reshape(2, 3), x * 2)


@pytest.mark.parametrize("header, fragment", [
    ({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]},
     "needs 4 elements"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}]},
     "not INT32"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]},
     "out of range"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [True]}]},
     "not FP32"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1]}]},
     "not supported"),
    ({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]},
     "non-negative"),
    ({"inputs": []}, "non-empty 'inputs'"),
    ([1, 2], "JSON object"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "neither 'data'"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                 {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, "twice"),
])
def test_bad_json_requests_are_400_naming_the_problem(header, fragment):
    with pytest.raises(RequestError) as info:
        decode_infer_request(json.dumps(header).encode(), None)
    assert info.value.status == 400
    assert fragment in info.value.message


def test_huge_announced_shape_is_refused_before_allocating():
    header = {"inputs": [{"name": "x", "shape": [1 << 20, 1 << 20], "datatype": "FP32",
                          "parameters": {"binary_data_size": 4}}]}
    body, hlen = _binary_body(header, b"\0" * 4)
    with pytest.raises(RequestError) as info:
        decode_infer_request(body, hlen)
    assert info.value.status == 400
    assert "over the limit of 268435456 elements" in info.value.message


@pytest.mark.parametrize("body, fragment", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),                    # RecursionError
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [' + b"9" * 4301
     + b"]}]}", "Exceeds the limit"),                                          # int digit cap
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [' + b"9" * 401
     + b"]}]}", "values out of range for FP32"),                               # OverflowError
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1e39]}]}',
     "values out of range for FP32"),                                          # silent inf
    (b'{"inputs": [{"name": "x", "shape": [0, 1000000000000000000000000000000], '
     b'"datatype": "FP32", "data": []}]}', "per dimension"),                  # prod == 0
    (b'{"inputs": [{"name": "x", "shape": [' + b"1, " * 40 + b'1], "datatype": "FP32", '
     b'"data": [1]}]}', "41 dimensions"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
     "NaN is not JSON"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [null]}]}',
     "not INT32"),
])
def test_hostile_json_is_400_not_a_crash(body, fragment):
    with pytest.raises(RequestError) as info:
        decode_infer_request(body, None)
    assert info.value.status == 400
    assert fragment in info.value.message


def test_null_is_nan_for_float_inputs_and_non_finite_outputs_are_null():
    req = decode_infer_request(json.dumps({"inputs": [
        {"name": "x", "shape": [3], "datatype": "FP32", "data": [1.5, None, -2]}]}).encode(),
        None)
    x = req.inputs[0].array
    assert x.dtype == np.float32 and x[0] == 1.5 and np.isnan(x[1]) and x[2] == -2
    y = np.array([np.nan, np.inf, -np.inf, 0.25], np.float32)
    body, hlen = encode_infer_response("m", "1", None, [("y", y, False)])
    assert hlen is None
    text = body.decode()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: 1 / 0)["outputs"][0]["data"] == \
        [None, None, None, 0.25]


@pytest.mark.parametrize("size, blob, fragment", [
    (8, b"\0" * 8, "needs 16 bytes"),           # shape [4] FP32 is 16 bytes
    (32, b"\0" * 16, "runs past the end"),
    (16, b"\0" * 20, "add up to 16"),           # trailing garbage
])
def test_binary_size_mismatches_are_400(size, blob, fragment):
    header = {"inputs": [{"name": "x", "shape": [4], "datatype": "FP32",
                          "parameters": {"binary_data_size": size}}]}
    body, hlen = _binary_body(header, blob)
    with pytest.raises(RequestError) as info:
        decode_infer_request(body, hlen)
    assert info.value.status == 400 and fragment in info.value.message


def test_header_length_must_fit_the_body():
    for value in ("abc", "0", "999"):
        with pytest.raises(RequestError) as info:
            parse_header_length(value, 100)
        assert info.value.status == 400
    assert parse_header_length(None, 100) is None
    assert parse_header_length("100", 100) == 100


def test_bytes_output_that_is_not_utf8_needs_binary():
    arr = np.empty(1, dtype=object)
    arr[0] = b"\xff\xfe"
    with pytest.raises(RequestError) as info:
        encode_infer_response("m", "1", None, [("s", arr, False)])
    assert "binary_data" in info.value.message
    body, hlen = encode_infer_response("m", "1", None, [("s", arr, True)])
    assert body[hlen:] == struct.pack("<I", 2) + b"\xff\xfe"
