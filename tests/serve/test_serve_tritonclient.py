"""Interoperability with a V2 client we did not write: NVIDIA's tritonclient[http]."""
from __future__ import annotations

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=2)
    yield c
    c.close()


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("adder") and client.is_model_ready("adder", "2")
    assert not client.is_model_ready("adder", "1")
    meta = client.get_model_metadata("adder")
    assert meta["versions"] == ["2"]
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
    assert client.get_server_metadata()["name"] == "edgepack"
    config = client.get_model_config("color")
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32",
                                "dims": [-1, 4, 4, 3]}]
    assert config["max_batch_size"] == 0 and config["version_policy"] == "latest"
    index = {(m["name"], m["version"]): m["state"]
             for m in client.get_model_repository_index()}
    assert index == {("adder", "1"): "UNAVAILABLE", ("adder", "2"): "READY",
                     ("color", "1"): "READY"}


@pytest.mark.parametrize("binary_in, binary_out", [(True, True), (False, False),
                                                   (True, False), (False, True)])
def test_infer_with_binary_and_json_tensors(client, binary_in, binary_out):
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    out = httpclient.InferRequestedOutput("y", binary_data=binary_out)
    result = client.infer("adder", [inp], outputs=[out], request_id="t1")
    y = result.as_numpy("y")
    assert y.dtype == np.float32 and y.shape == (5, 4)
    # Binary transport is bit-exact; JSON goes through decimal text, float32 round trip
    # through Python's repr of a float64 is exact too.
    np.testing.assert_array_equal(y, x + np.float32(2.0))
    response = result.get_response()
    assert response["model_version"] == "2" and response["id"] == "t1"


def test_default_request_binary_outputs_and_pinned_version(client):
    x = np.zeros((1, 4), np.float32)
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    # No outputs named: tritonclient sets binary_data_output=true for all outputs.
    result = client.infer("adder", [inp], model_version="2")
    np.testing.assert_array_equal(result.as_numpy("y"), np.full((1, 4), 2.0, np.float32))


def test_classification_extension(client):
    image = np.zeros((1, 4, 4, 3), np.float32)
    image[..., 1] = 0.7
    inp = httpclient.InferInput("image", list(image.shape), "FP32")
    inp.set_data_from_numpy(image)
    out = httpclient.InferRequestedOutput("logits", class_count=1)
    top = client.infer("color", [inp], outputs=[out]).as_numpy("logits")
    score, index, label = top[0, 0].decode().split(":")
    assert (int(index), label) == (1, "green") and abs(float(score) - 0.7) < 1e-5


def test_errors_surface_as_client_exceptions(client):
    inp = httpclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match=r"must have shape \[-1, 4\]"):
        client.infer("adder", [inp])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nosuch", [inp])


def test_jpeg_through_the_bundle_pipeline(client):
    pytest.importorskip("PIL")
    import io
    import json

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 40, 220)).save(buf, format="JPEG")
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([buf.getvalue()], dtype=object))
    result = client.infer("color", [inp], parameters={"edgepack_pipeline": True})
    (text,) = result.as_numpy("logits")
    top = json.loads(text)
    assert [t["label"] for t in top] == ["blue", "green"]
    assert top[0]["score"] > top[1]["score"] > 0
