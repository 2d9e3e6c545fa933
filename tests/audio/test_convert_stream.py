"""Conversion side of audio bundles: ConversionConfig.stream/examples (validated with the
manifest schema), and the int8 speed check feeding the manifest's examples (sr = 16000)."""
from __future__ import annotations

import numpy as np
import pytest

import toys
from edgepack.converters.config import ConversionConfig, QuantizationConfig
from edgepack.converters.int8.speed import SpeedSettings, measure_speed
from edgepack.runtime.errors import ConversionError, EngineError, PipelineError
from edgepack.runtime.specs import example_feeds


def test_speed_check_feeds_the_manifest_examples():
    model = toys.rate_checked_vad()
    examples = {"sr": {"value": 16000}, "input": {"range": [-1.0, 1.0]}}
    report = measure_speed(model, model, "onnxruntime",
                           SpeedSettings(rounds=3, warmup=0, block=1, examples=examples))
    assert len(report.points) == 1 and report.points[0].fp32_ms > 0
    # the feeds are the runtime's own example feeds
    from edgepack.runtime.engines import open_engine
    engine = open_engine("onnxruntime", model)
    feeds = example_feeds(engine.inputs(), examples=examples)
    assert feeds["sr"].tolist() == [16000] and np.abs(feeds["input"]).max() <= 1.0
    assert engine.run(feeds)["output"].shape == (1, 1)
    # without the examples sr is 0, and this model (like a real VAD) cannot run on that
    with pytest.raises(EngineError):
        measure_speed(model, model, "onnxruntime", SpeedSettings(rounds=3, warmup=0, block=1))


def test_conversion_config_carries_stream_and_examples_to_the_speed_check():
    stream = {"rate": 16000, "window": 512, "context": 64,
              "state": [{"input": "state", "output": "stateN", "init": 0.0}]}
    examples = {"sr": {"value": 16000}}
    config = ConversionConfig(quantization=QuantizationConfig(mode="int8"), stream=stream,
                              examples=examples)
    assert config.stream == stream and config.examples == examples
    assert config.quantization.examples == examples
    options = config.quantization.int8_options("onnxruntime")
    assert options.speed.examples == examples
    assert ConversionConfig().stream is None and ConversionConfig().examples is None


@pytest.mark.parametrize("fields, message", [
    ({"stream": {"rate": 16000, "window": "512"}}, "stream.window must be an integer"),
    ({"stream": {"window": 512, "state": [{"input": "state"}]}}, "stream.state[0].output"),
    ({"stream": []}, "stream must be an object"),
    ({"examples": {"sr": 16000}}, "examples['sr'] must be an object"),
    ({"examples": {"x": {"range": [1, 0]}}}, "examples['x'].range must be two finite numbers"),
])
def test_conversion_config_refuses_a_bad_stream_or_examples(fields, message):
    with pytest.raises(ConversionError) as e:
        ConversionConfig(**fields)
    assert message in str(e.value)
    assert e.value.exit_code == 6


ACC_STREAM = """[task]
kind = "sound_events"

[stream]
rate = 16000
window = 160
state = [{input = "state", output = "stateN", init = 0.0}]

[examples]
input = {range = [-1.0, 1.0]}

[[decode]]
op = "events"
scores = "total"
on = 300.0
off = 1.0
"""


def _convert(tmp_path, stream_text, out="acc.edgepack"):
    import subprocess
    import sys
    from pathlib import Path
    (tmp_path / "acc.onnx").write_bytes(toys.accumulator(160))
    (tmp_path / "acc.toml").write_text(stream_text)
    return subprocess.run([str(Path(sys.executable).with_name("edgepack")), "convert",
                           "acc.onnx", "-o", out, "--stream", "acc.toml"],
                          cwd=tmp_path, capture_output=True, timeout=300)


def test_convert_writes_the_stream_of_an_audio_model(tmp_path):
    from edgepack.runtime import load
    r = _convert(tmp_path, ACC_STREAM)
    assert r.returncode == 0, r.stderr.decode()
    with load(tmp_path / "acc.edgepack") as model:
        m = model.manifest
        assert m.stream["window"] == 160 and m.examples == {"input": {"range": [-1.0, 1.0]}}
        assert m.task == {"kind": "sound_events"} and m.decode[0]["op"] == "events"
        assert m.validation is not None  # convert's own records are kept
        stream = model.stream()
        # the state accumulates: the total passes 300 in window 1 (160 + 160 ones = 320)
        events = stream.push(np.ones(160 * 3, np.float32))
        assert [e["t_s"] for e in events] == [0.015]
        assert stream.state["state"].item() == 480.0


