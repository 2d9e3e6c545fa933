"""The bridge's pieces without a broker: topics, config, codecs, result encoding, the
payload -> result API, back-pressure queue, backoff, lazy imports."""
from __future__ import annotations

import base64
import io
import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
from mqtt_helpers import jpeg_bytes

from edgepack.runtime.mqtt import (BridgeConfig, BrokerConfig, MqttError, PayloadError,
                                   Subscription, TopicMap, answer, answer_or_error, jsonable,
                                   load_config)
from edgepack.runtime.mqtt.codecs import decode_payload
from edgepack.runtime.mqtt.connection import backoff_delay
from edgepack.runtime.mqtt.queues import MessageQueue


@pytest.mark.parametrize("filt, template, topic, out", [
    ("cameras/+/frame", "cameras/{1}/detections", "cameras/front/frame", "cameras/front/detections"),
    ("a/+/b/+", "r/{2}/{1}", "a/x/b/y", "r/y/x"),
    ("sensors/#", "out/{1}", "sensors/kitchen/mic", "out/kitchen/mic"),
    ("$share/workers/cam/+", "res/{1}", "cam/7", "res/7"),
    ("plain/in", "plain/out", "plain/in", "plain/out"),
])
def test_topic_mapping(filt, template, topic, out):
    assert TopicMap(filt, template).publish_topic(topic) == out


def test_topic_match_rules():
    t = TopicMap("a/+/c", "x")
    assert t.match("a/b/c") == ("b",)
    assert t.match("a/b/c/d") is None and t.match("a/b") is None and t.match("x/b/c") is None
    assert TopicMap("a/#", "x").match("a") == ("",)


@pytest.mark.parametrize("filt, template, message", [
    ("a/+", "b/{2}", "uses {2} but the subscription has 1 wildcard(s)"),
    ("a/#/b", "x", "'#' must be the last level"),
    ("a/b+", "x", "a wildcard must fill a whole level"),
    ("a/+", "b/+", "holds a wildcard"),
    ("a/+", "b/{x}", "only {N} placeholders"),
    ("$share/g", "x", "$share/GROUP/topic/filter"),
])
def test_topic_errors(filt, template, message):
    with pytest.raises(MqttError) as caught:
        TopicMap(filt, template)
    assert message in str(caught.value)


def test_broker_url_parsing():
    b = BrokerConfig.from_url("mqtts://cam%40home:p%3Ass@broker.lan")
    assert (b.host, b.port, b.username, b.password) == ("broker.lan", 8883, "cam@home", "p:ss")
    assert b.tls is not None
    assert BrokerConfig.from_url("10.0.0.2").port == 1883
    assert BrokerConfig.from_url("mqtt://h:1884", username="u").username == "u"
    for url, message in (("http://h", "scheme must be mqtt"), ("mqtt://:1883", "names no host"),
                         ("mqtt://h:99999", "port")):
        with pytest.raises(MqttError, match=message):
            BrokerConfig.from_url(url)
    with pytest.raises(MqttError, match="needs a user name"):
        BrokerConfig(password="x")


def test_bridge_config_defaults_and_policies():
    config = BridgeConfig(BrokerConfig(), (Subscription("a/+", "b/{1}", qos=0),
                                           Subscription("c", "d")))
    cid = config.client_id
    assert cid.startswith("edgepack-") and config.status_topic == f"edgepack/{cid}/status"
    assert config.error_topic == f"edgepack/{cid}/errors"
    assert [s.effective_policy for s in config.subscriptions] == ["drop-oldest", "block"]
    again = BridgeConfig(BrokerConfig(), (Subscription("c", "d"), Subscription("a/+", "b/{1}", qos=0)))
    assert again.client_id == cid      # stable for the same subscriptions
    with pytest.raises(MqttError, match="at least one subscription"):
        BridgeConfig(BrokerConfig(), ())
    with pytest.raises(MqttError, match="unknown codec 'jpg'"):
        Subscription("a", "b", codec="jpg")
    with pytest.raises(MqttError, match="QoS 2 is not supported"):
        Subscription("a", "b", qos=2)


