"""`edgepack inspect` tells how a bundle was quantized, from whatever its manifest records.

The records are written here the way converters/int8 writes them (no conversion runs): the
model in every bundle is the float test conv net, since inspect only reads the manifest.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgepack.cli.describe_quantization import MAX_LAYERS, MAX_NAME
from edgepack.cli.main import cli
from edgepack.runtime import pack_bundle

ONNX_RECIPE = {"name": "ort-x86-avx2", "engine": "onnxruntime", "cpu_family": "x86-avx2",
               "types": "U8S8", "reduce_range": True, "format": "qdq", "per_channel": True,
               "graph_prep": True, "float_op_types": ["Gemm"], "float_thin_convs": 16,
               "why": "onnxruntime's quantize_static guidance for x86"}

#: What quantize_onnx writes for int8 with --accuracy-target and the speed check, on a
#: model where the target was missed with 10 layers kept float plus 2 kept by the recipe.
ONNX_INT8 = {
    "mode": "int8", "per_channel": True, "reduce_range": True, "io": "float32",
    "calibration": {"method": "percentile", "samples": 200, "percentile": 99.99},
    "recipe": ONNX_RECIPE,
    "graph_prep": {"steps": ["symbolic_shape_inference", "graph_optimization"],
                   "nodes_before": 64, "nodes_after": 52, "batchnorm_left": 0,
                   "batchnorm_fused": 12},
    "kept_float": [{"nodes": ["/stem/Conv"], "reason": "asked by the caller"},
                   {"node": "/head/Gemm", "reason": "recipe ort-x86-avx2: Gemm int8 kernels are slower"}]
                  + [{"node": f"/block{i}/conv/Conv", "op": "Conv",
                      "reason": f"sensitivity rank {i}: int8 alone, this layer gives output "
                                f"error 0.0{i} and top-1 agreement 0.97"} for i in range(1, 11)],
    "accuracy_aware": {"target_agreement": 0.995, "measured_on": "calibration set (200 samples)",
                       "agreement_all_int8": 0.94, "agreement": 0.985, "error_all_int8": 0.2,
                       "error": 0.05, "met": False, "method": "isolated", "kept_float": []},
    "speed": {"engine": "onnxruntime", "host": "x86_64 x86-avx2", "faster_than_fp32": False,
              "points": [{"threads": 1, "fp32_ms": 1.0, "int8_ms": 1.462, "ratio": 1.462,
                          "faster": False},
                         {"threads": 2, "fp32_ms": 0.6, "int8_ms": 0.82, "ratio": 1.367,
                          "faster": False}],
              "note": "measured on the converting host, not on rpi4"},
}

#: TFLite fuses op names into one tensor name, far longer than a terminal line.
TFLITE_NAME = ("functional_1/very_long_backbone_name/block1_depthwise_relu_1/Relu;"
               "functional_1/very_long_backbone_name/block1_bn_1/FusedBatchNormV3;"
               "functional_1/very_long_backbone_name/block1_depthwise_1/depthwise")

TFLITE_INT8 = {
    "mode": "int8", "per_channel": True, "io": "float32",
    "calibration": {"method": "minmax", "samples": 128},
    "recipe": {"name": "litert-arm", "engine": "litert", "cpu_family": "arm-neon", "types": "S8S8",
               "reduce_range": False, "format": "qdq", "per_channel": True, "graph_prep": False,
               "float_op_types": [], "float_thin_convs": 0, "why": "TFLite full-integer is S8"},
    "kept_float": [{"node": TFLITE_NAME, "op": "CONV_2D",
                    "reason": "sensitivity rank 1: quantized on its own, its output is off by "
                              "31% of the float layer's"},
                   {"node": "functional_1/dense_1/MatMul", "op": "FULLY_CONNECTED",
                    "reason": "sensitivity rank 2: quantized on its own, its output is off by "
                              "9% of the float layer's"}],
    "accuracy_aware": {"target_agreement": 0.99, "measured_on": "calibration set (128 samples)",
                       "agreement_all_int8": 0.96, "agreement": 0.992, "met": True,
                       "method": "layer_error", "kept_float": []},
    "speed": {"engine": "litert", "host": "aarch64 arm-neon", "faster_than_fp32": True,
              "points": [{"threads": 1, "fp32_ms": 2.0, "int8_ms": 1.44, "ratio": 0.72,
                          "faster": True}]},
}


@pytest.fixture
def inspect_text(tmp_path, conv_onnx):
    """Pack a bundle with `quantization` as its record; return inspect's text output."""
    def run(quantization) -> str:
        bundle = pack_bundle(tmp_path / "q.edgepack", conv_onnx, name="q",
                             quantization=quantization)
        result = CliRunner().invoke(cli, ["inspect", str(bundle)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        return result.output
    return run


def _line(text: str, start: str) -> str:
    """The one output line that starts with `start` (after indentation)."""
    found = [line.strip() for line in text.splitlines() if line.strip().startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def test_onnx_int8_record_shows_recipe_layers_accuracy_and_speed(inspect_text):
    text = inspect_text(ONNX_INT8)
    assert _line(text, "quantization:") == "quantization: int8 (float32 I/O)"
    assert _line(text, "recipe:") == ("recipe: ort-x86-avx2 for onnxruntime on x86-avx2: U8S8, "
                                      "per-channel, 7-bit weights (reduce_range), QDQ")
    assert _line(text, "calibration:") == "calibration: percentile, 200 samples, percentile 99.99"
    assert _line(text, "graph prep:") == "graph prep: 64 -> 52 nodes, 12 BatchNorm fused"
    # 1 asked by the caller + 1 by the recipe + 10 by the sensitivity pass, the first 7 listed.
    assert _line(text, "kept in float:") == "kept in float: 12 layers"
    assert "/stem/Conv: asked by the caller" in text
    assert "/head/Gemm: recipe ort-x86-avx2: Gemm int8 kernels are slower" in text
    listed = [i for i in range(1, 11) if f"/block{i}/conv/Conv (Conv): sensitivity rank {i}" in text]
    assert listed == list(range(1, 1 + (MAX_LAYERS - 1) - 2))   # after the caller's and recipe's
    assert _line(text, "…") == f"… {12 - (MAX_LAYERS - 1)} more (edgepack inspect --json lists them all)"
    assert _line(text, "accuracy-aware:") == (
        "accuracy-aware: target top-1 agreement 0.9950 on calibration set (200 samples): "
        "all-int8 0.9400 -> final 0.9850, NOT met")
    assert re.search(r"faster than fp32 .*on x86_64 x86-avx2: NO$", _line(text, "speed:"))
    assert "int8/fp32 x1.46 at 1 thread, x1.37 at 2 threads;" in _line(text, "speed:")
    assert _line(text, "measured on") == "measured on the converting host, not on rpi4"


def test_tflite_record_shortens_fused_names_and_says_faster(inspect_text):
    text = inspect_text(TFLITE_INT8)
    assert _line(text, "quantization:") == "quantization: int8 (float32 I/O)"
    assert _line(text, "recipe:") == "recipe: litert-arm for litert on arm-neon: S8S8, per-channel, QDQ"
    assert _line(text, "kept in float:") == "kept in float: 2 layers"
    fused = _line(text, "…")
    shown = fused.split(" (CONV_2D")[0]
    assert len(shown) == MAX_NAME and TFLITE_NAME.split(";")[0].endswith(shown[1:])
    assert "(CONV_2D, +2 fused names): sensitivity rank 1" in fused
    assert TFLITE_NAME not in text
    assert ("functional_1/dense_1/MatMul (FULLY_CONNECTED): sensitivity rank 2: quantized on its "
            "own, its output is off by 9% of the float layer's") in text
    assert _line(text, "accuracy-aware:").endswith("all-int8 0.9600 -> final 0.9920, met")
    assert _line(text, "speed:") == ("speed: int8/fp32 x0.72 at 1 thread; faster than fp32 with "
                                     "litert on aarch64 arm-neon: yes")
    # No device named at conversion: still say where the numbers come from.
    assert _line(text, "measured on") == "measured on the converting host, not on the device"


def test_old_record_without_the_new_keys(inspect_text):
    text = inspect_text({"mode": "int8", "per_channel": True, "io": "float32",
                         "calibration": {"method": "minmax", "samples": None}})
    assert _line(text, "quantization:") == "quantization: int8 (per-channel, float32 I/O)"
    assert _line(text, "calibration:") == "calibration: minmax"
    for absent in ("recipe:", "kept in float", "accuracy-aware", "speed:", "not in the expected form"):
        assert absent not in text


def test_malformed_sections_are_shown_raw_and_the_rest_still_shows(inspect_text):
    record = dict(ONNX_INT8, recipe="ort-x86-avx2",
                  speed={"host": "x86_64", "faster_than_fp32": False, "points": "1 thread: x1.4"},
                  kept_float=[{"reason": "an entry naming no node"}],
                  accuracy_aware={"target_agreement": "high", "met": False})
    text = inspect_text(record)
    assert _line(text, "recipe:") == 'recipe: not in the expected form, raw: "ort-x86-avx2"'
    assert _line(text, "speed:").startswith('speed: not in the expected form, raw: {"host": "x86_64"')
    assert _line(text, "kept_float:") == ('kept_float: not in the expected form, raw: '
                                          '[{"reason": "an entry naming no node"}]')
    assert _line(text, "accuracy_aware:").startswith("accuracy_aware: not in the expected form")
    # Sections in good form around them are unaffected.
    assert _line(text, "calibration:") == "calibration: percentile, 200 samples, percentile 99.99"
    assert _line(text, "graph prep:") == "graph prep: 64 -> 52 nodes, 12 BatchNorm fused"
    # Without a readable recipe, the top-level flags are the only place they show.
    assert _line(text, "quantization:") == ("quantization: int8 (per-channel, 7-bit weights "
                                            "(reduce_range), float32 I/O)")


def test_fp16_shows_its_mode_and_fp32_shows_no_quantization(inspect_text):
    fp16 = inspect_text({"mode": "fp16", "io": "float32"})
    assert _line(fp16, "quantization:") == "quantization: fp16 (float32 I/O)"
    assert "recipe:" not in fp16 and "speed:" not in fp16
    fp32 = inspect_text(None)
    assert "quantization" not in fp32 and "outputs:" in fp32


def test_describing_quantization_imports_nothing_heavy():
    # inspect runs on devices with only edgepack[onnx]: no framework, no onnx package.
    probe = ("import sys, json, edgepack.cli.describe_quantization\n"
             "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "edgepack.cli.describe_quantization" in loaded
    assert not loaded & {"torch", "tensorflow", "keras", "onnx", "onnxruntime", "jax", "click"}


def test_malformed_validation_record_is_shown_raw(tmp_path, conv_onnx):
    validation = {"samples": 100, "passed": True, "outputs": {"logits": {"cosine": 0.99}},
                  "task": {"metric": "accuracy", "source": "n/a", "bundle": 0.9}}
    bundle = pack_bundle(tmp_path / "v.edgepack", conv_onnx, name="v", validation=validation)
    result = CliRunner().invoke(cli, ["inspect", str(bundle)], catch_exceptions=False)
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert _line(result.output, "validation:").startswith(
        'validation: not in the expected form, raw: {"samples": 100')


def test_fast_paths_are_described():
    from edgepack.cli.describe_quantization import quantization_lines
    lines = quantization_lines({"mode": "int8", "fast_paths": {
        "padded_convs": [{"node": "node_Conv_810", "channels": 3, "padded_to": 4}],
        "global_pools": ["node_mean"]}})
    assert "  fast paths: node_Conv_810 3->4 input channels; 1 mean as int8 global pool" in lines
    # a hand-edited value of the wrong form is shown raw, not raised
    assert quantization_lines({"mode": "int8", "fast_paths": [1]})[1].startswith(
        "  fast_paths: not in the expected form")
