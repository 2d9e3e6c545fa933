"""PCM messages feed the bundle's `model.stream()`, one stream per topic."""
from __future__ import annotations

import json

import numpy as np
from mqtt_helpers import bridge_config, make_stream_bundle

from edgepack.runtime import load
from edgepack.runtime.mqtt import MqttBridge, Subscription


def test_pcm_chunks_are_windowed_per_topic_across_messages(broker, clients, topic, tmp_path):
    rng = np.random.default_rng(0)
    signals = {mic: rng.integers(-64, 65, 160 * 12 + 40).astype(np.int16) for mic in ("a", "b")}
    chunks = {mic: np.array_split(x, 7) for mic, x in signals.items()}   # 277-278 samples each
    sub = clients(broker).subscribe(f"{topic}/mics/+/totals")
    config = bridge_config(broker, [Subscription(f"{topic}/mics/+/pcm", f"{topic}/mics/{{1}}/totals",
                                                 codec="pcm")])
    with load(make_stream_bundle(tmp_path / "acc.edgepack")) as model, \
            MqttBridge(config, model):
        pub = clients(broker)
        for i in range(7):                       # the two microphones interleaved
            for mic in ("a", "b"):
                pub.publish(f"{topic}/mics/{mic}/pcm", chunks[mic][i].astype("<i2").tobytes())
        got = sub.wait_for(14, timeout=30)
    assert len(got) == 14
    for mic, x in signals.items():
        docs = [json.loads(m.payload) for m in got if m.topic == f"{topic}/mics/{mic}/totals"]
        assert sum(d["result"]["windows"] for d in docs) == 12     # 40 samples left over
        totals = [r["total"] for d in docs for r in d["result"].get("results", [])]
        windows = (x[:160 * 12].astype(np.float32) / 32768).reshape(12, 160).sum(axis=1)
        np.testing.assert_allclose(np.ravel(totals), np.cumsum(windows), rtol=1e-5, atol=1e-6)
        starts = [r["t_s"] for d in docs for r in d["result"].get("results", [])]
        np.testing.assert_allclose(starts, [0.01 * k for k in range(12)], atol=1e-9)
