"""The benchmark's MQTT clients: a raw-socket QoS 0 publisher, the paho QoS 1 publisher and
result collector (`Side`), and `edgepack mqtt` in a subprocess (`Bridge`)."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from edgepack.runtime.mqtt.lean import mqtt_varint


def _str16(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class RawPublisher:
    """QoS 0 PUBLISH packets written straight to a socket: the cheapest load generator
    (paho spends ~50-100 us of Python per publish, which on a 2-core host is CPU taken
    from the bridge being measured)."""

    def __init__(self, port: int, protocol: str):
        self.v5 = protocol == "5"
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        header = _str16("MQTT") + bytes([5 if self.v5 else 4, 0x02]) + struct.pack("!H", 60)
        body = header + (b"\x00" if self.v5 else b"") + _str16(f"bench-raw-{uuid.uuid4().hex[:6]}")
        self.sock.sendall(b"\x10" + mqtt_varint(len(body)) + body)
        ack = self.sock.recv(16)
        if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
            raise SystemExit(f"the broker refused the raw publisher: {ack!r}")

    def packet(self, topic: str, payload: bytes, correlation: bytes | None) -> bytes:
        props = b""
        if self.v5:
            p = b"" if correlation is None else b"\x09" + struct.pack("!H", len(correlation)) \
                + correlation
            props = mqtt_varint(len(p)) + p
        body = _str16(topic) + props + payload
        return b"\x30" + mqtt_varint(len(body)) + body

    def paced(self, topic: str, payload: bytes, rate: float, seconds: float
              ) -> tuple[int, float]:
        """`payload` on `topic` at `rate` msg/s for `seconds`, in bursts of 8 with the
        message number as correlation data: (messages sent, seconds taken)."""
        sent, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.send(b"".join(self.packet(topic, payload, b"%d" % (sent + k))
                               for k in range(8)))
            sent += 8
            delay = start + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return sent, time.perf_counter() - start

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")     # DISCONNECT
        finally:
            self.sock.close()


class Side:
    """The benchmark's paho publisher (QoS 1) and collector (results by topic).

    Both are paho clients with the bridge's cheaper receive path (runtime/mqtt/lean.py,
    paho's own Client on other paho versions): the collector receives every result the
    bridge publishes, and with paho's receive path it took 0.3-0.6 ms of CPU per answered
    message on the same 2 cores as the bridge it measures (the publisher+collector figure
    printed). The anchor, the offered load and what is counted are unchanged by this."""

    def __init__(self, port: int, protocol: str):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edgepack.runtime.mqtt.lean import client_class
        version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self.v5 = protocol == "5"
        self.received: dict[str, list[tuple[float, bytes | None, bytes]]] = {}
        self.cond = threading.Condition()
        self.pub = client_class()(CallbackAPIVersion.VERSION2, protocol=version,
                                  client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
        self.pub.max_inflight_messages_set(64)
        self.pub.max_queued_messages_set(0)
        self.sub = client_class()(CallbackAPIVersion.VERSION2, protocol=version,
                                  client_id=f"bench-sub-{uuid.uuid4().hex[:6]}")
        self.sub.on_message = self._on_message
        subscribed = threading.Event()
        self.sub.on_subscribe = lambda *a: subscribed.set()
        for c in (self.pub, self.sub):
            c.connect("127.0.0.1", port, 30)
            c.loop_start()
        self.sub.subscribe("bench/out/+", 1)
        if not subscribed.wait(10):
            raise SystemExit("the collector's subscription was not acknowledged")

    def _on_message(self, client, userdata, msg) -> None:
        now = time.perf_counter()
        props = msg.properties if self.v5 else None
        value = getattr(props, "value", None)       # lean.LazyProperties
        correlation = (value("CorrelationData") if value is not None
                       else getattr(props, "CorrelationData", None))
        with self.cond:
            self.received.setdefault(msg.topic.rsplit("/", 1)[1], []).append(
                (now, correlation, msg.payload))
            self.cond.notify_all()

    def results(self, phase: str) -> list[tuple[float, bytes | None, bytes]]:
        with self.cond:
            return list(self.received.get(phase, []))

    def forget(self, phase: str) -> None:
        with self.cond:
            self.received.pop(phase, None)

    def wait(self, phase: str, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received.get(phase, [])) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return len(self.received.get(phase, []))

    def publish(self, phase: str, payload: bytes, seq: int):
        properties = None
        if self.v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = str(seq).encode()
        return self.pub.publish(f"bench/in/{phase}", payload, qos=1, properties=properties)

    def close(self) -> None:
        for c in (self.pub, self.sub):
            c.disconnect()
            c.loop_stop()


class Bridge:
    """`edgepack mqtt` in a subprocess with one subscription at `qos`."""

    def __init__(self, bundle: Path, url: str, work: Path, protocol: str, qos: int,
                 network_thread: bool = True, phases: bool = False,
                 cpus: set[int] | None = None, switch_ms: float | None = None):
        config = work / f"bridge-q{qos}.toml"
        config.write_text(
            f'[broker]\nurl = "{url}"\nclient_id = "bench-bridge-q{qos}"\n'
            f'protocol = "{protocol}"\n'
            f'[[subscribe]]\ntopic = "bench/in/+"\npublish = "bench/out/{{1}}"\nqos = {qos}\n'
            f'queue_size = {8 if qos == 0 else 32}\n'
            f'[bridge]\nnetwork_thread = {"true" if network_thread else "false"}\n'
            + ('phases = true\n' if phases else '')
            + (f'switch_interval_ms = {switch_ms}\n' if switch_ms else ''))
        self.stats: dict = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgepack.cli.main", "mqtt", str(bundle), "--config",
             str(config), "--threads", "1", "--poll", "0", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    def ready(self, side: Side, publish) -> None:
        """Probe on the 'probe' topic until one answer comes back (bounded)."""
        for i in range(200):
            if self.proc.poll() is not None:
                break
            publish(i)
            if side.wait("probe", 1, 0.3):
                return
        self.proc.kill()
        raise SystemExit(f"the bridge did not answer: {self.proc.communicate()[1][-2000:]}")

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        stats = json.loads(out) if out.strip().startswith("{") else {}
        self.stats = stats
        subs = stats.get("subscriptions") or [{}]
        return subs[0]