@pytest.mark.parametrize("text, code, message", [
    (ACC_STREAM.replace("window = 160", 'window = "160"'), 6, "stream.window must be an integer"),
    (ACC_STREAM.replace('output = "stateN"', 'output = "nope"'), 4,
     "stream.state[0] must be {'input': one of ['input', 'state'], 'output': one of "
     "['stateN', 'total']"),
    ("[examples]\nsr = {value = 16000}\n", 2, "no [stream] table"),
])
def test_convert_refuses_a_bad_stream_file(tmp_path, text, code, message):
    r = _convert(tmp_path, text)
    assert r.returncode == code, r.stderr.decode()
    assert message in r.stderr.decode()
    assert not (tmp_path / "acc.edgepack").exists()


def test_library_convert_packs_stream_and_examples(tmp_path):
    """edgepack.conversion.convert(stream=, examples=) writes them into the bundle, as the
    CLI's --stream does (one path: ConversionConfig -> pack_bundle)."""
    from edgepack.conversion import convert
    from edgepack.runtime import load
    (tmp_path / "acc.onnx").write_bytes(toys.accumulator(160))
    stream = {"rate": 16000, "window": 160,
              "state": [{"input": "state", "output": "stateN", "init": 0.0}]}
    result = convert(str(tmp_path / "acc.onnx"), tmp_path / "acc.edgepack", stream=stream,
                     examples={"input": {"range": [-1.0, 1.0]}})
    with load(result.path) as model:
        assert model.manifest.stream["window"] == 160
        assert model.manifest.examples == {"input": {"range": [-1.0, 1.0]}}
        model.stream().push(np.ones(320, np.float32))
        # a state output the model does not have: refused when packed, nothing written
    bad = {**stream, "state": [{"input": "state", "output": "nope", "init": 0.0}]}
    with pytest.raises(PipelineError, match="stream.state"):
        convert(str(tmp_path / "acc.onnx"), tmp_path / "bad.edgepack", stream=bad)
    assert not (tmp_path / "bad.edgepack").exists()


def test_convert_validates_a_stateful_vad_one_call_per_sample(tmp_path):
    """A VAD's inputs share no batch axis (window [1, 576], sr [1], state [2, 1, 8]): convert
    validates it one call per sample, each input drawn as its example says. Before, the
    inputs were stacked on a batch axis and ORT refused the state (exit 5)."""
    from edgepack.conversion import convert
    (tmp_path / "rvad.onnx").write_bytes(toys.recurrent_vad())
    stream = {"rate": 16000, "window": 512, "context": 64,
              "state": [{"input": "state", "output": "stateN", "init": 0.0}]}
    result = convert(str(tmp_path / "rvad.onnx"), tmp_path / "rvad.edgepack",
                     quantize="dynamic", stream=stream,
                     examples={"sr": {"value": 16000}, "input": {"range": [-1.0, 1.0]}})
    record = result.validation
    assert record["passed"] and record["calls"] == "one per sample"
    assert record["samples"] == 64 and set(record["outputs"]) == {"output", "stateN"}
    assert record["outputs"]["stateN"]["cosine"] > 0.9999


def test_convert_feeds_validation_the_declared_rate(tmp_path):
    """A model that only runs at sr = 16000: validation feeds the example's value."""
    from edgepack.conversion import convert
    (tmp_path / "srvad.onnx").write_bytes(toys.rate_checked_vad())
    examples = {"sr": {"value": 16000}, "input": {"range": [-1.0, 1.0]}}
    result = convert(str(tmp_path / "srvad.onnx"), tmp_path / "srvad.edgepack",
                     stream={"rate": 16000, "window": 576, "input": "input"}, examples=examples)
    assert result.validation["passed"], result.validation
    assert result.validation["calls"] == "one per sample"
    # without the example the stream has no value for sr: refused by name, nothing written
    with pytest.raises(PipelineError, match=r"inputs \['sr'\] get no value"):
        convert(str(tmp_path / "srvad.onnx"), tmp_path / "bad.edgepack",
                stream={"rate": 16000, "window": 576, "input": "input"})
    assert not (tmp_path / "bad.edgepack").exists()
