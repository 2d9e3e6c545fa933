"""The bridge's diagnostic mode (``[bridge] phases = true``): per-step timers in each of
its threads, against the real broker, with the answers unchanged."""
from __future__ import annotations

import json

from mqtt_helpers import bridge_config, expected, jpeg_bytes

from edgepack.runtime.mqtt import MqttBridge, Subscription
from edgepack.runtime.mqtt.phases import Laps, PhaseBook


def test_laps_charge_each_step_the_time_since_the_last_mark():
    laps = Laps()
    total = sum(range(200_000))         # CPU work charged to "sum"
    laps.mark("sum")
    laps.mark("nothing")
    laps.mark("nothing")
    assert total > 0 and laps.count == {"sum": 1, "nothing": 2}
    assert laps.cpu["sum"] > 0 and laps.wall["sum"] >= laps.cpu["sum"] * 0.5
    assert laps.cpu["nothing"] < laps.cpu["sum"]
    report = PhaseBook().report()
    assert report == {}


def test_phases_time_every_step_of_every_answer(broker, image_model, clients, topic):
    n = 5
    sub = clients(broker).subscribe(f"{topic}/out")
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out", qos=1)],
                           phases=True)
    with MqttBridge(config, image_model) as bridge:
        pub = clients(broker)
        for i in range(n):
            pub.publish(f"{topic}/in", jpeg_bytes(i))
        got = sub.wait_for(n, timeout=20)
        stats = bridge.wait_until(lambda s: s["acknowledged"] >= n, timeout=20)
    assert [json.loads(m.payload)["result"] for m in got] == [
        expected(image_model, jpeg_bytes(i)) for i in range(n)]
    phases = stats["phases"]
    worker = phases[f"edgepack-mqtt-{topic}/in"]
    steps = worker["steps"]
    for step in ("properties + lease", "decode", "predict", "result document",
                 "metrics + topic", "publish", "ack + counters"):
        assert steps[step]["n"] == n, step
        assert steps[step]["wall_us"] >= 0 and steps[step]["cpu_us"] >= 0
    assert steps["decode"]["cpu_us"] > 0 and steps["predict"]["cpu_us"] > 0
    assert worker["tid"] > 0 and worker["cpu_s"] > 0
    network = [v for k, v in phases.items() if k.startswith("paho-mqtt-client")]
    assert len(network) == 1 and network[0]["steps"]["on_message"]["n"] == n


def test_phases_are_off_by_default(broker, image_model, topic):
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out")])
    with MqttBridge(config, image_model) as bridge:
        assert "phases" not in bridge.stats()


def test_switch_interval_is_set_while_the_bridge_runs(broker, image_model, topic):
    """`switch_interval_ms` sets Python's GIL switch interval from start() to stop() and
    puts the previous one back; out-of-range values are refused with the range."""
    import sys

    import pytest

    from edgepack.runtime.mqtt import MqttError
    before = sys.getswitchinterval()
    config = bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out")],
                           switch_interval_ms=0.5)
    with MqttBridge(config, image_model):
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before
    with pytest.raises(MqttError, match=r"switch_interval_ms 0 is out of range: give 0 < "
                                        r"ms <= 1000"):
        bridge_config(broker, [Subscription(f"{topic}/in", f"{topic}/out")],
                      switch_interval_ms=0)
