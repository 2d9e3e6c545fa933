"""Validation's accuracy drop has the right sign (issue 12 item 34: flipping it passed every
test, whose only drop was 0), and provenance records the onnx package version (item 26)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/models.py

import models  # noqa: E402

from edgepack.converters.artifacts import ConvertedModel, SourceModel  # noqa: E402
from edgepack.converters.calibration import Samples  # noqa: E402
from edgepack.converters.config import Tolerances  # noqa: E402
from edgepack.converters.validation import validate  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A bundle of one random classifier, a 'source' that is another one, 200 inputs."""
    from edgepack.runtime import load, pack_bundle
    bundle_bytes = models.onnx_conv_classifier(seed=0)
    other = models.onnx_conv_classifier(seed=1)
    path = pack_bundle(tmp_path_factory.mktemp("drop") / "b.edgepack", bundle_bytes, name="b")
    x = np.random.default_rng(0).standard_normal((200, 3, 8, 8)).astype(np.float32)
    from edgepack.runtime.engines import open_engine
    source_engine = open_engine("onnxruntime", other)

    def run_source(inputs):
        return [source_engine.run({"x": inputs[0]})["logits"]]
    source = SourceModel("onnx", other, ("x",), (x[:1],), (None,), run_source, "test",
                         ("logits",))
    with load(path) as model:
        bundle_top = model.run({"x": x})["logits"].argmax(1)
    source_top = run_source([x])[0].argmax(1)
    assert np.mean(bundle_top == source_top) < 0.9  # the two models disagree often
    converted = ConvertedModel(bundle_bytes, "onnxruntime", "test")
    return path, converted, source, x, source_top, bundle_top


def report(setup, labels):
    path, converted, source, x, _, _ = setup
    tolerances = Tolerances(min_cosine=-1.0, max_rel_error=1e9, min_top1_agreement=0.0,
                            max_drop=1.0)
    return validate(source, converted, path, Samples({"x": x}, labels), tolerances,
                    "held-out", ["logits"])


def test_a_worse_bundle_has_a_positive_drop_and_fails(setup):
    labels = setup[4]  # the source is always right
    record = report(setup, labels)
    task = record["task"]
    assert task["source"] == 1.0 and task["bundle"] < 0.9
    assert task["drop_points"] == pytest.approx((1.0 - task["bundle"]) * 100)
    assert any(f.startswith("accuracy drop") for f in record["failures"])
    assert record["passed"] is False


def test_a_better_bundle_has_a_negative_drop_and_passes(setup):
    labels = setup[5]  # the bundle is always right
    record = report(setup, labels)
    task = record["task"]
    assert task["bundle"] == 1.0 and task["drop_points"] < -10
    assert record["failures"] == [] and record["passed"] is True


def test_onnx_source_records_the_onnx_version(tmp_path):
    import onnx

    from edgepack.converters import ConversionConfig, convert_model
    from edgepack.runtime import read_bundle
    model = tmp_path / "m.onnx"
    model.write_bytes(models.onnx_conv_classifier())
    convert_model(str(model), tmp_path / "o.edgepack", ConversionConfig())
    source = read_bundle(tmp_path / "o.edgepack").manifest.source
    assert source["framework"] == "onnx" and source["framework_version"] == onnx.__version__
