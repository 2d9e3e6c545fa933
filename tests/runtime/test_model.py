"""Model/load on real engines (ONNX Runtime, LiteRT) with tiny models built in the tests."""
from __future__ import annotations

import numpy as np
import pytest

import models
from edgepack.runtime import TensorSpec, engines, load, pack_bundle
from edgepack.runtime.errors import (BundleError, EngineError, EngineNotInstalledError,
                                     InputError)

RNG = np.random.default_rng(42)


def test_onnx_run_matches_reference_evaluator(tmp_path, conv_onnx):
    from onnx.reference import ReferenceEvaluator
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    expected = ReferenceEvaluator(conv_onnx).run(None, {"x": x})[0]
    with load(pack_bundle(tmp_path / "c.edgepack", conv_onnx, name="c"), threads=1) as model:
        assert model.engine_name == "onnxruntime"
        assert model.inputs[0].shape == (-1, 3, 8, 8)
        got = model.run({"x": x})["logits"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_predict_applies_pipelines_like_hand_written_numpy(conv_bundle, conv_onnx):
    from onnx.reference import ReferenceEvaluator
    image = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with load(conv_bundle) as model:
        top = model.predict(image)["logits"]
    x = (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    logits = ReferenceEvaluator(conv_onnx).run(None, {"x": x})[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    best = np.argsort(-probs)[:2]
    assert [d["index"] for d in top[0]] == best.tolist()
    assert [d["label"] for d in top[0]] == [["cat", "dog", "bird", "fish"][i] for i in best]
    np.testing.assert_allclose([d["score"] for d in top[0]], probs[best], rtol=1e-4)


def test_litert_float_matches_keras(tmp_path, conv_tflite):
    keras_model = models.keras_conv_classifier(0)
    x = RNG.standard_normal((1, 8, 8, 3)).astype(np.float32)
    with load(pack_bundle(tmp_path / "t.edgepack", conv_tflite, name="t")) as model:
        assert model.engine_name == "litert"
        (name,) = [s.name for s in model.inputs]
        got = model.run({name: x})
    np.testing.assert_allclose(next(iter(got.values())), keras_model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_litert_int8_io_is_quantized_by_predict_and_raw_by_run(tmp_path, conv_tflite_int8):
    keras_model = models.keras_conv_classifier(0)
    x = RNG.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
    with load(pack_bundle(tmp_path / "q.edgepack", conv_tflite_int8, name="q")) as model:
        spec_in, spec_out = model.inputs[0], model.outputs[0]
        assert spec_in.dtype == "int8" and spec_in.quantization is not None
        assert spec_out.dtype == "int8" and spec_out.quantization is not None
        predicted = next(iter(model.predict(x).values()))
        q = spec_in.quantization
        raw_in = np.clip(np.rint(x / q.scale[0]) + q.zero_point[0], -128, 127).astype(np.int8)
        raw = next(iter(model.run({spec_in.name: raw_in}).values()))
    assert predicted.dtype == np.float32 and raw.dtype == np.int8
    qo = spec_out.quantization
    np.testing.assert_allclose(predicted, (raw.astype(np.float32) - qo.zero_point[0]) * qo.scale[0],
                               rtol=1e-6)
    reference = keras_model(x).numpy()
    # int8 end to end: within a few output quantization steps of the float model
    assert np.abs(predicted - reference).max() <= 4 * qo.scale[0] + 0.02 * np.abs(reference).max()


def test_two_inputs_and_state_tensors_through_run_and_predict(tmp_path):
    model_bytes = models.onnx_two_input_state_model()
    from onnx.reference import ReferenceEvaluator
    ref = ReferenceEvaluator(model_bytes)
    frames = RNG.standard_normal((6, 5)).astype(np.float32)
    with load(pack_bundle(tmp_path / "cell.edgepack", model_bytes, name="cell")) as model:
        assert [s.name for s in model.inputs] == ["x", "h"]
        h = np.zeros((1, 3), np.float32)
        h_ref = h.copy()
        for frame in frames:
            out = model.predict(x=frame, h=h)          # predict adds the batch axis
            y_ref, h_ref = ref.run(None, {"x": frame[None], "h": h_ref})
            np.testing.assert_allclose(out["y"], y_ref, rtol=1e-5, atol=1e-6)
            h = out["h_next"]
        raw = model.run({"x": frames[:1], "h": np.zeros((1, 3), np.float32)})
        assert set(raw) == {"y", "h_next"}
        with pytest.raises(InputError, match="pass them by name"):
            model.predict(frames[0])


def test_input_errors_say_expected_and_actual(conv_bundle):
    with load(conv_bundle) as model:
        good = np.zeros((1, 3, 8, 8), np.float32)
        with pytest.raises(InputError, match=r"expected shape \[\?, 3, 8, 8\], got \[1, 3, 8\]"):
            model.run({"x": good[:, :, :, 0]})
        with pytest.raises(InputError, match=r"expected shape .* got \[1, 3, 8, 9\]"):
            model.run({"x": np.zeros((1, 3, 8, 9), np.float32)})
        with pytest.raises(InputError, match="expected dtype float32, got float64"):
            model.run({"x": good.astype(np.float64)})
        with pytest.raises(InputError, match=r"missing \['x'\], unexpected \['y'\]"):
            model.run({"y": good})
        with pytest.raises(InputError, match="numpy array"):
            model.run({"x": good.tolist()})
        with pytest.raises(InputError, match="dict"):
            model.run(good)
        np.testing.assert_array_equal(model.run({"x": good})["logits"].shape, (1, 4))


def test_engine_missing_names_the_extra(monkeypatch, conv_bundle):
    monkeypatch.setattr(engines, "is_available", lambda name: False)
    with pytest.raises(EngineNotInstalledError, match=r"edgepack\[onnx\]"):
        load(conv_bundle)


def test_entry_point_engine(monkeypatch, conv_bundle):
    class Echo:
        name = "echo"

        def __init__(self, model, threads=None):
            self.model = model

        def inputs(self):
            return [TensorSpec("x", (-1, 3, 8, 8), "float32")]

        def outputs(self):
            return [TensorSpec("logits", (-1, 4), "float32")]

        def run(self, feeds):
            return {"logits": feeds["x"].reshape(len(feeds["x"]), -1)[:, :4]}

        def close(self):
            pass

    class EntryPoint:
        def load(self):
            return Echo

    monkeypatch.setattr(engines, "_entry_points", lambda: {"echo": EntryPoint()})
    x = np.arange(192, dtype=np.float32).reshape(1, 3, 8, 8)
    with load(conv_bundle, engine="echo") as model:
        np.testing.assert_array_equal(model.run({"x": x})["logits"], [[0, 1, 2, 3]])
    # An engine without a spin_wait setting is opened without it, not refused.
    with load(conv_bundle, engine="echo", spin_wait=False) as model:
        assert model.run({"x": x})["logits"].shape == (1, 4)
    with pytest.raises(EngineNotInstalledError, match="unknown engine 'nope'.*echo"):
        load(conv_bundle, engine="nope")


def test_spin_wait_reaches_engines_that_take_it(monkeypatch, conv_bundle):
    seen = []

    class Recorder:
        name = "recorder"

        def __init__(self, model, *, threads=None, **settings):
            seen.append({"threads": threads, **settings})
            raise RuntimeError("recorded")

    class EntryPoint:
        def load(self):
            return Recorder

    monkeypatch.setattr(engines, "_entry_points", lambda: {"recorder": EntryPoint()})
    for spin_wait in (None, False, True):
        with pytest.raises(EngineError, match="recorded"):
            load(conv_bundle, engine="recorder", threads=2, spin_wait=spin_wait)
    assert seen == [{"threads": 2}, {"threads": 2, "spin_wait": False},
                    {"threads": 2, "spin_wait": True}]


@pytest.mark.parametrize("spin_wait, allowed", [(None, None), (False, "0"), (True, "1")])
def test_onnxruntime_spin_wait_sets_the_session_option(conv_onnx, spin_wait, allowed):
    engine = engines.open_engine("onnxruntime", conv_onnx, threads=2, spin_wait=spin_wait)
    config = engine.session.get_session_options().get_session_config_entry
    key = "session.intra_op.allow_spinning"
    if allowed is None:   # onnxruntime's own default is left alone
        with pytest.raises(Exception):
            config(key)
    else:
        assert config(key) == allowed
    engine.close()


def test_manifest_that_disagrees_with_model_is_refused(tmp_path, conv_onnx):
    path = pack_bundle(tmp_path / "lie.edgepack", conv_onnx, name="lie",
                       inputs=[TensorSpec("x", (-1, 3, 8, 8), "uint8")],
                       outputs=[TensorSpec("logits", (-1, 4), "float32")])
    with pytest.raises(BundleError, match="repack"):
        load(path)


def test_closed_model_says_so(conv_bundle):
    from edgepack.runtime.errors import EngineError
    model = load(conv_bundle)
    model.close()
    model.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        model.run({"x": np.zeros((1, 3, 8, 8), np.float32)})


def test_litert_engine_names_a_wrong_input_and_follows_batch_changes(conv_tflite):
    from edgepack.runtime.errors import EngineError
    engine = engines.open_engine("litert", conv_tflite)
    (spec,) = engine.inputs()
    assert spec.name == "image"                       # the signature's name, not a tensor path
    with pytest.raises(EngineError, match=r"takes inputs \['image'\], got \['nope'\]"):
        engine.run({"nope": np.zeros((1, 8, 8, 3), np.float32)})
    x = RNG.standard_normal((3, 8, 8, 3)).astype(np.float32)
    batched = next(iter(engine.run({"image": x}).values()))
    single = [next(iter(engine.run({"image": x[i:i + 1]}).values()))[0] for i in range(3)]
    np.testing.assert_allclose(batched, np.stack(single), rtol=1e-5, atol=1e-6)
    engine.close()


def test_example_feeds_fit_the_specs_and_are_seeded():
    from edgepack.runtime.specs import example_feeds
    specs = [TensorSpec("image", (-1, 4, 4, 3), "uint8"), TensorSpec("ids", (-1, 7), "int64"),
             TensorSpec("x", (1, -1), "float32"), TensorSpec("mask", (2,), "bool")]
    feeds = example_feeds(specs, seed=3, batch=5)
    assert feeds["image"].shape == (5, 4, 4, 3) and feeds["image"].dtype == np.uint8
    assert feeds["image"].max() > 127                      # the full uint8 range is used
    assert (feeds["ids"] == 0).all() and feeds["ids"].shape == (5, 7)   # valid as indices
    assert feeds["x"].shape == (1, 1) and feeds["mask"].dtype == bool
    again = example_feeds(specs, seed=3, batch=5)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    for spec in specs:
        spec.check(feeds[spec.name])                        # every feed passes its own spec


def test_bound_run_writes_what_run_returns_and_checks_once(tmp_path, conv_onnx, conv_tflite):
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with load(pack_bundle(tmp_path / "c.edgepack", conv_onnx, name="c"), threads=1) as model:
        assert model.can_bind
        expected = model.run({"x": x})["logits"]
        (out_spec,) = model.engine_outputs
        out = np.zeros((2, *out_spec.shape[1:]), np.float32)
        feeds = {"x": x.copy()}
        model.check_feeds(feeds)
        run = model.bind(feeds, {out_spec.name: out})
        run()
        np.testing.assert_array_equal(out, expected)
        feeds["x"][:] = x[::-1]           # new contents in the same buffer: read in place
        run()
        np.testing.assert_array_equal(out, expected[::-1])
        with pytest.raises(InputError, match="float32"):
            model.check_feeds({"x": x.astype(np.float64)})
    with pytest.raises(EngineError, match="closed"):
        model.bind(feeds, {out_spec.name: out})
    with load(pack_bundle(tmp_path / "t.edgepack", conv_tflite, name="t")) as model:
        assert not model.can_bind          # LiteRT: callers feed run() instead
        assert model.bind({}, {}) is None
