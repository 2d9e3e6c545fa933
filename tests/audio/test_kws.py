"""A keyword spotter trained here (chirp/beep keywords, seeded), with its log-mel front-end
in the bundle: PyTorch -> int8 ONNX and Keras -> int8 TFLite, calibrated on audio through
that front-end; held-out accuracy drop <= 1 point; `edgepack listen` on a stream with the
keywords in noise finds each within 0.5 s, with no events in between."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kws_data as D
from edgepack.runtime import load
from edgepack.runtime.ops import Context, compile_steps
from edgepack.runtime.stream import declare_stream

pytestmark = pytest.mark.slow
EDGEPACK = str(Path(sys.executable).with_name("edgepack"))
STREAM = {"rate": D.RATE, "window": D.WINDOW, "hop": 1600}
DECODE = [{"op": "events", "scores": "logits", "on": 0.8, "off": 0.5, "refractory_s": 0.6}]


@pytest.fixture(scope="module")
def data():
    train = D.clips(60, seed=1)
    held = D.clips(25, seed=2)
    front = compile_steps(D.FRONT_END, Context())
    feats = lambda x: np.stack([front(c) for c in x])  # noqa: E731
    return train, held, feats(train[0]), feats(held[0])


def _listen(bundle: Path, signal: np.ndarray) -> list[dict]:
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes()
    r = subprocess.run([EDGEPACK, "listen", str(bundle), "-"], input=pcm, capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


def _check_events(events, placed):
    assert len(events) == len(placed), (events, placed)
    for event, (t, label) in zip(events, placed):
        assert event["label"] == label and abs(event["t_s"] - t) <= 0.5, (event, t, label)


def _torch_model(train_feats, labels):
    import torch
    torch.manual_seed(0)

    class KWS(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16, len(D.LABELS))

        def forward(self, x):
            x = (x + 60.0) / 20.0
            x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.relu(self.conv2(x)).mean(dim=(2, 3))
            return self.fc(x)

    model = KWS()
    x = torch.from_numpy(train_feats[:, None])
    y = torch.from_numpy(labels).long()
    opt = torch.optim.Adam(model.parameters(), 0.01)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return model.eval()


def _keras_model(train_feats, labels):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input(train_feats.shape[1:] + (1,), name="features")
    x = tf.keras.layers.Rescaling(1 / 20.0, offset=3.0)(inputs)
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = tf.keras.layers.MaxPooling2D(2)(x)
    x = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(len(D.LABELS), name="logits")(x)
    model = tf.keras.Model(inputs, outputs)
    model.compile(tf.keras.optimizers.Adam(0.01),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train_feats[..., None], labels, epochs=40, batch_size=48, verbose=0)
    return model


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_kws_int8_accuracy_and_listen(tmp_path, data, framework):
    import edgepack
    (train, train_y), (held, held_y), train_feats, held_feats = data
    if framework == "torch":
        import torch
        source = _torch_model(train_feats, train_y)
        with torch.no_grad():
            source_scores = source(torch.from_numpy(held_feats[:, None])).numpy()
        target, reshape, input_name = "onnx", [1, 32, 31], "x"
        example = np.zeros((1, 1, 32, 31), np.float32)
    else:
        source = _keras_model(train_feats, train_y)
        source_scores = source.predict(held_feats[..., None], verbose=0)
        target, reshape, input_name = "tflite", [32, 31, 1], "features"
        example = np.zeros((1, 32, 31, 1), np.float32)
    source_accuracy = float(np.mean(source_scores.argmax(axis=1) == held_y))
    path = tmp_path / "kws.edgepack"
    edgepack.convert(
        source, path, target=target, quantize="int8", example_inputs=example,
        calibration_data=train,  # raw clips: calibrated through the bundle's log-mel front-end
        validation_data=held, validation_labels=held_y, labels=D.LABELS,
        preprocess={input_name: D.FRONT_END + [{"op": "reshape", "shape": reshape}]},
        speed_check=False, name=f"kws-{framework}")
    with load(path) as m:
        output = m.outputs[0].name
        assert "int8" in json.dumps(m.manifest.quantization)
        hits = [int(np.argmax(m.run(m.preprocess({m.inputs[0].name: x}))[output]) == y)
                for x, y in zip(held, held_y)]
    bundle_accuracy = float(np.mean(hits))
    print(f"{framework}: held-out accuracy source {source_accuracy:.3f} int8 {bundle_accuracy:.3f} "
          f"({len(held_y)} clips)")
    assert source_accuracy >= 0.95, source_accuracy
    assert source_accuracy - bundle_accuracy <= 0.01, (source_accuracy, bundle_accuracy)

    _add_postprocess(path, output, [{"op": "softmax"}])
    declare_stream(path, STREAM, decode=[dict(DECODE[0], scores=output)], task={"kind": "keyword"})
    signal, placed = D.stream_with_keywords(seed=3)
    _check_events(_listen(path, signal), placed)


def _add_postprocess(path, output, steps):
    from dataclasses import replace
    from edgepack.runtime.bundle import read_bundle, write_bundle
    b = read_bundle(path)
    m = replace(b.manifest, postprocess={output: steps})
    write_bundle(b.path, m, {n: b.read(n) for n in b.members})
