"""The README's detection section, run as written: pack a YOLOv8-style detector with
flags, inspect it, run it on a photo (--draw, --json), the Python snippet, serve it and
query /predict with curl (and V2 /infer with edgepack_pipeline), and pack a MediaPipe-style face detector from the TOML file.

The models are stand-ins built here (ONNX graphs whose outputs are fixed candidates, plus
0 x the input), so the expected boxes are known exactly: the letterbox maps a 96 x 128
photo to 64 x 64 with scale 0.5 and 8 rows of padding on top.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HEADING = "## Detection: boxes in photo pixels"

# normalized cx, cy, w, h, score(rectangle), score(disc) per candidate
CANDIDATES = np.array([
    [0.5, 0.5, 0.4, 0.3, 0.9, 0.0],     # kept
    [0.51, 0.5, 0.4, 0.3, 0.6, 0.0],    # suppressed by the first (IoU > 0.45)
    [0.2, 0.3, 0.1, 0.1, 0.05, 0.8],    # kept, class 1
    [0.8, 0.8, 0.1, 0.1, 0.1, 0.2],     # below the threshold
], np.float32)
# in source pixels: x = 64 * nx / 0.5, y = (64 * ny - 8) / 0.5
EXPECTED = [("rectangle", 0.9, [38.4, 28.8, 89.6, 67.2]), ("disc", 0.8, [19.2, 16.0, 32.0, 28.8])]


def constant_onnx(path: Path, inputs: dict, outputs: dict) -> None:
    """Outputs are constants + 0 * mean(first input) (so the graph depends on it)."""
    from onnx import TensorProto, helper, numpy_helper
    first = next(iter(inputs))
    nodes = [helper.make_node("ReduceMean", [first], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
    graph = helper.make_graph(
        nodes, "standin",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(v.shape))
         for n, v in outputs.items()], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    section = text[start:end if end > 0 else None]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


@pytest.fixture
def workdir(tmp_path):
    from PIL import Image
    constant_onnx(tmp_path / "det.onnx", {"images": (1, 3, 64, 64)},
                  {"output0": CANDIDATES.T[None]})
    rng = np.random.default_rng(0)
    raw_boxes = rng.normal(0, 4, (1, 896, 16))
    raw_boxes[..., 2:4] = rng.uniform(10, 30, (1, 896, 2))   # widths/heights are positive
    raw_scores = np.full((1, 896, 1), -10.0)
    raw_scores[0, [3, 5, 600], 0] = [4.0, 3.0, 2.0]
    constant_onnx(tmp_path / "face.onnx", {"input": (1, 128, 128, 3)},
                  {"regressors": raw_boxes, "classificators": raw_scores})
    (tmp_path / "labels.txt").write_text("rectangle\ndisc\n")
    photo = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    return tmp_path


def sh(code: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(detections):
    assert [(d["label"], round(d["score"], 4)) for d in detections] == \
        [(label, score) for label, score, _ in EXPECTED]
    for d, (_, _, box) in zip(detections, EXPECTED):
        np.testing.assert_allclose(d["box"], box, atol=1e-3)


@pytest.mark.slow
def test_readme_detection_section_runs(workdir):
    found = blocks()
    langs = [lang for lang, _ in found]
    assert langs == ["sh", "python", "sh", "toml", "sh"], langs
    pack_block, python_block, serve_block, toml_block, face_block = (code for _, code in found)

    out = sh(pack_block, workdir)
    assert "task: detect" in out and "decode: yolo(version=v8" in out and "nms(iou=0.45" in out
    check(json.loads(out.strip().splitlines()[-1])[0]["detections"])
    from PIL import Image
    drawn = np.asarray(Image.open(workdir / "boxes.jpg")).astype(int)
    photo = np.asarray(Image.open(workdir / "photo.jpg")).astype(int)
    assert drawn.shape == photo.shape
    # the rectangle's outline (red for class 0, 2 px) runs down x = 38..39 over rows 40..60
    redness = lambda a: (a[40:60, 38:40, 0] - a[40:60, 38:40, 1]).mean()  # noqa: E731
    assert redness(drawn) > 100 and abs(redness(photo)) < 40

    printed = subprocess.run([sys.executable, "-c", python_block], cwd=workdir,
                             capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == ["rectangle 0.9 [38, 29, 90, 67]",
                                           "disc 0.8 [19, 16, 32, 29]"]

    lines = [ln for ln in serve_block.strip().splitlines()]
    assert lines[0] == "edgepack serve det.edgepack --port 8000 &"
    port = free_port()
    server = subprocess.Popen([str(BIN / "edgepack"), "serve", "det.edgepack", "--port",
                               str(port)], cwd=workdir, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "serve did not become ready in 60 s"
                time.sleep(0.2)
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        reply = sh("\n".join(lines[1:]).replace("127.0.0.1:8000", f"127.0.0.1:{port}"), workdir)
        check(json.loads(reply)["outputs"]["detections"])
        # KServe V2 /infer with the bundle's pipeline: the same detections, as JSON text
        import struct
        jpeg = (workdir / "photo.jpg").read_bytes()
        head = json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(jpeg) + 4}}],
                           "parameters": {"edgepack_pipeline": True}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/det/infer",
            head + struct.pack("<I", len(jpeg)) + jpeg,
            {"Inference-Header-Content-Length": str(len(head))})
        with urllib.request.urlopen(request, timeout=30) as answer:
            outputs = json.loads(answer.read())["outputs"]
        assert [o["name"] for o in outputs] == ["detections"]
        check(json.loads(outputs[0]["data"][0]))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)

    (workdir / "face.toml").write_text(toml_block)
    sh(face_block, workdir)
    from edgepack.runtime import load
    with load(workdir / "face.edgepack") as model:
        faces = model.predict(np.zeros((200, 300, 3), np.uint8))["detections"]
    assert 1 <= len(faces) <= 3 and all(len(f["keypoints"]) == 6 for f in faces)
    assert all(0 <= f["box"][0] <= f["box"][2] <= 300 and 0 <= f["box"][1] <= f["box"][3] <= 200
               for f in faces)
