"""Faults: malformed payloads, back-pressure at QoS 0, broker restart mid QoS 1 stream,
TLS and password logins, hot swap under MQTT load."""
from __future__ import annotations

import io
import json
import shutil
import threading
import time

import numpy as np
import pytest
from mqtt_helpers import bridge_config, expected, jpeg_bytes, make_bundle

from edgepack.runtime.mqtt import MqttBridge, MqttError, Subscription


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_malformed_payloads_each_one_error_and_serving_goes_on(broker, image_model, clients,
                                                              topic):
    good = jpeg_bytes(5)
    bad = [
        ("truncated JPEG", good[: len(good) // 2], "could not be decoded as an image"),
        ("wrong dtype (.npy complex)", _npy(np.ones((8, 8, 3), np.complex64)), "dtype complex64"),
        ("wrong dtype (JSON text in FP32)", json.dumps(
            {"shape": [2], "datatype": "FP32", "data": ["a", "b"]}).encode(), "FP32"),
        ("wrong shape", _npy(np.ones((5,), np.float32)), "(5,)"),
        ("empty", b"", "empty payload"),
        ("50 MB", b"\xff\xd8\xff" + bytes(50 * 1024 * 1024), "over the limit"),
        ("not any format", b"hello", "cannot tell the payload's format"),
    ]
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out", qos=1)],
                           error_topic=f"{topic}/errors")
    errors = clients(broker).subscribe(f"{topic}/errors")
    results = clients(broker).subscribe(f"{topic}/out")
    with MqttBridge(config, image_model) as bridge:
        pub = clients(broker)
        for i, (_, payload, _) in enumerate(bad):
            pub.publish(f"{topic}/in", payload, correlation=f"bad-{i}".encode())
        pub.publish(f"{topic}/in", good, correlation=b"good")
        got_errors = errors.wait_for(len(bad), timeout=30)
        got_results = results.wait_for(1, timeout=30)
        # All inputs acknowledged = every answer is with the broker: the counts are final.
        everything = bridge.wait_until(lambda s: s["acknowledged"] >= len(bad) + 1, timeout=30)
        stats = everything["subscriptions"][0]
    assert len(got_errors) == len(bad) and everything["acknowledged"] == len(bad) + 1
    docs = [json.loads(m.payload) for m in got_errors]
    for i, ((what, _, reason), doc) in enumerate(zip(bad, docs)):
        assert doc["correlation"] == f"bad-{i}", what
        assert reason in doc["error"], (what, doc["error"])
        assert "\n" not in doc["error"] and len(doc["error"]) <= 500
    assert len(got_results) == 1 and json.loads(got_results[0].payload)["correlation"] == "good"
    assert stats["errors"] == len(bad) and stats["answered"] == 1


class SlowModel:
    """The image model with 20 ms added per inference: a camera faster than the model."""

    def __init__(self, model, delay: float = 0.02):
        self.model, self.delay = model, delay
        self.name, self.version, self.inputs = model.name, model.version, model.inputs

    def predict(self, inputs):
        time.sleep(self.delay)
        return self.model.predict(inputs)


def test_qos0_drop_oldest_stays_in_bound_and_counts_drops(broker, image_model, clients, topic):
    from edgepack.runtime.serve.metrics import Metrics
    metrics = Metrics()
    n, size = 200, 4
    config = bridge_config(broker, [Subscription(f"{topic}/cam", f"{topic}/res", qos=0,
                                                 queue_size=size)])
    results = clients(broker).subscribe(f"{topic}/res", qos=0)
    payload = jpeg_bytes(9)
    with MqttBridge(config, SlowModel(image_model), metrics) as bridge:
        pub = clients(broker)
        for i in range(n):
            pub.publish(f"{topic}/cam", payload, qos=0, correlation=str(i).encode())
        def settled(s):                           # every received message answered or dropped
            lane = s["subscriptions"][0]
            return lane["received"] == n and lane["answered"] + lane["dropped"] == n
        stats = bridge.wait_until(settled, timeout=30)["subscriptions"][0]
        answers = results.wait_for(stats["answered"], timeout=20)
    assert len(answers) == stats["answered"]
    assert stats["received"] == n
    assert stats["dropped"] > 0 and stats["answered"] + stats["dropped"] == n
    assert stats["high_water"] <= size and stats["policy"] == "drop-oldest"
    assert metrics.counter("edgepack_mqtt_messages_dropped_total",
                           (("subscription", f"{topic}/cam"),)) == stats["dropped"]
    seqs = [int(json.loads(m.payload)["correlation"]) for m in answers]
    assert seqs == sorted(seqs) and seqs[-1] == n - 1     # the newest frame is answered


@pytest.mark.slow
@pytest.mark.parametrize("network_thread", [True, False], ids=["threads", "one-thread"])
def test_broker_restart_mid_qos1_stream_loses_nothing(own_broker, image_model, clients, topic,
                                                      network_thread):
    n = 300
    payloads = [jpeg_bytes(i) for i in range(10)]
    collector = clients(own_broker, client_id=f"collector-{topic}", persistent=True)
    collector.client.reconnect_delay_set(0.1, 1)
    collector.subscribe(f"{topic}/out", qos=1)
    config = bridge_config(own_broker, [Subscription(f"{topic}/in", f"{topic}/out", qos=1)],
                           network_thread=network_thread)
    publisher = clients(own_broker, client_id=f"publisher-{topic}", persistent=True)
    publisher.client.reconnect_delay_set(0.1, 1)
    with MqttBridge(config, image_model) as bridge:
        def publish_all():
            for i in range(n):
                publisher.publish(f"{topic}/in", payloads[i % 10], correlation=str(i).encode())
                time.sleep(0.004)
        thread = threading.Thread(target=publish_all)
        thread.start()
        collector.wait_for(60, timeout=60)        # restart once results are flowing
        own_broker.restart()
        thread.join(timeout=60)
        collector.wait_for_all(
            lambda ms: len({json.loads(m.payload)["correlation"] for m in ms}) >= n, timeout=90)
        stats = bridge.stats()
    docs = collector.json()
    by_id: dict[str, list[dict]] = {}
    for d in docs:
        by_id.setdefault(d["correlation"], []).append(d)
    missing = sorted({str(i) for i in range(n)} - set(by_id), key=int)
    assert stats["reconnects"] >= 1, stats
    assert not missing, (f"{len(missing)} lost: {missing[:20]}; publisher still queued "
                         f"{len(publisher.client._out_messages)}; bridge {stats}")  # 0 lost
    assert set(by_id) == {str(i) for i in range(n)}
    for key, group in by_id.items():                             # duplicates are identical
        assert all(d["result"] == group[0]["result"] for d in group), key
    duplicates = len(docs) - len(by_id)
    print(f"results {len(docs)}, unique {len(by_id)}, duplicates before dedup {duplicates}")


@pytest.mark.parametrize("network_thread", [True, False], ids=["threads", "one-thread"])
def test_tls_and_password_login(secure_broker, image_model, clients, topic, network_thread):
    login = {"username": "camera", "password": "s3cret-pw"}
    sub = clients(secure_broker, **login).subscribe(f"{topic}/out")
    config = bridge_config(secure_broker, [Subscription(f"{topic}/in", f"{topic}/out")],
                           broker_options=dict(login), network_thread=network_thread)
    assert config.broker.tls is not None and config.broker.port == secure_broker.port
    with MqttBridge(config, image_model):
        clients(secure_broker, **login).publish(f"{topic}/in", jpeg_bytes(2))
        got = sub.wait_for(1, timeout=20)
    assert len(got) == 1 and json.loads(got[0].payload)["model"] == "conv"


def test_wrong_password_is_a_clear_error(secure_broker, image_model, topic):
    config = bridge_config(secure_broker, [Subscription(f"{topic}/in", f"{topic}/out")],
                           broker_options={"username": "camera", "password": "wrong"})
    with pytest.raises(MqttError) as caught:
        MqttBridge(config, image_model).start()
    message = str(caught.value)
    assert "refused the connection" in message and "--username/--password" in message
    assert "Bad user name or password" in message or "Not authorized" in message
    assert caught.value.exit_code == 10


def test_tls_without_the_ca_is_a_clear_error(secure_broker, image_model, topic):
    from edgepack.runtime.mqtt import BridgeConfig, BrokerConfig, TlsConfig
    config = BridgeConfig(BrokerConfig.from_url(secure_broker.url, username="camera",
                                                password="s3cret-pw", tls=TlsConfig()),
                          (Subscription(f"{topic}/in", f"{topic}/out"),))
    with pytest.raises(MqttError, match="TLS handshake .* failed: .*--ca-file"):
        MqttBridge(config, image_model).start()


def test_unreachable_broker_is_a_clear_error(image_model, topic):
    from edgepack.runtime.mqtt import BridgeConfig, BrokerConfig
    from mqtt_broker import free_port
    config = BridgeConfig(BrokerConfig.from_url(f"mqtt://127.0.0.1:{free_port()}"),
                          (Subscription(f"{topic}/in", f"{topic}/out"),))
    with pytest.raises(MqttError, match="cannot connect to the MQTT broker at 127.0.0.1:.*running"):
        MqttBridge(config, image_model).start()


@pytest.mark.slow
def test_hot_swap_under_mqtt_load(broker, clients, topic, tmp_path):
    from edgepack.runtime import load
    from edgepack.runtime.serve import ServeConfig
    from edgepack.runtime.serve.manager import ModelManager
    from edgepack.runtime.serve.metrics import Metrics
    repo = tmp_path / "repo"
    (repo / "conv").mkdir(parents=True)
    make_bundle(repo / "conv" / "1.edgepack", seed=0, version="1")
    staged = make_bundle(tmp_path / "v2.edgepack", seed=7, version="2")
    payload = jpeg_bytes(4)
    want = {}
    for version, path in (("1", repo / "conv" / "1.edgepack"), ("2", staged)):
        with load(path) as m:
            want[version] = expected(m, payload)
    assert want["1"] != want["2"]
    metrics = Metrics()
    manager = ModelManager(repo, ServeConfig(poll_interval=0.2), metrics)
    manager.sync(settle=False)
    manager.start_watching()
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out", qos=1)],
                           error_topic=f"{topic}/errors")
    results = clients(broker).subscribe(f"{topic}/out")
    errors = clients(broker).subscribe(f"{topic}/errors")
    try:
        with MqttBridge(config, manager, metrics):
            pub = clients(broker)
            sent = 0
            deadline = time.monotonic() + 40
            swapped_at = None
            while time.monotonic() < deadline:
                pub.publish(f"{topic}/in", payload, correlation=str(sent).encode())
                sent += 1
                time.sleep(0.01)
                if sent == 50:
                    tmp = repo / "conv" / ".2.tmp"
                    shutil.copy(staged, tmp)
                    tmp.rename(repo / "conv" / "2.edgepack")
                    swapped_at = sent
                if swapped_at and sent % 20 == 0 and results.json() and \
                        results.json()[-1]["version"] == "2":
                    break
            for _ in range(20):
                pub.publish(f"{topic}/in", payload, correlation=str(sent).encode())
                sent += 1
            got = results.wait_for(sent, timeout=30)
    finally:
        manager.close()
    docs = [json.loads(m.payload) for m in got]
    versions = [d["version"] for d in docs]
    assert len(docs) == sent and not errors.messages                # 0 failures
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions == sorted(versions)                              # one switch, no flapping
    for d in docs:
        assert d["result"] == want[d["version"]]
