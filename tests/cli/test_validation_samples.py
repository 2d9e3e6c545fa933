"""Validation compares every held-out sample up to 10,000 and says when it compared fewer
(issue 12 item 24: it was silently capped at 256); `--validation-samples` sets the cap."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import invoke

from edgepack.converters import ConversionConfig
from edgepack.runtime.errors import ConversionError


@pytest.fixture
def held_out(cli_files):
    x = np.random.default_rng(0).standard_normal((300, 3, 8, 8)).astype(np.float32)
    np.save("val.npy", x)
    return x


def test_all_held_out_samples_by_default(held_out):
    result = invoke("convert", "m.onnx", "-o", "o.edgepack", "--validation-data", "val.npy",
                    "--json")
    assert result.exit_code == 0, result.output
    validation = json.loads(result.output[result.output.index("{"):])["validation"]
    assert validation["samples"] == 300 and "available" not in validation


def test_the_cap_is_settable_and_visible(held_out):
    result = invoke("convert", "m.onnx", "-o", "o.edgepack", "--validation-data", "val.npy",
                    "--validation-samples", "100")
    assert result.exit_code == 0, result.output
    assert "samples: 100 of 300 (held-out)" in result.output
    from edgepack.runtime import read_bundle
    record = read_bundle("o.edgepack").manifest.validation
    assert record["samples"] == 100 and record["available"] == 300


def test_config_limit():
    assert ConversionConfig().validation_limit == 10_000
    assert ConversionConfig(validation_samples=5).validation_limit == 5
    with pytest.raises(ConversionError, match="validation_samples must be a positive integer"):
        ConversionConfig(validation_samples=0)
