"""By default paho's network thread and one worker per subscription; with one subscription
and ``network_thread=False``, one thread (its worker drives paho's network loop). Both
against the real broker: answered, in order, acknowledged, within the queue bound."""
from __future__ import annotations

import json
import threading

from mqtt_helpers import bridge_config, expected, jpeg_bytes

from edgepack.runtime.mqtt import MqttBridge, Subscription


def _network_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client")]


def test_one_thread_has_no_network_thread(broker, image_model, clients, topic):
    sub = clients(broker).subscribe(f"{topic}/out")
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out", qos=1)],
                           network_thread=False)
    before = _network_threads()
    with MqttBridge(config, image_model) as bridge:
        assert bridge.inline and bridge._client._thread is None
        assert _network_threads() == before
        clients(broker).publish(f"{topic}/in", jpeg_bytes(5), correlation=b"one")
        got = sub.wait_for(1, timeout=20)
        stats = bridge.wait_until(lambda s: s["acknowledged"] >= 1, timeout=20)
    assert len(got) == 1 and json.loads(got[0].payload)["result"] == expected(
        image_model, jpeg_bytes(5))
    assert stats["acknowledged"] == 1 and stats["ack_pending"] == 0


def test_two_subscriptions_keep_the_network_thread(broker, image_model, topic):
    """`network_thread=False` applies to one subscription only: two keep paho's thread."""
    config = bridge_config(broker, [Subscription(f"{topic}/a", f"{topic}/ra"),
                                    Subscription(f"{topic}/b", f"{topic}/rb")],
                           network_thread=False)
    with MqttBridge(config, image_model) as bridge:
        assert not bridge.inline and bridge._client._thread is not None


def test_network_thread_is_the_default_and_a_config_key(broker, image_model, clients,
                                                         topic):
    """One subscription: paho's thread + a worker by default; `[bridge] network_thread =
    false` in a config file gives the one-thread bridge."""
    from edgepack.runtime.mqtt.config import config_from_mapping

    def config(**bridge):
        return config_from_mapping({
            "broker": {"url": broker.url, "client_id": f"nt-{topic}"},
            "subscribe": [{"topic": f"{topic}/in", "publish": f"{topic}/out", "qos": 1}],
            "bridge": bridge})
    assert MqttBridge(config(network_thread=False), image_model).inline
    sub = clients(broker).subscribe(f"{topic}/out")
    with MqttBridge(config(), image_model) as bridge:
        assert not bridge.inline and bridge._client._thread is not None
        clients(broker).publish(f"{topic}/in", jpeg_bytes(2))
        got = sub.wait_for(1, timeout=20)
    assert json.loads(got[0].payload)["result"] == expected(image_model, jpeg_bytes(2))


def test_inline_full_block_queue_answers_in_order_within_its_bound(broker, image_model,
                                                                    clients, topic):
    """QoS 1 into a queue of 2 (`block`), over MQTT 3.1.1 (no Receive Maximum: the broker
    sends up to its own in-flight limit of 20, so the queue fills). The one thread cannot
    wait for room in the network callback, so it answers the oldest there: every message
    answered once, in order, acknowledged, and the queue never deeper than 2."""
    n = 60
    payloads = [jpeg_bytes(i) for i in range(n)]
    want = [expected(image_model, p) for p in payloads]
    sub = clients(broker).subscribe(f"{topic}/out", qos=1)
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out", qos=1,
                                                 queue_size=2)],
                           broker_options={"protocol": "3.1.1"}, network_thread=False)
    with MqttBridge(config, image_model) as bridge:
        assert bridge.inline
        pub = clients(broker)
        infos = [pub.publish(f"{topic}/in", p) for p in payloads]
        for info in infos:
            info.wait_for_publish(30)
        got = sub.wait_for(n, timeout=60)
        stats = bridge.wait_until(lambda s: s["acknowledged"] >= n, timeout=60)
    lane = stats["subscriptions"][0]
    assert [json.loads(m.payload)["result"] for m in got] == want
    assert stats["acknowledged"] == n and lane["answered"] == n and lane["dropped"] == 0
    assert lane["high_water"] <= 2 and lane["policy"] == "block"
