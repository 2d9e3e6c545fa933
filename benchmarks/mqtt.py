"""MQTT bridge throughput and latency vs in-process predict, against a real Mosquitto.

    .venv/bin/python benchmarks/mqtt.py [--duration 4] [--image 64] [--size 32] [--width 16]
                                        [--latency-messages 300]

Builds a small conv classifier bundle (fixed seed; JPEG --image px in, resized to --size),
starts mosquitto on a free 127.0.0.1 port and `edgepack mqtt` in a subprocess (as on a
device), then drives it from one publisher and one collector in this process:

- anchor: in-process `decode JPEG + Model.predict` on the same bytes, one thread (what an
  app's own loop would do per message), and predict alone on the decoded image;
- QoS 0: the publisher offers --offered x the in-process rate (faster than inference) for
  --duration s into a drop-oldest queue; results/s counted at the collector, drops
  reported by the bridge (a publisher flooding far beyond that mostly measures how fast
  paho's network thread can discard frames: it shares the GIL with the worker);
- QoS 1: --duration s worth of messages sent as fast as the in-flight window allows;
  results/s from the first publish to the last result (every input acknowledged after its
  result);
- latency: --latency-messages QoS 1 messages paced at half the QoS 1 rate; publish ->
  result received, p50/p99.

Ratios are to the in-process anchor measured in the same run (goal >= 0.8 at QoS 0). The
publisher and collector share this machine's cores with the bridge, so the ratio is a lower
bound of what remote cameras would see; on a shared machine quote ranges over several runs.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "mqtt"))


def build(directory: Path, image: int, size: int, width: int) -> tuple[Path, bytes]:
    import models
    from PIL import Image

    from edgepack.runtime import pack_bundle
    bundle = pack_bundle(directory / "conv.edgepack",
                         models.onnx_conv_classifier(seed=0, size=size, width=width),
                         name="conv", labels=["cat", "dog", "bird", "fish"],
                         preprocess={"x": [{"op": "resize", "size": [size, size]},
                                           {"op": "scale", "factor": 1 / 255},
                                           {"op": "layout", "from": "HWC", "to": "NCHW"}]},
                         postprocess={"logits": [{"op": "softmax"}, {"op": "topk", "k": 2}]})
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (image, image, 3), dtype=np.uint8)).save(
        buffer, "JPEG", quality=90)
    return bundle, buffer.getvalue()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_process_rates(bundle: Path, payload: bytes, seconds: float) -> tuple[float, float]:
    from edgepack.runtime import load
    from edgepack.runtime.images import decode_image
    with load(bundle, threads=1) as model:
        decoded = decode_image(payload)

        def rate(fn) -> float:
            for _ in range(20):
                fn()
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                fn()
                count += 1
            return count / (time.perf_counter() - start)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        full = rate(lambda: model.predict(decode_image(payload)))
        in_process_rates.cpu_ms = (time.process_time() - cpu0) * 1000 / (
            full * (time.perf_counter() - wall0))
        bare = rate(lambda: model.predict(decoded))
    return full, bare


class Side:
    """The benchmark's publisher + collector (one paho client each)."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.received: list[tuple[float, bytes]] = []
        self.cond = threading.Condition()
        self.pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}",
                               protocol=mqtt.MQTTv5)
        self.pub.max_inflight_messages_set(64)
        self.pub.max_queued_messages_set(0)
        self.sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:6]}",
                               protocol=mqtt.MQTTv5)
        self.sub.on_message = self._on_message
        for c in (self.pub, self.sub):
            c.connect("127.0.0.1", port, 30)
            c.loop_start()
        done = threading.Event()
        self.sub.on_subscribe = lambda *a: done.set()
        self.sub.subscribe("bench/+/out", 1)
        done.wait(10)

    def _on_message(self, client, userdata, msg):
        now = time.perf_counter()
        with self.cond:
            self.received.append((now, getattr(msg.properties, "CorrelationData", None)))
            self.cond.notify_all()

    def reset(self) -> None:
        with self.cond:
            self.received = []

    def wait(self, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < count and time.monotonic() < deadline:
                self.cond.wait(0.2)
            return len(self.received)

    def publish(self, topic: str, payload: bytes, qos: int, seq: int):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = str(seq).encode()
        return self.pub.publish(topic, payload, qos=qos, properties=props)

    def close(self) -> None:
        for c in (self.pub, self.sub):
            c.disconnect()
            c.loop_stop()


def start_bridge(bundle: Path, url: str, work: Path, protocol: str) -> subprocess.Popen:
    config = work / "bridge.toml"
    config.write_text(
        f'[broker]\nurl = "{url}"\nclient_id = "bench-bridge"\nprotocol = "{protocol}"\n'
        '[[subscribe]]\ntopic = "bench/q0/in"\npublish = "bench/q0/out"\nqos = 0\n'
        'queue_size = 8\n'
        '[[subscribe]]\ntopic = "bench/q1/in"\npublish = "bench/q1/out"\nqos = 1\n'
        'queue_size = 32\n')
    proc = subprocess.Popen([sys.executable, "-m", "edgepack.cli.main", "mqtt", str(bundle),
                             "--config", str(config), "--threads", "1", "--poll", "0",
                             "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--image", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5",
                        help="MQTT version the bridge speaks")
    parser.add_argument("--offered", type=float, default=1.25,
                        help="QoS 0 offered load as a multiple of the in-process rate")
    args = parser.parse_args()
    from mqtt_broker import Broker, free_port

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle, payload = build(work, args.image, args.size, args.width)
        full, bare = in_process_rates(bundle, payload, min(args.duration, 3.0))
        broker = Broker(work / "broker", free_port())
        broker.directory.mkdir()
        broker.start()
        bridge = start_bridge(bundle, broker.url, work, args.protocol)
        side = None
        try:
            side = Side(broker.port)
            # Ready when a QoS 1 probe is answered (bounded).
            for i in range(100):
                side.publish("bench/q1/in", payload, 1, -1 - i)
                if side.wait(1, 0.3):
                    break
            else:
                raise SystemExit(f"the bridge did not answer: {bridge.stderr.read()[-2000:]}")
            side.reset()
            anchor_cpu_ms = in_process_rates.cpu_ms

            # QoS 0 at --offered x the in-process rate, paced in bursts of 8.
            interval = 8 / (args.offered * full)
            sent, start = 0, time.perf_counter()
            cpu_before = cpu_seconds(bridge.pid)
            while time.perf_counter() - start < args.duration:
                for _ in range(8):
                    side.publish("bench/q0/in", payload, 0, sent)
                    sent += 1
                delay = start + (sent / 8) * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            side.wait(sent, 2.0)
            answered0 = [t for t, _ in side.received]
            cpu_q0 = (cpu_seconds(bridge.pid) - cpu_before) * 1000 / max(1, len(answered0))
            window = (answered0[-1] - start) if answered0 else args.duration
            q0 = len(answered0) / window
            side.reset()
            full_after, _ = in_process_rates(bundle, payload, min(args.duration, 3.0))
            full = (full + full_after) / 2     # the anchor around the bridge runs

            # QoS 1: as many as the in-flight windows allow, all answered.
            n1 = max(200, int(full * args.duration))
            cpu_before = cpu_seconds(bridge.pid)
            start = time.perf_counter()
            for i in range(n1):
                side.publish("bench/q1/in", payload, 1, i)
            got = side.wait(n1, 60 + args.duration * 4)
            q1 = got / ((side.received[-1][0] - start) if got else 1.0)
            cpu_q1 = (cpu_seconds(bridge.pid) - cpu_before) * 1000 / max(1, got)
            side.reset()

            # Latency at half the QoS 1 rate.
            gap = 2.0 / max(q1, 1.0)
            sent_at = []
            for i in range(args.latency_messages):
                sent_at.append(time.perf_counter())
                side.publish("bench/q1/in", payload, 1, i)
                time.sleep(gap)
            side.wait(args.latency_messages, 30)
            # One QoS 1 lane answers in order, nothing dropped: the i-th result is the i-th
            # message (MQTT 3.1.1 carries no correlation data to match by).
            lat = np.array([(t - s) * 1000 for (t, _), s in zip(side.received, sent_at)])
        finally:
            if side is not None:
                side.close()
            bridge.send_signal(signal.SIGTERM)
            try:
                out, err = bridge.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                bridge.kill()
                out, err = bridge.communicate()
            broker.stop()
    stats = json.loads(out) if out.strip().startswith("{") else {}
    subs = {s["topic"]: s for s in stats.get("subscriptions", [])}
    dropped = subs.get("bench/q0/in", {}).get("dropped", "?")
    from edgepack.runtime.benchmark import cpu_description
    print(f"MQTT {args.protocol} bridge vs in-process, conv classifier {args.size}x{args.size} "
          f"(JPEG {args.image}x{args.image}), 1 engine thread ({cpu_description()}; other processes "
          "share the machine: quote ranges)")
    print(f"  in-process decode+predict {full:8.0f} msg/s   (predict alone {bare:.0f}/s; "
          f"mean of before/after the QoS 0 run)")
    print(f"  bridge QoS 0              {q0:8.0f} msg/s   ratio {q0 / full:.2f} "
          f"(goal >= 0.8); offered {sent / args.duration:.0f}/s: sent {sent}, answered "
          f"{len(answered0)}, dropped {dropped}")
    print(f"  bridge QoS 1              {q1:8.0f} msg/s   ratio {q1 / full:.2f}; "
          f"{n1} sent, {got} answered")
    print(f"  CPU per message: in-process {anchor_cpu_ms:.2f} ms; bridge process QoS 0 "
          f"{cpu_q0:.2f} ms (drops included), QoS 1 {cpu_q1:.2f} ms (load-independent view "
          "of the overhead)")
    if lat.size:
        print(f"  end-to-end latency QoS 1 at {1 / gap:.0f} msg/s: p50 {np.percentile(lat, 50):.2f} ms, "
              f"p99 {np.percentile(lat, 99):.2f} ms ({lat.size} messages)")


if __name__ == "__main__":
    main()
