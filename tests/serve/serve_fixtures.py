"""Helpers for the serving tests: tiny ONNX bundles built here, and small HTTP calls.

Imported by name (`from serve_fixtures import ...`): a module named `conftest` would collide
with the other test folders' conftest.py in a full run.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgepack.runtime import pack_bundle

COLOR_LABELS = ["red", "green", "blue"]


def _model_bytes(nodes, inputs, outputs, initializers) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def adder_onnx(offset: float) -> bytes:
    """y = x + offset for x float32 [N, 4]: the output says which version answered."""
    off = numpy_helper.from_array(np.full((1, 4), offset, np.float32), "off")
    return _model_bytes(
        [helper.make_node("Add", ["x", "off"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [off])


def make_adder(path: Path, offset: float, name: str = "adder", version: str = "1.0.0") -> Path:
    """Pack an adder bundle at `path` (a .edgepack file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return pack_bundle(path, adder_onnx(offset), name=name, version=version)


def color_onnx() -> bytes:
    """logits[c] = mean of channel c of a 4x4 RGB image in [0, 1] (NHWC float32)."""
    weights = np.zeros((48, 3), np.float32)
    for i in range(48):
        weights[i, i % 3] = 1.0 / 16
    w = numpy_helper.from_array(weights, "w")
    shape = numpy_helper.from_array(np.array([-1, 48], np.int64), "shape")
    return _model_bytes(
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 4, 4, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [w, shape])


def make_color(path: Path) -> Path:
    """A classifier bundle with pre/post-processing: which colour dominates an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return pack_bundle(
        path, color_onnx(), name="color", version="1",
        preprocess={"image": [{"op": "resize", "size": [4, 4]},
                              {"op": "scale", "factor": 1 / 255}]},
        postprocess={"logits": [{"op": "softmax"}, {"op": "topk", "k": 2}]},
        labels=COLOR_LABELS)


def call(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with urllib; returns (status, headers, body) for 2xx and errors alike."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def post_json(url: str, payload: Any) -> tuple[int, Any]:
    status, _, body = call("POST", url, json.dumps(payload).encode(),
                           {"Content-Type": "application/json"})
    return status, json.loads(body)
