"""The manifest's specs must agree with the engine's own (issue 12 item 6), and run() checks
every static dimension, smaller as well as larger (item 34)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack.cli.main import cli
from edgepack.runtime import TensorSpec, load, pack_bundle
from edgepack.runtime.errors import BundleError, InputError

# tests/models.py's conv classifier: x float32 [?, 3, 8, 8] -> logits float32 [?, 4]
X = TensorSpec("x", (-1, 3, 8, 8), "float32")
LOGITS = TensorSpec("logits", (-1, 4), "float32")


def _pack(tmp_path, model, inputs=(X,), outputs=(LOGITS,)):
    return pack_bundle(tmp_path / "m.edgepack", model, name="m", inputs=list(inputs),
                       outputs=list(outputs))


@pytest.mark.parametrize("inputs, outputs, words", [
    ((X,), (TensorSpec("logits", (-1, 7), "float32"),),
     "manifest output 'logits' is float32 [?, 7] but the model has float32 [?, 4]"),
    ((TensorSpec("x", (-1, 3, 16, 8), "float32"),), (LOGITS,),
     "manifest input 'x' is float32 [?, 3, 16, 8] but the model has float32 [?, 3, 8, 8]"),
    ((TensorSpec("x", (-1, 3, 8, 8), "float16"),), (LOGITS,),
     "manifest input 'x' is float16 [?, 3, 8, 8] but the model has float32 [?, 3, 8, 8]"),
    ((X,), (TensorSpec("logits", (-1, 4, 1), "float32"),),
     "manifest output 'logits' is float32 [?, 4, 1] but the model has float32 [?, 4]"),
    ((X,), (TensorSpec("probs", (-1, 4), "float32"),),
     "manifest output 'probs' is not in the model"),
])
def test_a_manifest_that_contradicts_the_model_is_refused(tmp_path, conv_onnx, inputs, outputs,
                                                          words):
    path = _pack(tmp_path, conv_onnx, inputs, outputs)
    with pytest.raises(BundleError) as info:
        load(path)
    assert words in str(info.value)
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 3 and words in result.output


def test_an_undeclared_model_input_is_refused(tmp_path, conv_onnx):
    from edgepack.runtime.bundle import read_bundle
    from edgepack.runtime.model import Model
    bundle = read_bundle(_pack(tmp_path, conv_onnx))

    class ExtraInput:   # an engine whose model takes one more input than the manifest lists
        def __init__(self, engine):
            self.engine = engine

        def inputs(self):
            return [*self.engine.inputs(), TensorSpec("mask", (-1, 8), "bool")]

        def __getattr__(self, name):
            return getattr(self.engine, name)

    from edgepack.runtime import engines
    real_open = engines.open_engine
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engines, "open_engine", lambda *a, **k: ExtraInput(real_open(*a, **k)))
        with pytest.raises(BundleError, match="model input 'mask' bool \\[\\?, 8\\] is not in "
                                              "the manifest"):
            Model(bundle)


def test_declared_dynamic_where_the_model_is_static_is_fine(tmp_path, conv_onnx):
    narrowed = TensorSpec("x", (-1, 3, -1, 8), "float32")   # -1 over the model's 8
    fixed = TensorSpec("logits", (2, 4), "float32")          # a fixed batch over the model's ?
    with load(_pack(tmp_path, conv_onnx, (narrowed,), (fixed,))) as model:
        assert model.inputs[0].shape == (-1, 3, -1, 8)


@pytest.mark.parametrize("shape", [(1, 3, 4, 8), (1, 3, 16, 8), (1, 2, 8, 8), (1, 3, 8, 7)])
def test_run_refuses_a_smaller_or_larger_static_dimension(tmp_path, conv_onnx, shape):
    with load(_pack(tmp_path, conv_onnx)) as model:
        with pytest.raises(InputError, match=r"input 'x': expected shape \[\?, 3, 8, 8\], got "
                                             + repr(list(shape)).replace("[", r"\[")
                                             .replace("]", r"\]")):
            model.run({"x": np.zeros(shape, np.float32)})
        # the same element count in another shape is refused too, not reshaped
        with pytest.raises(InputError, match="expected shape"):
            model.run({"x": np.zeros((1, 8, 8, 3), np.float32)})


def test_a_float_tensor_for_a_quantized_input_is_told_to_quantize_not_astype():
    import numpy as np
    import pytest
    from edgepack.runtime.errors import InputError
    from edgepack.runtime.specs import QuantParams, TensorSpec
    spec = TensorSpec("x", (1, 4), "int8", None, QuantParams((0.5,), (3,)))
    with pytest.raises(InputError, match=r"quantize it first: q = round\(x / scale\) \+ "
                                         r"zero_point with scale \[0.5\] and zero_point \[3\]"):
        spec.check(np.zeros((1, 4), np.float32))
    with pytest.raises(InputError, match=r"astype\('int8'\)"):
        spec.check(np.zeros((1, 4), np.int16))
