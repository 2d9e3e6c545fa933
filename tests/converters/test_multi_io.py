"""Two inputs, two outputs: names and output order survive every path (fp32, rel <= 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.converters import ConversionConfig, convert_model
from edgepack.runtime import load


@pytest.fixture(scope="module")
def pair_data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 6)).astype(np.float32), \
        rng.standard_normal((40, 3)).astype(np.float32)


def _check(result, count=2):
    outputs = result.validation["outputs"]
    assert len(outputs) == count
    for stats in outputs.values():
        assert stats["rel_error"] <= 1e-5, stats


@pytest.mark.parametrize("target", ["tflite", "onnx"])
def test_keras_two_inputs_two_outputs(tmp_path, pair_data, target):
    pytest.importorskip("tensorflow")
    import keras
    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    # Different widths so a swapped output order cannot pass validation.
    model = keras.Model([a, b], [keras.layers.Dense(5)(h), keras.layers.Dense(2)(h)])
    result = convert_model(model, tmp_path / "m.edgepack", ConversionConfig(target=target),
                           validation_data={"a": pair_data[0], "b": pair_data[1]})
    _check(result)


def test_torch_two_inputs_two_outputs(tmp_path, pair_data):
    torch = pytest.importorskip("torch")

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fa, self.fb = torch.nn.Linear(6, 5), torch.nn.Linear(3, 2)

        def forward(self, left, right):
            return self.fa(left), self.fb(right)

    result = convert_model(Two(), tmp_path / "m.edgepack", ConversionConfig(),
                           example_inputs=(pair_data[0][:1], pair_data[1][:1]),
                           validation_data={"left": pair_data[0], "right": pair_data[1]})
    _check(result)
    with load(result.path) as model:
        assert [s.name for s in model.inputs] == ["left", "right"]
        assert [s.name for s in model.outputs] == ["output_0", "output_1"]
