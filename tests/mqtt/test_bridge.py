"""The bridge against a real Mosquitto: results equal in-process predict, order, QoS 1 acks,
status + last will, Home Assistant discovery, metrics."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from mqtt_helpers import bridge_config, expected, jpeg_bytes, png_bytes

from edgepack.runtime.mqtt import MqttBridge, Subscription


def test_one_image_round_trip(broker, image_model, clients, topic):
    sub = clients(broker).subscribe(f"{topic}/cameras/+/detections")
    config = bridge_config(broker, [Subscription(f"{topic}/cameras/+/frame",
                                                 f"{topic}/cameras/{{1}}/detections", qos=1)])
    payload = jpeg_bytes(1)
    with MqttBridge(config, image_model) as bridge:
        clients(broker).publish(f"{topic}/cameras/front/frame", payload, correlation=b"req-7")
        got = sub.wait_for(1, timeout=20)
        # the result can reach the subscriber before the bridge's counters move, and the
        # input's PUBACK goes out only once the broker has acknowledged the result
        stats = bridge.wait_until(lambda s: s["acknowledged"] >= 1, timeout=20)
    assert len(got) == 1
    assert got[0].topic == f"{topic}/cameras/front/detections"
    assert got[0].properties.CorrelationData == b"req-7"
    doc = json.loads(got[0].payload)
    assert doc["model"] == "conv" and doc["version"] == "1"
    assert doc["correlation"] == "req-7" and doc["topic"] == f"{topic}/cameras/front/frame"
    assert doc["result"] == expected(image_model, payload)
    assert doc["label"] == doc["result"]["logits"][0]["label"]
    assert doc["latency_ms"] > 0
    assert stats["subscriptions"][0]["answered"] == 1 and stats["subscriptions"][0]["errors"] == 0
    assert stats["acknowledged"] == 1 and stats["ack_pending"] == 0


def test_bridge_socket_sends_small_packets_at_once(broker, image_model, topic):
    """TCP_NODELAY on the bridge's socket: with Nagle's algorithm each small PUBACK / result
    waited for the broker's delayed ACK of the previous one (QoS 1 at ~300 msg/s on a model
    that runs 2000/s; 630 msg/s with it, benchmarks/mqtt.py)."""
    import socket
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out", qos=1)])
    with MqttBridge(config, image_model) as bridge:
        sock = bridge._connection.client.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest.mark.slow
def test_thousand_qos1_images_exact_and_in_order(broker, image_model, clients, topic):
    """1,000 QoS 1 messages over two topics -> exactly 1,000 results, in order per topic,
    each equal to in-process predict on the same bytes."""
    n = 1000
    payloads = [jpeg_bytes(i) if i % 2 else png_bytes(i) for i in range(40)]
    want = [expected(image_model, p) for p in payloads]
    sub = clients(broker).subscribe(f"{topic}/+/out", qos=1)
    config = bridge_config(broker, [Subscription(f"{topic}/+/in", f"{topic}/{{1}}/out", qos=1)])
    with MqttBridge(config, image_model) as bridge:
        pub = clients(broker)
        infos = [pub.publish(f"{topic}/{'ab'[i % 2]}/in", payloads[i % len(payloads)],
                             correlation=str(i).encode()) for i in range(n)]
        for info in infos:
            info.wait_for_publish(30)
        got = sub.wait_for(n, timeout=60)
        # Every input acknowledged, i.e. every result in the broker's hands: the bridge's
        # own counts then say that nothing more is coming (answered = results published).
        everything = bridge.wait_until(lambda s: s["acknowledged"] >= n, timeout=60)
        stats = everything["subscriptions"][0]
    assert len(got) == n and everything["acknowledged"] == n
    assert stats["received"] == n
    docs = [json.loads(m.payload) for m in got]
    for camera in "ab":
        seq = [int(d["correlation"]) for d in docs if d["topic"] == f"{topic}/{camera}/in"]
        assert seq == sorted(seq) and len(seq) == n // 2
    for d in docs:
        assert d["result"] == want[int(d["correlation"]) % len(payloads)]
    assert stats["answered"] == n and stats["errors"] == 0 and stats["dropped"] == 0
    assert stats["high_water"] <= stats["queue_size"]


def test_status_retained_and_last_will(broker, image_model, clients, topic):
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out")],
                           status_topic=f"{topic}/status")
    bridge = MqttBridge(config, image_model).start()
    try:
        online = clients(broker).subscribe(f"{topic}/status").wait_for(1, timeout=10)
        assert online[0].retain
        doc = json.loads(online[0].payload)
        assert doc["state"] == "online"
        assert doc["models"] == [{"name": "conv", "version": "1"}]
    finally:
        # Kill the connection without a DISCONNECT: the broker must publish the last will.
        bridge._connection._stop.set()
        bridge._client._sock_close()
        bridge._halt_threads()
        bridge._client.loop_stop()
    # The broker publishes the will once it notices the dead socket: a subscriber may first
    # get the retained "online", then "offline".
    late = clients(broker).subscribe(f"{topic}/status").wait_until(
        lambda m: json.loads(m.payload)["state"] == "offline", timeout=30)
    assert late and json.loads(late[-1].payload)["state"] == "offline"
    again = clients(broker).subscribe(f"{topic}/status").wait_for(1, timeout=10)
    assert again[0].retain and json.loads(again[0].payload)["state"] == "offline"


def test_clean_stop_publishes_offline(broker, image_model, clients, topic):
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out")],
                           status_topic=f"{topic}/status")
    with MqttBridge(config, image_model):
        pass
    got = clients(broker).subscribe(f"{topic}/status").wait_for(1, timeout=10)
    assert len(got) == 1 and got[0].retain       # the stop waited for the broker's PUBACK
    assert json.loads(got[0].payload)["state"] == "offline"


def test_homeassistant_discovery(broker, image_model, clients, topic):
    prefix = f"{topic}/ha"
    config = bridge_config(broker, [Subscription(f"{topic}/kitchen/in", f"{topic}/kitchen/out"),
                                    Subscription(f"{topic}/+/frame", f"{topic}/{{1}}/result")],
                           status_topic=f"{topic}/status", homeassistant=True,
                           discovery_prefix=prefix)
    sub = clients(broker).subscribe(f"{prefix}/#")
    with MqttBridge(config, image_model):
        first = sub.wait_for(1, timeout=10)
        clients(broker).publish(f"{topic}/door/frame", jpeg_bytes(3))
        both = sub.wait_for(2, timeout=20)
    assert len(first) >= 1 and len(both) == 2
    # A subscriber arriving later (Home Assistant restarting) gets them retained.
    late = clients(broker).subscribe(f"{prefix}/#").wait_for(2, timeout=10)
    configs = {m.topic: (m.retain, json.loads(m.payload)) for m in late}
    node = config.client_id.replace(".", "_")
    kitchen = f"{prefix}/sensor/{node}/{topic}_kitchen_out/config"
    door = f"{prefix}/sensor/{node}/{topic}_door_result/config"
    assert set(configs) == {kitchen, door}
    retained, doc = configs[kitchen]
    assert retained
    assert doc["state_topic"] == f"{topic}/kitchen/out"
    assert doc["json_attributes_topic"] == f"{topic}/kitchen/out"
    assert doc["availability_topic"] == f"{topic}/status"
    assert doc["payload_available"] == "online" and doc["payload_not_available"] == "offline"
    assert doc["device"]["model"] == "conv" and doc["device"]["sw_version"] == "1"
    assert doc["unique_id"] and doc["value_template"].startswith("{{ value_json.label")
    assert configs[door][1]["state_topic"] == f"{topic}/door/result"


def test_metrics_in_serve_registry(broker, image_model, clients, topic):
    from edgepack.runtime.serve.metrics import Metrics
    metrics = Metrics()
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out")])
    sub = clients(broker).subscribe(f"{topic}/out")
    with MqttBridge(config, image_model, metrics) as bridge:
        pub = clients(broker)
        for i in range(3):
            pub.publish(f"{topic}/in", jpeg_bytes(i))
        pub.publish(f"{topic}/in", b"")
        assert len(sub.wait_for(3, timeout=20)) == 3
        labels = (("subscription", f"{topic}/in"),)
        bridge.wait_until(lambda s: s["acknowledged"] >= 4, timeout=30)   # all 4 handled
    assert metrics.counter("edgepack_mqtt_messages_received_total", labels) == 4
    assert metrics.counter("edgepack_mqtt_messages_published_total", labels) == 3
    assert metrics.counter("edgepack_mqtt_message_errors_total", labels) == 1
    text = metrics.render()
    assert 'edgepack_inference_seconds_count{model="conv",transport="mqtt",version="1"} 3' in text \
        or 'edgepack_inference_seconds_count{model="conv",version="1",transport="mqtt"} 3' in text


def test_mqtt_311_round_trip_with_json_id(broker, image_model, clients, topic):
    """MQTT 3.1.1 has no correlation data: a JSON payload's "id" identifies the answer."""
    import base64
    sub = clients(broker).subscribe(f"{topic}/out")
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out", qos=1)],
                           broker_options={"protocol": "3.1.1"})
    payload = jpeg_bytes(8)
    body = json.dumps({"id": "frame-42", "data": base64.b64encode(payload).decode()}).encode()
    with MqttBridge(config, image_model):
        clients(broker).publish(f"{topic}/in", body)
        got = sub.wait_for(1, timeout=20)
    doc = json.loads(got[0].payload)
    assert doc["id"] == "frame-42" and doc["mid"] > 0 and "correlation" not in doc
    assert doc["result"] == expected(image_model, payload)
