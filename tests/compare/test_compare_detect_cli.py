"""`edgepack compare --pipeline det.toml --class-names names.txt`: the task and decode steps
go into every bundle, and each row is judged by detection agreement (DESIGN §7), not by
top-1 of a raw tensor a detector does not have."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from edgepack.cli.main import cli
from tests.detection.test_readme_detection import CANDIDATES

PIPELINE = """
[task]
kind = "detect"

[[decode]]
op = "yolo"
coordinates = "normalized"

[[decode]]
op = "nms"
"""


def _moving_detector(path) -> None:
    """A YOLO-layout [1, 6, 4] output whose boxes move with the frame's mean brightness (a
    constant output would be refused as a broken model)."""
    from onnx import TensorProto, helper, numpy_helper
    shift = np.zeros_like(CANDIDATES.T[None])
    shift[0, 0] = shift[0, 1] = 0.2   # box centres x, y follow the mean
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["shift", "mean"], ["moved"]),
         helper.make_node("Add", ["base", "moved"], ["output0"])],
        "moving", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 4])],
        [numpy_helper.from_array(CANDIDATES.T[None].astype(np.float32), "base"),
         numpy_helper.from_array(shift, "shift")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def _files(tmp_path):
    _moving_detector(tmp_path / "det.onnx")
    rng = np.random.default_rng(0)
    frames = rng.random((12, 3, 64, 64), np.float32) * rng.random((12, 1, 1, 1))
    np.savez(tmp_path / "frames.npz", images=frames.astype(np.float32))
    (tmp_path / "det.toml").write_text(PIPELINE)
    (tmp_path / "names.txt").write_text("rectangle\ndisc\n")


def test_compare_judges_a_detector_by_detection_agreement(tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [
        "compare", "det.onnx", "--data", "frames.npz", "--targets", "onnx", "--modes", "none",
        "--pipeline", "det.toml", "--class-names", "names.txt", "--no-memory",
        "--rounds", "1", "--block", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    (row,) = report["rows"]
    detection = row["accuracy"]["detection"]
    # the converted detector finds exactly the source's two boxes on every held-out frame
    assert detection["source_detections"] == 2 * row["accuracy"]["samples"], detection
    assert detection["matched"] == detection["source_detections"], detection
    assert detection["agreement"] == 1.0 and detection["mean_iou"] > 0.999, detection
    assert report["metric"] == "detection_agreement"


def test_compare_pipeline_takes_only_task_and_decode(tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "det.toml").write_text(PIPELINE + '\n[preprocess]\nimages = []\n')
    result = CliRunner().invoke(cli, [
        "compare", "det.onnx", "--data", "frames.npz", "--pipeline", "det.toml"])
    assert result.exit_code == 2, result.output
    assert "compare --pipeline takes [task] and [[decode]]; ['preprocess']" in result.output
