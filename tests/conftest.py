"""Shared fixtures: tiny models and bundles built once per session under tmp dirs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/models.py

import models  # noqa: E402

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """With xdist (`-n`, `--dist loadgroup`), all tests of one directory run in one worker:
    each directory's session fixtures (trained models, brokers, emulated userlands) are
    built once, not once per worker."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(TESTS).parts
        item.add_marker(pytest.mark.xdist_group(parts[0] if len(parts) > 1 else "top"))


@pytest.fixture(scope="session")
def conv_onnx() -> bytes:
    return models.onnx_conv_classifier()


@pytest.fixture(scope="session")
def conv_tflite() -> bytes:
    return models.tflite_conv_classifier()


@pytest.fixture(scope="session")
def conv_tflite_int8() -> bytes:
    return models.tflite_conv_classifier(int8=True)


@pytest.fixture(scope="session")
def conv_bundle(tmp_path_factory, conv_onnx) -> Path:
    from edgepack.runtime import pack_bundle
    return pack_bundle(tmp_path_factory.mktemp("bundles") / "conv.edgepack", conv_onnx,
                       name="conv", labels=["cat", "dog", "bird", "fish"],
                       preprocess={"x": [{"op": "resize", "size": [8, 8]},
                                         {"op": "scale", "factor": 1 / 255},
                                         {"op": "layout", "from": "HWC", "to": "NCHW"}]},
                       postprocess={"logits": [{"op": "softmax"}, {"op": "topk", "k": 2}]})
