"""Every source form loads, and every documented failure is one clear ConversionError."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from edgepack.converters import ConversionConfig, convert_model
from edgepack.runtime import read_bundle
from edgepack.runtime.errors import ConversionError

from tiny_models import make_keras_cnn, make_torch_cnn

torch = pytest.importorskip("torch")


def _none_ok(result, rel=1e-5):
    (stats,) = result.validation["outputs"].values()
    assert stats["rel_error"] <= rel, stats
    return stats


def test_wrong_example_shape_is_named(tmp_path):
    with pytest.raises(ConversionError) as e:
        convert_model(make_torch_cnn(), tmp_path / "o.edgepack", ConversionConfig(),
                      example_inputs=np.zeros((1, 3, 8, 8), np.float32))
    assert "example input(s) of shape [1, 3, 8, 8] do not fit the model" in str(e.value)


def test_torch_model_without_examples_asks_for_shape(tmp_path):
    with pytest.raises(ConversionError, match="--input-shape"):
        convert_model(make_torch_cnn(), tmp_path / "o.edgepack", ConversionConfig())


def test_unsupported_torch_op_named_with_alternative(tmp_path):
    class Eig(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x).real

    with pytest.raises(ConversionError) as e:
        convert_model(Eig(), tmp_path / "o.edgepack", ConversionConfig(),
                      example_inputs=np.eye(3, dtype=np.float32)[None])
    assert "does not support op aten.linalg_eig" in str(e.value)
    assert "--target tflite" in str(e.value)


def test_fixed_batch_model_falls_back_and_says_so(tmp_path, nchw_data):
    class PinnedBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 3)

        def forward(self, x):
            return self.fc(x.reshape(2, 64))  # batch of exactly 2, hard-coded

    result = convert_model(PinnedBatch(), tmp_path / "o.edgepack", ConversionConfig(),
                           example_inputs=nchw_data[:2], validation_data=nchw_data[:8])
    assert any("fixed batch 2" in note for note in result.notes)
    manifest = read_bundle(result.path).manifest
    assert manifest.inputs[0].shape == (2, 1, 8, 8)
    assert "fixed batch 2" in manifest.source["notes"][0]
    _none_ok(result)


def test_torchscript_and_exported_program_files(tmp_path, nchw_data):
    model = make_torch_cnn()
    example = torch.from_numpy(nchw_data[:1])
    torch.jit.save(torch.jit.trace(model, example), str(tmp_path / "m.pt"))
    torch.export.save(torch.export.export(model, (example,)), str(tmp_path / "m.pt2"))
    for name in ("m.pt", "m.pt2"):
        result = convert_model(str(tmp_path / name), tmp_path / f"{name}.edgepack",
                               ConversionConfig(), example_inputs=nchw_data[:1],
                               validation_data=nchw_data[:32])
        _none_ok(result)
        assert read_bundle(result.path).manifest.source["file"] == name


def test_exported_program_supplies_its_own_example_shape(tmp_path, nchw_data):
    model = make_torch_cnn()
    program = torch.export.export(model, (torch.from_numpy(nchw_data[:1]),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    result = convert_model(str(tmp_path / "m.pt2"), tmp_path / "o.edgepack", ConversionConfig())
    assert result.validation["data"] == "random"
    _none_ok(result)


def test_pickled_module_is_refused_with_the_alternatives(tmp_path):
    torch.save(make_torch_cnn().state_dict(), str(tmp_path / "weights.pt"))
    with pytest.raises(ConversionError, match="module:factory"):
        convert_model(str(tmp_path / "weights.pt"), tmp_path / "o.edgepack", ConversionConfig(),
                      input_shapes=[(1, 1, 8, 8)])


def _write_factory(tmp_path, module: str, monkeypatch) -> None:
    """An importable `module:build` returning the tiny CNN with other (seed 99) weights."""
    (tmp_path / f"{module}.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom tiny_models import make_torch_cnn\n"
        "def build():\n    return make_torch_cnn(seed=99)\n" % str(_tests_dir()))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_module_factory_with_weights(tmp_path, nchw_data, monkeypatch):
    model = make_torch_cnn(seed=3)
    torch.save(model.state_dict(), str(tmp_path / "weights.pt"))
    _write_factory(tmp_path, "tiny_factory", monkeypatch)
    result = convert_model("tiny_factory:build", tmp_path / "o.edgepack", ConversionConfig(),
                           weights=tmp_path / "weights.pt", input_shapes=[(1, 1, 8, 8)],
                           validation_data=nchw_data[:16])
    _none_ok(result)
    from edgepack.runtime import load
    with load(result.path) as bundle:
        (out,) = bundle.run({bundle.inputs[0].name: nchw_data[:4]}).values()
    with torch.no_grad():
        expected = model(torch.from_numpy(nchw_data[:4])).numpy()  # seed 3 weights, not 99
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_module_factory_with_structurally_pruned_weights(tmp_path, nchw_data, monkeypatch):
    """`edgepack optimize prune` writes narrower layers than factory() builds; convert loads them."""
    from edgepack import optimize
    model = make_torch_cnn(seed=3).eval()
    pruned = optimize.prune_structured(model, torch.from_numpy(nchw_data[:2]),
                                       optimize.StructuredPruneConfig(amount=0.5))
    assert pruned.pruned and pruned.params_after < pruned.params_before  # really narrower
    optimize.save_weights(model, tmp_path / "pruned.pt")
    _write_factory(tmp_path, "pruned_factory", monkeypatch)
    result = convert_model("pruned_factory:build", tmp_path / "p.edgepack", ConversionConfig(),
                           weights=tmp_path / "pruned.pt", input_shapes=[(1, 1, 8, 8)],
                           validation_data=nchw_data[:16])
    from edgepack.runtime import load
    with load(result.path) as bundle:
        (out,) = bundle.run({bundle.inputs[0].name: nchw_data[:4]}).values()
    with torch.no_grad():
        expected = model(torch.from_numpy(nchw_data[:4])).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_bad_factory_spec(tmp_path):
    with pytest.raises(ConversionError, match="cannot import 'no_such_module_xyz:build'"):
        convert_model("no_such_module_xyz:build", tmp_path / "o.edgepack", ConversionConfig())


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        convert_model(str(tmp_path / "nope.keras"), tmp_path / "o.edgepack", ConversionConfig())
    (tmp_path / "model.bin").write_bytes(b"123")
    with pytest.raises(ConversionError, match="cannot tell the framework of model.bin"):
        convert_model(str(tmp_path / "model.bin"), tmp_path / "o.edgepack", ConversionConfig())


def _tests_dir():
    from pathlib import Path
    return Path(__file__).parent


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("keras")
    model = make_keras_cnn(seed=2)
    model.save(str(root / "m.keras"))
    model.save(str(root / "m.h5"))
    model.export(str(root / "saved"), format="tf_saved_model", verbose=False)
    return model, root


@pytest.mark.parametrize("name, target", [("m.keras", "tflite"), ("m.h5", "onnx"),
                                          ("saved", "tflite"), ("saved", "onnx")])
def test_keras_files_and_saved_model(keras_files, nhwc_data, tmp_path, name, target):
    model, root = keras_files
    result = convert_model(str(root / name), tmp_path / "o.edgepack",
                           ConversionConfig(target=target), validation_data=nhwc_data[:32])
    _none_ok(result)
    from edgepack.runtime import load
    with load(result.path) as bundle:
        feeds = {bundle.inputs[0].name: nhwc_data[:1]}
        (out,) = bundle.run(feeds).values()
    np.testing.assert_allclose(out, np.asarray(model(nhwc_data[:1])), rtol=1e-4, atol=1e-5)


def test_keras_dynamic_dims_need_a_shape(tmp_path):
    pytest.importorskip("tensorflow")
    import keras
    inp = keras.Input((None, None, 1))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp)))
    with pytest.raises(ConversionError, match="dynamic dimensions.*--input-shape"):
        convert_model(model, tmp_path / "o.edgepack", ConversionConfig(target="tflite"))
    result = convert_model(model, tmp_path / "o.edgepack", ConversionConfig(target="tflite"),
                           input_shapes=[(1, 12, 12, 1)])
    assert read_bundle(result.path).manifest.inputs[0].shape[1:] == (12, 12, 1)


@pytest.mark.parametrize("target", ["tflite", "onnx"])
def test_unsupported_tf_op_named_with_alternative(tmp_path, target):
    tf = pytest.importorskip("tensorflow")
    import keras
    inp = keras.Input((4, 4))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: tf.math.real(tf.linalg.eigvals(t)))(inp))
    with pytest.raises(ConversionError) as e:
        convert_model(model, tmp_path / "o.edgepack", ConversionConfig(target=target))
    assert "Eig" in str(e.value)
    other = "onnx" if target == "tflite" else "tflite"
    assert f"--target {other}" in str(e.value)


def test_the_module_of_an_exported_program_converts(tmp_path):
    """`torch.export.load(f).module()` has an eval() that raises; convert must accept it."""
    import torch
    import edgepack

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = torch.randn(4, 1, 4, 4)
    module = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    with pytest.raises(NotImplementedError):
        module.eval()
    result = edgepack.convert(module, tmp_path / "m.edgepack", target="onnx", quantize="none",
                              example_inputs=(x.numpy(),), validation_data=x.numpy())
    assert result.validation["outputs"]["output"]["max_abs"] < 1e-5
