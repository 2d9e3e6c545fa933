"""Geometric preprocessing: a box drawn on a synthetic image is found where it was drawn
(within 1 px) after each resize/letterbox mode and the back-mapping; resize-shorter +
center-crop equals torchvision's Resize(256) + CenterCrop(224) (PIL path, reproduced here
with Pillow directly, since torchvision is not installable beside torch 2.13.0)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgepack.runtime.ops import Context, compile_steps
from edgepack.runtime.ops.image import letterbox_image, resize_image, shorter_side_size
from edgepack.runtime.ops.trace import Trace
from edgepack.runtime.specs import TensorSpec

SPEC = TensorSpec("image", (1, 320, 320, 3), "uint8", "NHWC")
BOX = (130.0, 70.0, 341.0, 222.0)   # x0, y0, x1, y1 on a 300 x 450 photo


def photo(height=300, width=450, box=BOX):
    image = np.full((height, width, 3), 30, np.uint8)
    x0, y0, x1, y1 = (int(v) for v in box)
    image[y0:y1, x0:x1] = 230
    return image


def found_box(image):
    """The bright rectangle's [x0, y0, x1, y1] in pixel-edge coordinates (level 130)."""
    mask = image[..., 0] > 130
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]


MODES = {
    "stretch": [{"op": "resize", "size": [320, 320]}],
    "shorter": [{"op": "resize", "aspect": "shorter", "size": 256}],
    "fit": [{"op": "resize", "aspect": "fit", "size": [320, 320]}],
    "longer": [{"op": "resize", "aspect": "longer", "size": 400}],
    "shorter+crop": [{"op": "resize", "aspect": "shorter", "size": 256},
                     {"op": "center_crop", "size": [224, 224], "reference": "torchvision"}],
    "letterbox": [{"op": "letterbox", "size": [320, 320]}],
    "letterbox top_left": [{"op": "letterbox", "size": [320, 320], "position": "top_left"}],
    "pad_then_resize": [{"op": "letterbox", "size": [320, 320], "order": "pad_then_resize",
                         "value": 0}],
    "pad_then_resize top_left opencv": [{"op": "letterbox", "size": [256, 320],
                                         "order": "pad_then_resize", "position": "top_left",
                                         "reference": "opencv"}],
    "upscale letterbox": [{"op": "letterbox", "size": [640, 640], "value": [114, 114, 114]}],
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_drawn_box_maps_back_within_one_pixel(mode):
    pipeline = compile_steps(MODES[mode], Context(spec=SPEC), "preprocess")
    trace = Trace()
    out = pipeline(photo(), trace)
    g = trace.geometry["image"]
    assert g.size == out.shape[:2] and g.source_size == (300, 450)
    back = g.boxes_to_source([found_box(out)])[0]
    np.testing.assert_allclose(back, BOX, atol=1.0)
    # and the drawn box mapped into the model image is where the pixels are
    np.testing.assert_allclose(g.boxes_to_model([BOX])[0], found_box(out), atol=1.0)


def test_letterbox_orders_place_the_padding_as_documented():
    image = photo()
    rtp, g1 = letterbox_image(image, (320, 320), 0)
    # 300x450 -> 213x320 (round(300*320/450) = 213), 107 rows of padding: 53 top, 54 bottom
    assert g1.offset == (53.0, 0.0) and (rtp[:53] == 0).all() and (rtp[53 + 213:] == 0).all()
    ptr, g2 = letterbox_image(image, (320, 320), 0, order="pad_then_resize")
    # padded to 450x450 first (75 rows top), then scaled by 320/450
    np.testing.assert_allclose(g2.offset, (75 * 320 / 450, 0.0))
    np.testing.assert_allclose(g2.scale, (320 / 450, 320 / 450))
    tl, g3 = letterbox_image(image, (320, 320), 0, position="top_left")
    assert g3.offset == (0.0, 0.0) and (tl[213:] == 0).all() and tl[212, 0, 0] == 30


@pytest.mark.parametrize("shape", [(480, 644), (333, 500), (500, 375), (256, 300), (719, 1280)])
def test_resize_shorter_and_center_crop_equal_torchvision(shape):
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    # torchvision Resize(256) on a PIL image: shorter side 256, other int(256 * long / short),
    # bilinear; CenterCrop(224): top = int(round((h - 224) / 2)), left likewise.
    h, w = shape
    new_w, new_h = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    pil = Image.fromarray(image)
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), Image.Resampling.BILINEAR)
    ref = np.asarray(pil)
    top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
    ref = ref[top:top + 224, left:left + 224]
    steps = [{"op": "resize", "aspect": "shorter", "size": 256},
             {"op": "center_crop", "size": 224, "reference": "torchvision"}]
    ours = compile_steps(steps, Context(spec=SPEC))(image)
    np.testing.assert_array_equal(ours, ref)     # Pillow installed: the same library call
    # the numpy path (no Pillow on the device) stays within the resize tolerance: 1/255
    slow = resize_image(image, shorter_side_size(shape, 256), "bilinear", "pillow", fast=False)
    slow = slow[top:top + 224, left:left + 224]
    assert np.abs(slow.astype(int) - ref.astype(int)).max() <= 1


def test_torchvision_rounding_differs_from_floor_on_odd_margins():
    # 480x644 -> 256x343: margin 119, torchvision round(59.5) = 60, floor 59
    image = np.arange(256 * 343, dtype=np.float32).reshape(256, 343)
    tv = compile_steps([{"op": "center_crop", "size": 224, "reference": "torchvision"}],
                       Context())(image)
    floor = compile_steps([{"op": "center_crop", "size": 224}], Context())(image)
    assert tv[0, 0] == 16 * 343 + 60 and floor[0, 0] == 16 * 343 + 59


def test_shorter_takes_one_number():
    from edgepack.runtime.errors import PipelineError
    with pytest.raises(PipelineError, match="one positive integer"):
        compile_steps([{"op": "resize", "aspect": "shorter", "size": [256, 256]}], Context())
