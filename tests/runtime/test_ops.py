"""Pre/post-processing ops: numbers against reference libraries and hand-written numpy."""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.runtime.errors import PipelineError
from edgepack.runtime.ops import Context, apply_steps, compile_steps
from edgepack.runtime.ops.image import resize_image
from edgepack.runtime.specs import QuantParams, TensorSpec

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8)
SIZES = [(56, 56), (25, 9), (240, 320), (8, 8), (120, 75), (83, 129)]


@pytest.mark.parametrize("size", SIZES)
def test_resize_matches_pillow_within_one_level(size):
    from PIL import Image
    ours = resize_image(PHOTO, size, "bilinear", "pillow", fast=False).astype(int)
    ref = np.asarray(Image.fromarray(PHOTO).resize(size[::-1], Image.Resampling.BILINEAR))
    diff = np.abs(ours - ref.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.3      # stated tolerance: 1/255
    nearest = resize_image(PHOTO, size, "nearest", "pillow", fast=False)
    ref_n = np.asarray(Image.fromarray(PHOTO).resize(size[::-1], Image.Resampling.NEAREST))
    np.testing.assert_array_equal(nearest, ref_n)    # nearest is exact


@pytest.mark.parametrize("size", SIZES)
def test_resize_matches_opencv_within_one_level(size):
    cv2 = pytest.importorskip("cv2")
    ours = resize_image(PHOTO, size, "bilinear", "opencv", fast=False).astype(int)
    ref = cv2.resize(PHOTO, size[::-1], interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(ours - ref).max() <= 1
    nearest = resize_image(PHOTO, size, "nearest", "opencv", fast=False)
    np.testing.assert_array_equal(nearest, cv2.resize(PHOTO, size[::-1],
                                                       interpolation=cv2.INTER_NEAREST))


def test_resize_fast_path_agrees_with_numpy_path():
    for reference in ("pillow", "opencv"):
        fast = resize_image(PHOTO, (50, 70), "bilinear", reference, fast=True).astype(int)
        slow = resize_image(PHOTO, (50, 70), "bilinear", reference, fast=False).astype(int)
        assert fast.dtype == slow.dtype and np.abs(fast - slow).max() <= 1


def test_pillow_and_opencv_really_differ_when_shrinking():
    """Why `reference` exists: the two libraries disagree on downscaling."""
    from PIL import Image
    cv2 = pytest.importorskip("cv2")
    pil = np.asarray(Image.fromarray(PHOTO).resize((40, 30), Image.Resampling.BILINEAR)).astype(int)
    ocv = cv2.resize(PHOTO, (40, 30), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(pil - ocv).max() > 50


def test_float_resize_keeps_values_in_range_and_is_identity_at_same_size():
    image = RNG.random((10, 12, 2)).astype(np.float32)
    out = resize_image(image, (5, 6))
    assert out.dtype == np.float32 and out.shape == (5, 6, 2)
    assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6
    assert resize_image(image, (10, 12)) is image
    gray = resize_image(image[:, :, 0], (20, 24))
    assert gray.shape == (20, 24)


def test_crop_letterbox_color():
    crop = apply_steps([{"op": "center_crop", "size": [100, 100]}], PHOTO)
    np.testing.assert_array_equal(crop, PHOTO[10:110, 30:130])
    boxed = apply_steps([{"op": "letterbox", "size": [64, 64], "value": 0}], PHOTO)
    assert boxed.shape == (64, 64, 3)
    assert (boxed[:8] == 0).all() and (boxed[-8:] == 0).all()   # 120x160 -> 48x64, 8 rows pad
    bgr = apply_steps([{"op": "color", "from": "RGB", "to": "BGR"}], PHOTO)
    np.testing.assert_array_equal(bgr, PHOTO[:, :, ::-1])
    gray = apply_steps([{"op": "color", "to": "GRAY"}], PHOTO)
    from PIL import Image
    ref = np.asarray(Image.fromarray(PHOTO).convert("L")).astype(int)
    assert gray.shape == (120, 160, 1) and np.abs(gray[:, :, 0].astype(int) - ref).max() <= 1
    with pytest.raises(PipelineError, match="smaller than the crop"):
        apply_steps([{"op": "center_crop", "size": [500, 500]}], PHOTO)


def test_scale_normalize_layout_compose_like_hand_written_numpy():
    steps = [{"op": "scale", "factor": 1 / 255},
             {"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
             {"op": "layout", "from": "HWC", "to": "NCHW"}]
    out = apply_steps(steps, PHOTO)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    ref = ((PHOTO / np.float32(255) - mean) / std).transpose(2, 0, 1)[None]
    assert out.shape == (1, 3, 120, 160) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    back = apply_steps([{"op": "layout", "from": "NCHW", "to": "HWC"}], out)
    np.testing.assert_array_equal(back, out[0].transpose(1, 2, 0))


def test_quantize_dequantize_round_trip_from_spec():
    spec = TensorSpec("x", (1, 4), "int8", quantization=QuantParams((0.1,), (-3,)))
    ctx = Context(spec)
    values = np.array([[-12.0, 0.0, 0.25, 12.6]], np.float32)
    q = compile_steps([{"op": "quantize"}], ctx)(values)
    np.testing.assert_array_equal(q, np.array([[-123, -3, -1, 123]], np.int8))
    # out of range saturates instead of wrapping
    assert compile_steps([{"op": "quantize"}], ctx)(np.array([100.0]))[0] == 127
    d = compile_steps([{"op": "dequantize"}], ctx)(q)
    assert np.abs(d - values).max() <= 0.05 + 1e-6
    per_channel = apply_steps([{"op": "quantize", "scale": [1.0, 0.5], "zero_point": [0, 10],
                                "dtype": "uint8", "axis": 0}], np.array([[2.0], [2.0]]))
    np.testing.assert_array_equal(per_channel[:, 0], [2, 14])


def test_softmax_sigmoid_argmax_topk_with_labels():
    logits = np.array([[1.0, 3.0, 2.0, -1000.0], [0.0, 0.0, 5.0, 0.0]], np.float32)
    probs = apply_steps([{"op": "softmax"}], logits)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    e = np.exp(logits[0, :3] - 3)
    np.testing.assert_allclose(probs[0, :3], e / e.sum(), rtol=1e-6)
    sig = apply_steps([{"op": "sigmoid"}], np.array([-1000.0, 0.0, 1000.0, 2.0]))
    np.testing.assert_allclose(sig, [0.0, 0.5, 1.0, 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    np.testing.assert_array_equal(apply_steps([{"op": "argmax"}], logits), [1, 2])
    top = compile_steps([{"op": "topk", "k": 2}], Context(labels=["a", "b", "c", "d"]))(probs)
    assert [d["label"] for d in top[0]] == ["b", "c"] and [d["index"] for d in top[1]][0] == 2
    assert top[0][0]["score"] == pytest.approx(float(probs[0, 1]))


@pytest.mark.parametrize("step, words", [
    ({"op": "resize", "size": [0, 3]}, "size"),
    ({"op": "resize", "size": [3, 3], "method": "cubic"}, "method"),
    ({"op": "normalize", "mean": [0.5], "std": [0]}, "std"),
    ({"op": "normalize", "mean": [0.1, 0.2], "std": [1, 2, 3]}, "one per channel"),
    ({"op": "layout", "from": "HWC", "to": "NCD"}, "cannot map"),
    ({"op": "layout", "from": "HWC", "to": "HWW"}, "repeats"),
    ({"op": "topk", "k": 0}, ">= 1"),
    ({"op": "cast", "dtype": "float99"}, "dtype"),
    ({"op": "quantize"}, "scale"),
    ({"op": "sharpen"}, "unknown op"),
    ({"op": "softmax", "axes": 1}, "unknown parameter"),
])
def test_bad_steps_fail_at_compile_time_naming_the_step(step, words):
    with pytest.raises(PipelineError, match=words) as info:
        compile_steps([{"op": "scale", "factor": 1}, step], Context(), "preprocess['x']")
    assert "preprocess['x'][1]" in str(info.value)


def test_runtime_failure_names_step_and_shape():
    pipeline = compile_steps([{"op": "layout", "from": "HWC", "to": "CHW"}], Context(), "pre")
    with pytest.raises(PipelineError, match=r"pre\[0\] \(layout\).*\(4,\)"):
        pipeline(np.zeros(4))