def test_config_file_toml_and_json(tmp_path):
    toml = tmp_path / "bridge.toml"
    toml.write_text('[broker]\nurl = "mqtt://10.1.2.3:1884"\nprotocol = "3.1.1"\n'
                    '[[subscribe]]\ntopic = "cam/+/jpg"\npublish = "cam/{1}/top"\nqos = 0\n'
                    '[bridge]\nhomeassistant = true\n')
    config = load_config(toml, username="u")
    assert (config.broker.host, config.broker.port, config.broker.protocol) == \
        ("10.1.2.3", 1884, "3.1.1")
    assert config.broker.username == "u" and config.homeassistant
    assert config.subscriptions[0].qos == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"subscribe": [{"topic": "a", "publish": "b", "qos_": 1}]}))
    with pytest.raises(MqttError, match="qos_"):
        load_config(bad)
    bad.write_text("{")
    with pytest.raises(MqttError, match="is not valid json"):
        load_config(bad)


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_codecs():
    names = ["x"]
    image = jpeg_bytes(0)
    assert decode_payload(image, names)[0]["x"].shape == (12, 12, 3)
    assert decode_payload(image, names, content_type="image/jpeg")[0]["x"].dtype == np.uint8
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(decode_payload(_npy(arr), names)[0]["x"], arr)
    pcm = np.array([0, 16384, -32768, 32767], "<i2").tobytes()
    samples = decode_payload(pcm, names, content_type="audio/pcm")[0]["x"]
    assert samples.dtype == np.float32 and samples.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]
    be = np.array([16384], ">i2").tobytes()
    assert decode_payload(be, names, content_type="audio/L16")[0]["x"].tolist() == [0.5]
    v2 = {"id": "r1", "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                  "data": list(range(6))}]}
    inputs, extras = decode_payload(json.dumps(v2).encode(), names)
    assert np.array_equal(inputs["x"], arr) and extras == {"id": "r1"}
    bare = {"shape": [2, 3], "datatype": "FP32", "data": [[0, 1, 2], [3, 4, 5]]}
    assert np.array_equal(decode_payload(json.dumps(bare).encode(), names)[0]["x"], arr)
    b64 = json.dumps({"data": base64.b64encode(image).decode(), "id": 5}).encode()
    inputs, extras = decode_payload(b64, names)
    assert inputs["x"].shape == (12, 12, 3) and extras == {"id": 5}
    with pytest.raises(PayloadError, match="not a whole number of 16-bit samples"):
        decode_payload(b"\x00\x01\x02", names, codec="pcm")
    with pytest.raises(PayloadError, match="not valid base64"):
        decode_payload(b'{"data": "@@@"}', names, codec="base64")
    with pytest.raises(PayloadError, match="has inputs"):
        decode_payload(json.dumps(bare).encode(), ["a", "b"])
    with pytest.raises(PayloadError, match="model has no input 'y'"):
        decode_payload(json.dumps({"inputs": [{**bare, "name": "y"}]}).encode(), names)
    with pytest.raises(PayloadError, match="dtype <U1"):
        decode_payload(_npy(np.array(["a"])), names)


def test_jsonable_is_generic_and_strict():
    value = {"a": np.array([1.0, np.nan, np.inf], np.float32), "b": np.int64(3),
             "c": (np.float32(0.5), float("-inf")), "d": b"\x00\x01", "e": [{"k": np.bool_(True)}],
             "f": np.zeros((2, 2), np.uint8)}
    out = jsonable(value)
    assert out == {"a": [1.0, None, None], "b": 3, "c": [0.5, None], "d": "AAE=",
                   "e": [{"k": True}], "f": [[0, 0], [0, 0]]}
    json.dumps(out, allow_nan=False)


def test_answer_is_the_bridge_code_path(image_model):
    payload = jpeg_bytes(3)
    doc = json.loads(answer(image_model, payload, content_type="image/jpeg",
                            meta={"correlation": "c1"}))
    from edgepack.runtime.mqtt.codecs import decode_image
    want = image_model.predict(decode_image(payload))["logits"][0]
    assert doc["result"]["logits"] == jsonable(want)
    assert doc["model"] == "conv" and doc["version"] == "1" and doc["correlation"] == "c1"
    assert doc["label"] == want[0]["label"] and math.isfinite(doc["latency_ms"])
    ok, err = answer_or_error(image_model, b"", meta={"mid": 4})
    assert not ok and json.loads(err) == {"error": "empty payload; send an image, a .npy "
                                                   "array or a JSON tensor", "mid": 4}
    with pytest.raises(PayloadError, match="over the limit of 10 bytes"):
        answer(image_model, payload, max_payload_bytes=10)


def test_queue_policies():
    q = MessageQueue(3, "drop-oldest")
    dropped = [q.put(i) for i in range(5)]
    assert dropped == [None, None, None, 0, 1] and q.dropped == 2 and q.high_water == 3
    assert [q.get(0.01) for _ in range(4)] == [2, 3, 4, None]
    b = MessageQueue(1, "block")
    assert b.put("a") is None
    assert b.put("b", stopping=lambda: True) == "b"      # refused, never silently lost
    assert len(b) == 1 and b.dropped == 0


def test_backoff_grows_with_jitter_and_caps():
    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 8.0, rng) for a in range(8)]
    for attempt, delay in enumerate(delays):
        base = min(8.0, 0.5 * 2 ** attempt)
        assert base / 2 <= delay <= base
    assert len({round(backoff_delay(3, 0.5, 8.0, rng), 6) for _ in range(20)}) > 10


