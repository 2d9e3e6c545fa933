"""The quantization mode names and the QuantizationConfig -> int8 options translation are
each written once (issue 12 item 33: six copies of the names, two of the translation)."""
from __future__ import annotations

import ast
from pathlib import Path

from edgepack.converters.config import CalibrationConfig, QuantizationConfig

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("none", "fp16", "dynamic", "int8")
LIBRARY = ("runtime", "devices", "converters", "sdk")


def library_modules():
    for folder in LIBRARY:
        yield from sorted((ROOT / folder).rglob("*.py"))


def literal(node) -> tuple | None:
    if isinstance(node, (ast.Tuple, ast.List)) and all(
            isinstance(e, ast.Constant) for e in node.elts):
        return tuple(e.value for e in node.elts)
    return None


def test_mode_names_are_defined_once():
    places = []
    for path in library_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if literal(node) == NAMES:
                places.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert len(places) == 1 and places[0].startswith("devices/catalog.py:"), places


def test_int8_options_are_built_in_one_place():
    builders = []
    for path in library_modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("converters/int8/"):
            continue  # where the options are defined (and their docstring examples)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                    "Int8Options", "LiteRtInt8Options"):
                builders.append(rel)
    assert builders == ["converters/config.py", "converters/config.py"]


def test_translation():
    config = QuantizationConfig(mode="int8", per_channel=False, int8_io=True,
                                reduce_range=True, accuracy_target=0.99, speed_check=False,
                                calibration=CalibrationConfig(method="entropy"), device="rpi4b")
    onnx = config.int8_options("onnxruntime", ("n1",))
    assert dict(onnx.recipe_overrides) == {"per_channel": False, "reduce_range": True,
                                           "activation_type": "int8"}
    assert onnx.device == "rpi4b" and onnx.exclude_nodes == ("n1",) and onnx.speed is None
    assert onnx.calibration.method == "entropy" and onnx.accuracy.min_agreement == 0.99
    litert = QuantizationConfig(mode="int8", int8_io=True).int8_options("litert")
    assert dict(litert.recipe_overrides) == {"per_channel": True} and litert.int8_io
    assert litert.speed is not None and litert.accuracy is None
