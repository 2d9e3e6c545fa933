"""Calibration/validation data in every accepted form, and clear errors for bad data."""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.converters.calibration import Samples, load_samples
from edgepack.runtime.errors import ConversionError

EXAMPLE = (np.zeros((1, 1, 8, 8), np.float32),)


def test_npy_and_npz_with_labels(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 1, 8, 8))  # float64 on purpose
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "d.npz", input=x, labels=np.arange(10))
    a = load_samples(tmp_path / "x.npy", ("input",), EXAMPLE)
    assert a.arrays["input"].dtype == np.float32 and len(a) == 10 and a.labels is None
    b = load_samples(str(tmp_path / "d.npz"), ("input",), EXAMPLE)
    np.testing.assert_array_equal(b.labels, np.arange(10))
    np.testing.assert_allclose(b.arrays["input"], x.astype(np.float32))


def test_iterable_of_single_samples_and_pairs():
    rng = np.random.default_rng(0)
    items = [rng.standard_normal((1, 8, 8)).astype(np.float32) for _ in range(5)]
    s = load_samples(iter(items), ("input",), EXAMPLE)
    assert s.arrays["input"].shape == (5, 1, 8, 8)
    pairs = [(x, i % 3) for i, x in enumerate(items)]
    s = load_samples(pairs, ("input",), EXAMPLE)
    np.testing.assert_array_equal(s.labels, [0, 1, 2, 0, 1])


def test_image_folder_runs_the_runtime_preprocessing(tmp_path):
    from PIL import Image
    from edgepack.runtime.ops import apply_steps
    steps = [{"op": "color", "to": "GRAY"}, {"op": "resize", "size": [8, 8]},
             {"op": "scale", "factor": 1 / 255}, {"op": "layout", "from": "HWC", "to": "CHW"}]
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    s = load_samples(tmp_path, ("input",), EXAMPLE, preprocess={"input": steps},
                     class_names=("a", "b"))
    assert s.arrays["input"].shape == (6, 1, 8, 8)
    np.testing.assert_array_equal(s.labels, [0, 0, 0, 1, 1, 1])
    first = np.asarray(Image.open(tmp_path / "a" / "0.png").convert("RGB"))
    np.testing.assert_allclose(s.arrays["input"][0], apply_steps(steps, first), atol=1e-6)


def test_image_folder_without_preprocess_is_refused(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ConversionError, match="need the bundle's preprocessing"):
        load_samples(tmp_path, ("input",), EXAMPLE)


@pytest.mark.parametrize("data, message", [
    (np.zeros((4, 3, 8, 8), np.float32), r"samples of shape \[3, 8, 8\] but the model takes "
                                         r"\[1, 8, 8\]"),
    (np.full((4, 1, 8, 8), np.nan, np.float32), "contains inf or NaN"),
    ({"image": np.zeros((4, 1, 8, 8))}, None),
    (42, "cannot read calibration data of type int"),
])
def test_bad_data(data, message):
    if message is None:  # one input, one array under another name: taken positionally
        assert len(load_samples(data, ("input",), EXAMPLE)) == 4
        return
    with pytest.raises(ConversionError, match=message):
        load_samples(data, ("input",), EXAMPLE)


def test_multi_input_needs_names():
    ex = (np.zeros((1, 3)), np.zeros((1, 2)))
    with pytest.raises(ConversionError, match="pass calibration data as a dict"):
        load_samples(np.zeros((4, 3)), ("a", "b"), ex)
    s = load_samples({"a": np.zeros((4, 3)), "b": np.ones((4, 2))}, ("a", "b"), ex)
    assert isinstance(s, Samples) and len(s) == 4
