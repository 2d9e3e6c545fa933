"""The bridge's cheaper send path: `LeanClient._send_publish` and `publish_qos0` queue the
same PUBLISH bytes as paho 2.2's own `publish` (MQTT 3.1.1 and 5, QoS 0 and 1, with and
without properties, short and long payloads); `result_bytes` writes the same result message
as `encode(result_document(...))` of the JSON-safe result, also where its fast pass gives
up (NaN, tuples, object arrays, non-str labels)."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("paho.mqtt")

import paho.mqtt
import paho.mqtt.client as pm
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgepack.runtime.mqtt import lean
from edgepack.runtime.mqtt.connection import result_properties
from edgepack.runtime.mqtt.results import (encode, jsonable, result_bytes, result_document,
                                          unbatch)

needs_tested_paho = pytest.mark.skipif(
    not lean.paho_tested(paho.mqtt.__version__),
    reason=f"the lean path is used with paho-mqtt {lean.TESTED} only")


class _Sock:
    def close(self) -> None:
        pass


def _queued(cls: type, v5: bool) -> pm.Client:
    client = cls(callback_api_version=CallbackAPIVersion.VERSION2, client_id="t",
                 protocol=pm.MQTTv5 if v5 else pm.MQTTv311)
    client._sock = _Sock()          # "connected": packets are queued, not written
    client._thread = object()       # threaded mode: publish() queues only
    client._sockpairW = None
    return client


def _plain_properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.CorrelationData = b"id-7"
    props.UserProperty = ("k", "v")
    return props


PROPERTIES = {
    "none": lambda: None,
    "paho": _plain_properties,
    "packed": lambda: result_properties("application/json")(None),
    "packed-correlation": lambda: result_properties("application/json")(b"\xff corr"),
}


def _protocols_and_properties(names):
    """(v5, properties) pairs that exist: MQTT 3.1.1 has no properties."""
    return [(False, "none")] + [(True, name) for name in names]


@needs_tested_paho
@pytest.mark.parametrize("v5, props", _protocols_and_properties(sorted(PROPERTIES)))
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("size", [0, 20, 127, 300, 70_000])
def test_lean_publish_packs_paho_s_bytes(v5, qos, props, size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    packets = []
    for cls in (pm.Client, lean.client_class()):
        client = _queued(cls, v5)
        for topic in ("cam/1/out", "r" * 200):
            info = client.publish(topic, payload, qos=qos, retain=qos == 1,
                                  properties=PROPERTIES[props]())
            assert info.rc == 0
        packets.append([(p["command"], p["mid"], p["qos"], bytes(p["packet"]))
                        for p in client._out_packet])
    assert packets[0] == packets[1]
    assert len(packets[0]) == 2


@needs_tested_paho
@pytest.mark.parametrize("v5, props",
                         _protocols_and_properties(["none", "packed", "packed-correlation"]))
def test_publish_qos0_queues_what_publish_does(v5, props):
    paho_client, lean_client = _queued(pm.Client, v5), _queued(lean.client_class(), v5)
    for payload in (b"", b'{"model":"m"}', b"x" * 200):
        paho_client.publish("cam/2/out", payload, qos=0, properties=PROPERTIES[props]())
        assert lean_client.publish_qos0("cam/2/out", payload, PROPERTIES[props]()) is True
    want = [(p["command"], p["mid"], p["qos"], bytes(p["packet"]))
            for p in paho_client._out_packet]
    got = [(p["command"], p["mid"], p["qos"], bytes(p["packet"]))
           for p in lean_client._out_packet]
    assert got == want and len(got) == 3
    with pytest.raises(ValueError, match="Publish topic cannot contain wildcards"):
        lean_client.publish_qos0("cam/+/out", b"x")
    lean_client._sock = None
    assert lean_client.publish_qos0("cam/2/out", b"x") is False     # paho: MQTT_ERR_NO_CONN
    lean_client._sock = _Sock()
    lean_client._packet_write = lambda: 0
    assert lean_client._out_packet[-1]["info"]._set_as_published() is None


def _walked(result, latency, meta):
    plain = {key: jsonable(unbatch(value)) for key, value in result.items()}
    return encode(result_document("m", "3", plain, latency, meta))


RESULTS = {
    "classifier": {"top_k": [{"label": "cat", "score": np.float32(0.7), "index": np.int64(3)},
                             {"label": "dog", "score": 0.2, "index": 1}],
                   "probabilities": np.linspace(0, 1, 16, dtype=np.float32)},
    "detections": {"detections": [{"box": np.array([1.5, 2, 3, 4]), "label": "car",
                                   "score": np.float64(0.9)}], "count": np.int32(1)},
    "nan in an array": {"logits": np.array([1.0, math.nan, math.inf], np.float32)},
    "nan float": {"score": math.nan, "top_k": [{"label": "a"}]},
    "tuple top-k": {"top_k": ({"label": "first"}, {"label": "second"})},
    "object array": {"top_k": np.array([{"label": "o"}], dtype=object)},
    "numpy label": {"top_k": [{"label": np.str_("np"), "score": 1.0}]},
    "bytes label": {"top_k": [{"label": b"raw", "score": 1.0}]},
    "no label first": {"a": [{"x": 1}], "b": [{"label": 5}], "c": [[1, 2]]},
    "nested mapping": {"meta": {"k": np.uint8(7), "s": "t", "b": b"\x00\x01"},
                       "flags": np.array([True, False])},
    "strings": {"words": np.array(["a", "b"]), "none": None, "empty": []},
}


@pytest.mark.parametrize("name", sorted(RESULTS))
@pytest.mark.parametrize("meta", [None, {"topic": "t/1", "mid": 4, "queued_ms": 0.25},
                                  {"topic": "t", "mid": 0, "dup": True, "correlation": "c",
                                   "id": math.nan, "extra": np.float32(2.5)}])
def test_result_bytes_equal_the_walked_document(name, meta):
    result = {key: unbatch(value) for key, value in RESULTS[name].items()}
    assert result_bytes("m", "3", result, 1.23456, meta) == _walked(result, 1.23456, meta)
