"""pack's geometry/detection flags write the documented steps; bad combinations are one
clear error with the input exit code (2); run --draw refuses what it cannot draw."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack.cli.main import cli
from edgepack.runtime import read_bundle
from tests.detection.test_readme_detection import CANDIDATES, constant_onnx
from tests.models import onnx_conv_classifier


@pytest.fixture
def det(tmp_path):
    constant_onnx(tmp_path / "det.onnx", {"images": (1, 3, 64, 64)},
                  {"output0": CANDIDATES.T[None]})
    return tmp_path / "det.onnx"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_resize_shorter_center_crop_steps(tmp_path):
    model = tmp_path / "c.onnx"
    model.write_bytes(onnx_conv_classifier(size=224))
    result = invoke("pack", model, "-o", tmp_path / "c.edgepack", "--resize-shorter", 256,
                    "--center-crop", 224, "--scale", 0.00392157, "--layout", "HWC:NCHW")
    assert result.exit_code == 0, result.output
    steps = read_bundle(tmp_path / "c.edgepack").manifest.preprocess["x"]
    assert steps[:2] == [
        {"op": "resize", "aspect": "shorter", "size": 256, "method": "bilinear",
         "reference": "pillow"},
        {"op": "center_crop", "size": [224, 224], "reference": "torchvision"}]


def test_letterbox_sigmoid_detect_steps(det, tmp_path):
    result = invoke("pack", det, "-o", tmp_path / "d.edgepack", "--letterbox", "64,64",
                    "--letterbox-order", "pad_then_resize", "--pad-value", 0,
                    "--layout", "HWC:NCHW", "--sigmoid", "output0", "--detect", "yolov5",
                    "--iou", 0.3, "--max-detections", 5, "--agnostic")
    assert result.exit_code == 0, result.output
    m = read_bundle(tmp_path / "d.edgepack").manifest
    assert m.preprocess["images"][0] == {"op": "letterbox", "size": [64, 64], "value": 0,
                                         "order": "pad_then_resize", "method": "bilinear",
                                         "reference": "pillow"}
    assert m.postprocess == {"output0": [{"op": "sigmoid"}]}
    assert m.task == {"kind": "detect"}
    assert m.decode == ({"op": "yolo", "version": "v5", "coordinates": "pixels",
                         "score_threshold": 0.25},
                        {"op": "nms", "iou": 0.3, "max_detections": 5, "mode": "hard",
                         "agnostic": True})
    shown = invoke("inspect", tmp_path / "d.edgepack")
    assert "task: detect" in shown.output
    assert "decode: yolo(version=v5, coordinates=pixels, score_threshold=0.25) -> " \
           "nms(iou=0.3, max_detections=5, mode=hard, agnostic=True)" in shown.output


@pytest.mark.parametrize("args, words", [
    (["--resize", "64,64", "--letterbox", "64,64"], "--resize and --letterbox both resize"),
    (["--sigmoid", "scores"], "--sigmoid 'scores': the model's outputs are ['output0']"),
    (["--letterbox", "64,x"], "--letterbox '64,x' must be HEIGHT,WIDTH"),
])
def test_bad_flags_exit_2_with_one_clear_line(det, tmp_path, args, words):
    result = CliRunner().invoke(cli, ["pack", str(det), "-o", str(tmp_path / "x.edgepack"),
                                      *args])
    assert result.exit_code == 2, result.output
    assert words in result.output


def test_detect_and_a_decode_table_conflict(det, tmp_path):
    table = tmp_path / "p.json"
    table.write_text(json.dumps({"decode": [{"op": "yolo"}, {"op": "nms"}]}))
    result = CliRunner().invoke(cli, ["pack", str(det), "--pipeline", str(table),
                                      "--detect", "yolov8", "-o", str(tmp_path / "x.edgepack")])
    assert result.exit_code == 2 and "give one of them" in result.output


def test_a_decoder_without_nms_is_refused_at_pack(det, tmp_path):
    table = tmp_path / "p.json"
    table.write_text(json.dumps({"task": {"kind": "detect"}, "decode": [{"op": "yolo"}]}))
    result = CliRunner().invoke(cli, ["pack", str(det), "--pipeline", str(table),
                                      "-o", str(tmp_path / "x.edgepack")])
    assert result.exit_code == 2 and "end with 'yolo'" in result.output and "nms" in result.output


def test_draw_needs_a_detection_bundle_and_one_image(det, tmp_path):
    from PIL import Image
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "p.png")
    model = tmp_path / "c.onnx"
    model.write_bytes(onnx_conv_classifier(size=64))
    assert invoke("pack", model, "-o", tmp_path / "c.edgepack", "--resize", "64,64",
                  "--layout", "HWC:NCHW").exit_code == 0
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "c.edgepack"),
                                      str(tmp_path / "p.png"), "--draw", str(tmp_path / "o.jpg")])
    assert result.exit_code == 2 and "needs a detection bundle" in result.output
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert invoke("pack", det, "-o", tmp_path / "d.edgepack", "--resize", "64,64",
                  "--labels", tmp_path / "labels.txt", "--layout", "HWC:NCHW", "--detect", "yolov8",
                  "--box-coordinates", "normalized").exit_code == 0
    two = CliRunner().invoke(cli, ["run", str(tmp_path / "d.edgepack"), str(tmp_path / "p.png"),
                                   str(tmp_path / "p.png"), "--draw", str(tmp_path / "o.jpg")])
    assert two.exit_code == 2 and "exactly one input image" in two.output
    ok = invoke("run", tmp_path / "d.edgepack", tmp_path / "p.png", "--draw", tmp_path / "o.png")
    assert ok.exit_code == 0 and (tmp_path / "o.png").stat().st_size > 0