def test_imports_are_lazy_and_missing_paho_is_one_error():
    code = ("import sys, edgepack.runtime, edgepack.runtime.mqtt as m; "
            "assert not [k for k in sys.modules if k.startswith('paho')], 'paho imported'; "
            "sys.modules['paho'] = None; sys.modules['paho.mqtt'] = None\n"
            "from edgepack.runtime.mqtt.errors import require_paho\n"
            "try:\n    require_paho()\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("MqttError the MQTT bridge needs paho-mqtt 2.x: "
                                  "pip install 'edgepack[mqtt]'")


class _Info:
    """Stands for paho's MQTTMessageInfo: a mid and whether it is published."""

    def __init__(self, mid: int, published: bool = False):
        self.mid, self.published = mid, published

    def is_published(self) -> bool:
        return self.published


def test_acks_in_arrival_order_once_answers_are_delivered():
    from edgepack.runtime.mqtt.acks import AckBook
    sent: list[tuple[int, int]] = []
    book = AckBook(lambda mid, qos: sent.append((mid, qos)))
    book.new_connection(1)
    book.add(10, 1, 1, _Info(100))
    book.add(11, 1, 1, _Info(101))
    book.add(12, 1, 1, None)                   # dropped: handled, but after 10 and 11
    book.delivered(101)                        # 11's answer first: 10 still holds it back
    assert sent == [] and len(book) == 3
    book.delivered(100)
    assert sent == [(10, 1), (11, 1), (12, 1)] and len(book) == 0 and book.sent == 3
    # Delivered before the worker added it (paho reports it before marking the info).
    book.delivered(102)
    book.add(13, 1, 1, _Info(102))
    assert sent[-1] == (13, 1)
    book.add(14, 1, 1, _Info(103, published=True))
    assert sent[-1] == (14, 1)
    failed = _Info(105)
    failed.is_published = lambda: (_ for _ in ()).throw(RuntimeError("no connection"))
    book.add(18, 1, 1, failed)                 # paho raises for a publish while offline
    assert sent[-1] == (14, 1) and len(book) == 1
    book.new_connection(1)
    # A reconnect forgets what was pending; inputs of the old connection are never acked.
    book.add(15, 1, 1, _Info(104))
    book.new_connection(2)
    book.delivered(104)
    book.add(16, 1, 1, None)
    book.add(17, 1, 2, None)
    assert sent[-1] == (17, 1) and (15, 1) not in sent and (16, 1) not in sent


def test_result_properties_pack_like_paho():
    pytest.importorskip("paho.mqtt")
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from edgepack.runtime.mqtt.connection import result_properties
    make = result_properties("application/json")
    for correlation in (None, b"req-7", bytes(range(256)) * 3):
        want = Properties(PacketTypes.PUBLISH)
        want.ContentType = "application/json"
        if correlation is not None:
            want.CorrelationData = correlation
        got = make(correlation)
        assert got.pack() == want.pack() and got.packetType == PacketTypes.PUBLISH
        assert "ContentType" in str(got)
        parsed = Properties(PacketTypes.PUBLISH)
        parsed.unpack(got.pack())
        assert getattr(parsed, "CorrelationData", None) == correlation


def test_serve_and_mqtt_share_one_result_encoding():
    from edgepack.runtime import jsonsafe
    from edgepack.runtime.mqtt import results
    from edgepack.runtime.serve import inference
    assert results.jsonable is jsonsafe.jsonable and results.unbatch is jsonsafe.unbatch
    assert inference.jsonable_results is jsonsafe.jsonable_results
    assert inference.unbatch is jsonsafe.unbatch
    value = {"logits": np.array([[0.5, np.nan]], np.float32), "b": b"\x01"}
    assert inference.jsonable_results(value) == {"logits": [0.5, None], "b": "AQ=="}
    assert json.loads(results.encode({"x": jsonsafe.jsonable(np.float32(0.25))})) == {"x": 0.25}
