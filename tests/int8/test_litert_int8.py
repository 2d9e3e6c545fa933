"""Keras -> TFLite int8 does what the ONNX int8 path does: the LiteRT recipe, accuracy-aware
mixed precision (TensorFlow's selective quantization) and the speed check, in the manifest."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow")

from edgepack.converters import ConversionConfig, QuantizationConfig, convert_model  # noqa: E402
from edgepack.converters.int8 import (AccuracyTarget, LiteRtInt8Options,  # noqa: E402
                                      SpeedSettings, choose_recipe, quantize_litert_int8)
from edgepack.converters.int8.litert_int8 import channel_error  # noqa: E402
from edgepack.converters.int8.speed import FASTER_BELOW  # noqa: E402
from edgepack.converters.validation import format_table  # noqa: E402
from edgepack.runtime import load, read_bundle  # noqa: E402
from edgepack.runtime.errors import ConversionError  # noqa: E402

TARGET = 0.95


def outlier_keras_net(outlier: float, seed: int = 0, channels: int = 8):
    """The Keras twin of int8_models.conv_net: x[N,8,8,1] -> conv_a -> ReLU -> conv_b -> ReLU
    -> Flatten -> head[N,10]. Channel 0 of conv_a's output is scaled by `outlier` and conv_b's
    weights reading it by 1/outlier: the same float function, but a tensor range `outlier`
    times wider than the other channels need (and conv_b weights `outlier` times smaller)."""
    import keras
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 1), name="x")
    a = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv_a")(x)
    b = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv_b")(a)
    logits = keras.layers.Dense(10, name="head")(keras.layers.Flatten(name="flatten")(b))
    model = keras.Model(x, logits)
    rng = np.random.default_rng(seed)
    wa = rng.standard_normal((3, 3, 1, channels)).astype(np.float32) * 0.5
    ba = rng.standard_normal(channels).astype(np.float32) * 0.1
    wb = rng.standard_normal((3, 3, channels, channels)).astype(np.float32) / np.sqrt(9 * channels)
    bb = rng.standard_normal(channels).astype(np.float32) * 0.1
    wa[..., 0] *= outlier
    ba[0] *= outlier
    wb[:, :, 0, :] /= outlier
    model.get_layer("conv_a").set_weights([wa, ba])
    model.get_layer("conv_b").set_weights([wb, bb])
    return model


def _nhwc(nchw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))


def _agreement(reference: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean(reference.argmax(1) == got.argmax(1)))


def _bundle_logits(path, x: np.ndarray) -> np.ndarray:
    model = load(path)
    (name,) = [s.name for s in model.inputs]
    (out,) = model.run({name: x}).values()
    return out


def _tensor_dtypes(model_bytes: bytes) -> dict[str, str]:
    from edgepack.runtime.engines.litert_engine import interpreter_class
    return {t["name"]: np.dtype(t["dtype"]).name
            for t in interpreter_class()(model_content=model_bytes).get_tensor_details()}


@pytest.fixture(scope="module")
def keras_model():
    return outlier_keras_net(outlier=100.0)


@pytest.fixture(scope="module")
def nhwc_calib(calib):
    return _nhwc(calib)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, keras_model):
    path = tmp_path_factory.mktemp("litert") / "saved_model"
    keras_model.export(str(path), verbose=False)
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, keras_model, nhwc_calib, held_out):
    """A plain int8 bundle for this machine and an accuracy-aware one for rpi4b."""
    tmp = tmp_path_factory.mktemp("litert-bundles")
    made = {}
    for name, target, device in (("plain", None, None), ("aware", TARGET, "rpi4b")):
        cfg = ConversionConfig(target="tflite", device=device, accept=True, quantization=
                               QuantizationConfig(mode="int8", accuracy_target=target))
        made[name] = convert_model(keras_model, tmp / f"{name}.edgepack", cfg,
                                   calibration_data=nhwc_calib, validation_data=_nhwc(held_out))
    return made


def test_accuracy_aware_bundle_meets_the_target_that_plain_int8_misses(
        bundles, keras_model, nhwc_calib, held_out):
    reference = keras_model(nhwc_calib).numpy()
    plain, aware = bundles["plain"].path, bundles["aware"].path
    assert _agreement(reference, _bundle_logits(plain, nhwc_calib)) < TARGET
    assert _agreement(reference, _bundle_logits(aware, nhwc_calib)) >= TARGET
    quant = read_bundle(aware).manifest.quantization
    record = quant["accuracy_aware"]
    assert record["met"] and record["agreement"] >= TARGET > record["agreement_all_int8"]
    assert record["target_agreement"] == TARGET and record["method"] == "layer_error"
    assert record["measured_on"] == "calibration set (200 samples)"
    # The outlier tensor is conv_a's output; conv_b's weights reading it are 100x smaller.
    kept = [k["node"] for k in quant["kept_float"]]
    assert len(kept) == 2 and any("conv_a" in n for n in kept) and any("conv_b" in n for n in kept)
    assert kept == [k["node"] for k in record["kept_float"]]
    assert all(k["op"] == "CONV_2D" and k["reason"].startswith(f"sensitivity rank {i + 1}:")
               for i, k in enumerate(quant["kept_float"]))
    # Pruning tried each back in int8 (shared with ONNX): both are needed here.
    assert record["returned_to_int8"] == []
    assert all("needed: back in int8" in k["reason"] for k in quant["kept_float"])
    assert read_bundle(plain).manifest.quantization["kept_float"] == []
    # They really are float in the shipped model (int8 in the plain one), and I/O stays float.
    aware_types = _tensor_dtypes(read_bundle(aware).model_bytes())
    plain_types = _tensor_dtypes(read_bundle(plain).model_bytes())
    assert all(aware_types[n] == "float32" and plain_types[n] == "int8" for n in kept)
    assert {s.dtype for s in (*load(aware).inputs, *load(aware).outputs)} == {"float32"}
    # ... and the choice holds on samples the pass never saw.
    held = _nhwc(held_out)
    assert _agreement(keras_model(held).numpy(), _bundle_logits(aware, held)) >= TARGET


def test_recipe_record_names_the_litert_recipe_of_the_device(bundles):
    plain = read_bundle(bundles["plain"].path).manifest.quantization
    aware = read_bundle(bundles["aware"].path).manifest.quantization
    assert plain["recipe"] == choose_recipe("litert").to_record()
    assert aware["recipe"]["name"] == "litert-arm" and aware["recipe"]["engine"] == "litert"
    assert aware["recipe"]["types"] == "S8S8" and aware["recipe"]["per_channel"] is True
    assert aware["calibration"] == {"method": "minmax", "samples": 200}
    assert "reduce_range" not in aware   # an onnxruntime knob
    assert aware["speed"]["note"] == "measured on the converting host, not on rpi4b"
    assert "note" not in plain["speed"]


def test_speed_record_has_a_point_per_thread_count_and_a_consistent_verdict(
        saved_model, nhwc_calib, caplog):
    settings = SpeedSettings(threads=(1, 2), rounds=5, warmup=1)
    with caplog.at_level(logging.WARNING, logger="edgepack.converters.int8.speed"):
        result = quantize_litert_int8(saved_model, {"x": nhwc_calib[:32]},
                                      LiteRtInt8Options(speed=settings))
    speed = result.record["speed"]
    assert speed["engine"] == "litert" and [p["threads"] for p in speed["points"]] == [1, 2]
    for p in speed["points"]:
        assert p["fp32_ms"] > 0 and p["int8_ms"] > 0
        # The ms values are rounded to 3 decimals: allow for that in the recomputed ratio.
        slack = 0.0005 * (1 + p["ratio"]) / p["fp32_ms"] + 0.001
        assert p["ratio"] == pytest.approx(p["int8_ms"] / p["fp32_ms"], abs=slack)
        assert p["faster"] is (p["ratio"] < FASTER_BELOW)
    assert speed["faster_than_fp32"] is all(p["faster"] for p in speed["points"])
    warned = any("not faster than fp32" in r.getMessage() for r in caplog.records)
    assert warned is not speed["faster_than_fp32"]


def test_speed_verdict_reaches_the_validation_table(bundles):
    validation = bundles["aware"].validation
    speed = read_bundle(bundles["aware"].path).manifest.quantization["speed"]
    assert validation["speed"] == speed
    verdict = "yes" if speed["faster_than_fp32"] else "NO"
    assert f"faster than fp32 here? {verdict}" in format_table(validation)


def test_unreachable_target_gives_a_bundle_marked_unmet_and_a_warning(
        saved_model, nhwc_calib, caplog):
    target = AccuracyTarget(min_agreement=TARGET, max_float_layers=1)
    with caplog.at_level(logging.WARNING, logger="edgepack.converters.int8.litert_int8"):
        result = quantize_litert_int8(saved_model, {"x": nhwc_calib},
                                      LiteRtInt8Options(accuracy=target))
    record = result.record["accuracy_aware"]
    assert record["met"] is False and len(result.record["kept_float"]) == 1
    assert record["agreement_all_int8"] <= record["agreement"] < TARGET
    assert any("below the target" in r.getMessage() for r in caplog.records)
    assert "speed" not in result.record   # no SpeedSettings, no speed check


def test_int8_io_keeps_boundary_layers_int8_rather_than_drop_int8_io(saved_model, nhwc_calib):
    # conv_a reads the model input: in float, TensorFlow would quietly keep the input float.
    result = quantize_litert_int8(saved_model, {"x": nhwc_calib},
                                  LiteRtInt8Options(int8_io=True,
                                                    accuracy=AccuracyTarget(TARGET)))
    from edgepack.runtime.engines import open_engine
    engine = open_engine("litert", result.model_bytes)
    assert {s.dtype for s in (*engine.inputs(), *engine.outputs())} == {"int8"}
    assert not any("conv_a" in k["node"] for k in result.record["kept_float"])
    assert result.record["accuracy_aware"]["met"] is False


def test_channel_error_sees_channels_starved_by_an_outlier_channel():
    float_values = np.array([[1000.0, 1.0, 2.0]])      # one position, 3 channels
    scale = 1000.0 / 127
    quantized = np.round(float_values / scale)          # the 1.0 and 2.0 round to 0
    # channel 0 is exact (127 steps); the other two are lost entirely: relative error 1 each.
    assert channel_error(float_values, quantized, scale, 0) == pytest.approx(2 / 3)
    assert np.isnan(channel_error(np.zeros((2, 3)), np.zeros((2, 3)), 0.1, 0))


def test_sensitivity_methods_without_a_tflite_counterpart_are_refused():
    with pytest.raises(ConversionError, match="leave_one_out.*ONNX only"):
        LiteRtInt8Options(accuracy=AccuracyTarget(method="leave_one_out"))


def test_calibration_data_missing_an_input_is_one_clear_error(saved_model, nhwc_calib):
    with pytest.raises(ConversionError,
                       match=r"no samples for model input 'x'; it has \['image'\]"):
        quantize_litert_int8(saved_model, {"image": nhwc_calib[:4]})
