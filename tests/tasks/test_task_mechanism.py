"""The shared DESIGN §7 machinery: encode/decode steps, the call Trace and its geometry,
assets and examples in the manifest. Task-specific ops have their own tests."""
from __future__ import annotations

import io

import numpy as np
import pytest

from edgepack.runtime import load, pack_bundle
from edgepack.runtime.errors import PipelineError
from edgepack.runtime.ops import register_decode, register_encode, traced, register_op
from edgepack.runtime.ops.trace import Geometry, Trace
from models import onnx_conv_classifier


@register_encode("test_sum_encode")
def _sum_encode(p, ctx):
    """Raw list of numbers -> an image whose pixels are their mean (exercises encode)."""
    name = ctx.inputs[0].name

    def encode(raw, trace):
        trace.notes["test_sum_encode"] = len(raw)
        return {name: np.full((8, 8, 3), float(np.mean(raw)), np.float32)}
    return encode


@register_op("test_record_shape")
def _record(p, ctx):
    @traced
    def record(x, trace):
        g = trace.image_geometry(ctx.spec.name, x)
        trace.geometry[ctx.spec.name] = g.resized(x.shape[0] * 2, x.shape[1] * 2)
        return x
    return record


@register_decode("test_argmax_decode")
def _argmax_decode(p, ctx):
    asset = ctx.asset(p.string("asset"), p.where)
    names = asset.decode().split()

    def decode(outputs, trace):
        logits = outputs[ctx.outputs[0].name]
        g = trace.primary_geometry()
        return {"best": names[int(np.argmax(logits[0]))],
                "items": trace.notes.get("test_sum_encode"),
                "model_size": list(g.size) if g else None}
    return decode


@pytest.fixture
def task_bundle(tmp_path):
    return pack_bundle(
        tmp_path / "t.edgepack", onnx_conv_classifier(seed=3), name="t",
        preprocess={"x": [{"op": "test_record_shape"},
                          {"op": "layout", "from": "HWC", "to": "NCHW"}]},
        task={"kind": "test"},
        encode=[{"op": "test_sum_encode"}],
        decode=[{"op": "test_argmax_decode", "asset": "names"}],
        assets={"names": b"a b c d"},
        examples={"x": {"range": [0.0, 0.5]}})


def test_encode_preprocess_decode_share_one_trace(task_bundle):
    with load(task_bundle) as model:
        assert model.task == "test"
        result = model.predict([0.25, 0.5, 0.75])
        x = np.full((1, 3, 8, 8), 0.5, np.float32)
        logits = model.run({"x": x})["logits"]
        assert result == {"best": ["a", "b", "c", "d"][int(np.argmax(logits[0]))],
                          "items": 3, "model_size": [16, 16]}


def test_assets_are_checksummed_members(task_bundle):
    with load(task_bundle) as model:
        assert model.manifest.assets == {"names": "assets/names"}
        assert model.manifest.files["assets/names"].bytes == 7
        assert model.assets["names"] == b"a b c d"


def test_examples_drive_example_feeds(task_bundle):
    with load(task_bundle) as model:
        x = model.example_feeds(seed=1)["x"]
        assert x.shape == (1, 3, 8, 8) and x.min() >= 0.0 and x.max() <= 0.5


def test_a_missing_asset_fails_at_pack_time(tmp_path):
    with pytest.raises(PipelineError, match="asset 'names' is not in this bundle"):
        pack_bundle(tmp_path / "t.edgepack", onnx_conv_classifier(), name="t",
                    decode=[{"op": "test_argmax_decode", "asset": "names"}])


def test_unknown_decode_op_lists_the_known_ones(tmp_path):
    with pytest.raises(PipelineError, match="unknown decode op 'nope'"):
        pack_bundle(tmp_path / "t.edgepack", onnx_conv_classifier(), name="t",
                    decode=[{"op": "nope"}])


def test_geometry_round_trip_resize_crop_pad():
    g = Geometry.of((480, 640, 3))
    g = g.resized(240, 320).cropped(10, 20, 200, 280).padded(5, 7, 224, 300)
    boxes = np.array([[100.0, 50.0, 300.0, 400.0], [0.0, 0.0, 640.0, 480.0]])
    back = g.boxes_to_source(g.boxes_to_model(boxes), clip=False)
    np.testing.assert_allclose(back, boxes, atol=1e-9)
    # a box in model pixels maps by hand: x_src = (x - 7 + 20) * 2, y_src = (y - 5 + 10) * 2
    np.testing.assert_allclose(g.boxes_to_source([[7.0, 5.0, 17.0, 25.0]]),
                               [[40.0, 20.0, 60.0, 60.0]])
    # clipped to the source image
    np.testing.assert_allclose(g.boxes_to_source([[-50.0, -50.0, 400.0, 400.0]]),
                               [[0.0, 0.0, 640.0, 480.0]])


def test_trace_primary_geometry_needs_one_image_or_a_name():
    t = Trace()
    assert t.primary_geometry() is None
    t.image_geometry("a", np.zeros((4, 6)))
    assert t.primary_geometry().size == (4, 6)
    t.image_geometry("b", np.zeros((2, 2)))
    assert t.primary_geometry() is None and t.primary_geometry("b").size == (2, 2)
