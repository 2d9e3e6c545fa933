"""Images over HTTP: one decoder shared with `run` and calibration, a pixel limit, clear errors."""
from __future__ import annotations

import io
import json
import zlib
import struct
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edgepack.converters.calibration import load_samples
from edgepack.inputs import read_array
from edgepack.runtime import load, pack_bundle
from edgepack.runtime.serve import ModelServer, ServeConfig
from serve_fixtures import _model_bytes, call

GRAY_STEPS = [{"op": "color", "from": "RGB", "to": "GRAY"}, {"op": "resize", "size": [4, 4]},
              {"op": "scale", "factor": 1 / 255}]


def make_gray(path: Path) -> Path:
    """pixels = the preprocessed 4x4x1 image, flattened: the output shows what the model saw."""
    shape = numpy_helper.from_array(np.array([-1, 16], np.int64), "shape")
    onnx_bytes = _model_bytes(
        [helper.make_node("Reshape", ["image", "shape"], ["pixels"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 4, 4, 1])],
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 16])], [shape])
    path.parent.mkdir(parents=True, exist_ok=True)
    return pack_bundle(path, onnx_bytes, name="gray", version="1",
                       preprocess={"image": GRAY_STEPS})


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR announces width x height, with no pixel data at all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def gray_png_9000() -> bytes:
    """A real, decodable 9000 x 9000 gray PNG of ~80 KB (zeros compress well)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    side = 9000
    packer = zlib.compressobj(9)
    row = b"\0" * (side + 1)                    # filter byte 0 + one row of black pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


@pytest.fixture
def gray_server(tmp_path: Path):
    make_gray(tmp_path / "repo" / "gray" / "1.edgepack")
    config = ServeConfig(host="127.0.0.1", port=0, workers=1, poll_interval=0,
                         engine_threads=1, max_image_pixels=1_000_000)
    with ModelServer(tmp_path / "repo", config) as srv:
        yield srv


def test_same_gray_png_gives_the_same_input_in_run_calibration_and_http(gray_server,
                                                                         tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(pixels, "L").save(folder / "g.png")
    png = (folder / "g.png").read_bytes()
    expected = np.asarray(
        Image.fromarray(pixels).resize((4, 4), Image.Resampling.BILINEAR), np.float32) / 255

    # edgepack run: the CLI's file reader, then the bundle's pipeline
    with load(tmp_path / "repo" / "gray" / "1.edgepack") as model:
        via_run = np.asarray(model.predict(read_array(folder / "g.png"))["pixels"])
    # calibration: an image folder through the same preprocessing
    samples = load_samples(folder, ("image",), (np.zeros((1, 4, 4, 1), np.float32),),
                           preprocess={"image": GRAY_STEPS})
    via_calibration = samples.arrays["image"].reshape(1, 16)
    # HTTP /predict
    status, _, body = call("POST", f"{gray_server.url}/v2/models/gray/predict", png,
                           {"Content-Type": "image/png"})
    assert status == 200, body
    via_http = np.asarray(json.loads(body)["outputs"]["pixels"], np.float32).reshape(1, 16)

    np.testing.assert_array_equal(via_run, via_calibration)
    np.testing.assert_array_equal(via_run, via_http)
    # and it is the gray image itself (RGB -> GRAY gives the gray values back exactly)
    np.testing.assert_allclose(via_run.reshape(4, 4), expected, atol=1 / 255 + 1e-6)


def test_image_over_the_pixel_limit_is_refused_from_its_header(gray_server):
    png = gray_png_9000()
    assert len(png) < 300_000
    status, _, body = call("POST", f"{gray_server.url}/v2/models/gray/predict", png,
                           {"Content-Type": "image/png"})
    assert status == 413
    assert json.loads(body)["error"] == (
        "input 'image': image of 9000x9000 (81,000,000 pixels) is over the limit of "
        "1,000,000 pixels; send a smaller image or raise the limit (max_pixels / edgepack "
        "serve --max-image-pixels)")
    # the server is still serving
    small = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small, "PNG")
    assert call("POST", f"{gray_server.url}/v2/models/gray/predict", small.getvalue(),
                {"Content-Type": "image/png"})[0] == 200


def test_pipeline_bytes_input_uses_the_same_limit(gray_server):
    png = gray_png_9000()
    head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(png) + 4}}],
                       "parameters": {"edgepack_pipeline": True}}).encode()
    status, _, body = call("POST", f"{gray_server.url}/v2/models/gray/infer",
                           head + struct.pack("<I", len(png)) + png,
                           {"Inference-Header-Content-Length": str(len(head))})
    assert status == 413 and "9000x9000" in json.loads(body)["error"]


def test_bad_image_error_says_what_the_bytes_were(gray_server):
    status, _, body = call("POST", f"{gray_server.url}/v2/models/gray/predict",
                           b"GIF89a not really", {"Content-Type": "image/gif"})
    assert status == 400
    error = json.loads(body)["error"]
    assert error.startswith("input 'image': 17 bytes starting 47 49 46 38 39 61 20 6e "
                            "(GIF signature)")
    assert "object at 0x" not in error and "BytesIO" not in error


def test_npy_header_claiming_a_huge_array_is_refused_before_allocating(gray_server):
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 4, 4, 1), np.float32))
    data = buf.getvalue().replace(b"(1, 4, 4, 1)", b"(100000, 100000, 100, 1)")
    status, _, body = call("POST", f"{gray_server.url}/v2/models/gray/predict", data,
                           {"Content-Type": "application/x-npy"})
    assert status == 400
    assert "header announces shape [100000, 100000, 100, 1]" in json.loads(body)["error"]


def test_decompression_bomb_header_is_413_and_the_server_keeps_serving(gray_server):
    status, _, body = call("POST", f"{gray_server.url}/v2/models/gray/predict",
                           png_header_only(20000, 20000), {"Content-Type": "image/png"})
    assert status == 413
    assert "20000x20000 (400,000,000 pixels)" in json.loads(body)["error"]
    small = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small, "PNG")
    assert call("POST", f"{gray_server.url}/v2/models/gray/predict", small.getvalue(),
                {"Content-Type": "image/png"})[0] == 200
