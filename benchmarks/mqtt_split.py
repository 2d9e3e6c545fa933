"""A measured prototype, not the bridge: the MQTT network side in a process of its own.

    .venv/bin/python benchmarks/mqtt_split.py [--rounds 4] [--duration 3] [--batches 1,8]
    .venv/bin/python benchmarks/mqtt_split.py --answer-path

Question (issue 16, the tiny line): does moving paho out of the process that decodes and
predicts bring QoS 0 to 0.8 of the anchor? Here one process runs paho (edgepack's lean
client), a drop-oldest queue of 8 and the publishing of results; the other loads the bundle
and runs the bridge's own answer path (`predict_raw`, `result_bytes`), with no MQTT code at
all. They talk over a pipe: the inference process asks for work and gets up to --batches
messages at once (1: one per hand-over; 8: the whole queue), and sends the answers back in
one message. QoS 0, MQTT 5, one lane, no acks, no hot swap, no status: what is measured is
the cost of the design, not a bridge.

Per round, interleaved, on the tiny line of benchmarks/mqtt.py (same bundle, JPEG, broker,
raw-socket load at 1.25x the anchor for --duration s, collector): the anchor (in-process
decode + predict, one thread), then each prototype variant, then the real bridge (`edgepack
mqtt`, two threads). Printed: results/s over the anchor's rate, and CPU per answer of the
inference process, of the network process, of mosquitto and of this process (publisher +
collector).
"""
from __future__ import annotations

import json
import os
import signal
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests"),
                str(ROOT / "tests" / "mqtt")]

from mqtt_bench.procstat import cpu_seconds  # noqa: E402


def _pack(*parts: bytes) -> bytes:
    return struct.pack("!" + "I" * len(parts), *map(len, parts)) + b"".join(parts)


def _unpack(data: bytes, n: int) -> list[bytes]:
    sizes = struct.unpack_from("!" + "I" * n, data)
    out, pos = [], 4 * n
    for s in sizes:
        out.append(data[pos:pos + s])
        pos += s
    return out


#: Messages handed to the inference process at once (set per variant by the harness).
BATCH = int(os.environ.get("EDGEPACK_SPLIT_BATCH", "8"))


def _join(parts: list[bytes]) -> bytes:
    return struct.pack("!I", len(parts)) + b"".join(struct.pack("!I", len(p)) + p for p in parts)


def _split(data: bytes) -> list[bytes]:
    if not data:
        return []
    (count,), pos, out = struct.unpack_from("!I", data), 4, []
    for _ in range(count):
        (size,) = struct.unpack_from("!I", data, pos)
        out.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return out


def network_main(port: int, conn) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgepack.runtime.mqtt.connection import result_properties
    from edgepack.runtime.mqtt.lean import client_class
    client = client_class()(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                            client_id="split-proto")
    queue: deque = deque()
    cond = threading.Condition()
    counts = {"received": 0, "dropped": 0, "answered": 0}

    def on_raw(topic, payload, qos, mid, dup, properties):
        corr = properties.value("CorrelationData") if properties is not None else None
        with cond:
            counts["received"] += 1
            if len(queue) >= 8:
                queue.popleft()
                counts["dropped"] += 1
            queue.append((topic, corr or b"", payload))
            cond.notify()
    client.raw_publish = on_raw
    client.on_message = lambda *a: None
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    client.subscribe("bench/in/+", 0)
    subscribed.wait(10)
    make = result_properties("application/json")
    publish = client.publish_qos0
    conn.send_bytes(b"ready")
    try:
        while True:
            msg = conn.recv_bytes()
            if msg == b"stop":
                break
            for one in _split(msg):
                topic, corr, body = _unpack(one, 3)
                publish(topic.decode(), body, make(corr or None))
                counts["answered"] += 1
            stopping = False
            with cond:
                while not queue:
                    cond.wait(0.05)
                    if not queue and conn.poll():
                        stopping = conn.recv_bytes() == b"stop"
                        break
                if stopping:
                    break
                items = [queue.popleft() for _ in range(min(len(queue), BATCH))]
            conn.send_bytes(_join([_pack(*item) for item in items]))
    finally:
        conn.send_bytes(json.dumps(counts).encode())
        client.disconnect()
        client.loop_stop()


def serve(bundle: str, port: int) -> None:
    import multiprocessing as mp
    ctx = mp.get_context("fork")          # before onnxruntime is imported
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=network_main, args=(port, theirs), daemon=True)
    child.start()
    from edgepack.runtime import load
    from edgepack.runtime.mqtt.results import predict_raw, result_bytes
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    model = load(bundle, threads=1)
    assert ours.recv_bytes() == b"ready"
    name, version = model.name, model.version
    ours.send_bytes(b"")
    while not stop.is_set():
        if not ours.poll(0.2):
            continue
        answers = []
        for item in _split(ours.recv_bytes()):
            topic, corr, payload = _unpack(item, 3)
            start = time.perf_counter()
            result, extras = predict_raw(model, payload)
            latency = (time.perf_counter() - start) * 1000.0
            t = topic.decode()
            meta = {"topic": t, "mid": 0, "correlation": corr.decode()}
            body = result_bytes(name, version, result, latency, meta)
            out = "bench/out/" + t.rsplit("/", 1)[1]
            answers.append(_pack(out.encode(), corr, body))
        ours.send_bytes(_join(answers))
    ours.send_bytes(b"stop")
    counts = json.loads(ours.recv_bytes())
    print(json.dumps({"subscriptions": [counts]}), flush=True)


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the prototype's network process)."""
    total = cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += cpu_seconds(int(child))
    return total


def bench(rounds: int, duration: float, batches: list[int]) -> None:
    import subprocess
    import tempfile

    from mqtt import LINES, build, in_process
    from mqtt_bench.clients import Bridge, RawPublisher, Side
    from mqtt_broker import Broker, free_port
    from edgepack.runtime.benchmark import cpu_description
    print(cpu_description())
    work = Path(tempfile.mkdtemp(prefix="split-"))
    bundle, payload = build(work, *LINES["tiny"])
    broker = Broker(work / "broker", free_port())
    broker.directory.mkdir()
    broker.start()
    side = Side(broker.port, "5")
    raw = RawPublisher(broker.port, "5")
    rows = []
    try:
        for r in range(rounds):
            anchor = in_process(bundle, payload, 2.0)
            row = {"anchor": anchor.rate, "anchor_cpu_ms": anchor.cpu_ms}
            kinds = [f"split{b}" for b in batches] + ["standard"]
            for kind in kinds:
                if kind.startswith("split"):
                    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(bundle),
                                             str(broker.port)], stdout=subprocess.PIPE,
                                            text=True, env={**os.environ,
                                                            "EDGEPACK_SPLIT_BATCH": kind[5:]})
                    pid = proc.pid
                else:
                    bridge = Bridge(bundle, broker.url, work, "5", 0)
                    proc, pid = bridge.proc, bridge.proc.pid
                phase = f"{kind}{r}"
                for i in range(200):
                    raw.send(raw.packet("bench/in/probe", payload, b"p%d" % i))
                    if side.wait("probe", 1, 0.3):
                        break
                side.forget("probe")
                time.sleep(0.3)
                cpu0 = _tree_cpu(pid)
                main0, broker0 = cpu_seconds(pid), cpu_seconds(broker.process.pid)
                own0 = time.process_time()
                start = time.perf_counter()
                sent, _ = raw.paced(f"bench/in/{phase}", payload, 1.25 * anchor.rate,
                                    duration)
                side.wait(phase, sent, 1.5)
                got = side.results(phase)
                cpu1 = _tree_cpu(pid)
                n = max(1, len(side.results(phase)))
                row[kind + "_split"] = (
                    f"main {(cpu_seconds(pid) - main0) * 1000 / n:.3f}, children "
                    f"{(cpu1 - cpu0 - cpu_seconds(pid) + main0) * 1000 / n:.3f}, broker "
                    f"{(cpu_seconds(broker.process.pid) - broker0) * 1000 / n:.3f}, harness "
                    f"{(time.process_time() - own0) * 1000 / n:.3f} ms/answer")
                window = got[-1][0] - start if got else duration
                row[kind] = len(got) / window / anchor.rate
                row[kind + "_cpu_ms"] = (cpu1 - cpu0) * 1000 / max(1, len(got))
                if kind.startswith("split"):
                    proc.send_signal(signal.SIGTERM)
                    out, _ = proc.communicate(timeout=30)
                    row[kind + "_stats"] = out.strip()[-120:]
                else:
                    bridge.stop()
            rows.append(row)
            print(f"round {r}: anchor {row['anchor']:.0f}/s ({row['anchor_cpu_ms']:.3f} ms CPU); "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            for kind in kinds:
                print(f"  {kind}: ratio {row[kind]:.2f}; {row[kind + '_split']} "
                      f"{row.get(kind + '_stats', '')}", flush=True)
    finally:
        raw.close()
        side.close()
        broker.stop()


def answer_path(seconds: float = 2.0, repeats: int = 3) -> None:
    """CPU per message in one process: the anchor's loop, the bridge's answer code, and
    the same with a pipe round trip per message (an echo process), 1 engine thread."""
    import multiprocessing as mp
    import tempfile

    from mqtt import LINES, build
    from edgepack.runtime.benchmark import cpu_description
    ctx = mp.get_context("fork")           # before onnxruntime is imported
    ours, theirs = ctx.Pipe()
    echo = ctx.Process(target=_echo, args=(theirs,), daemon=True)
    echo.start()
    from edgepack.runtime import load
    from edgepack.runtime.images import decode_image
    from edgepack.runtime.mqtt.results import predict_raw, result_bytes
    print(cpu_description())
    bundle, payload = build(Path(tempfile.mkdtemp(prefix="split-")), *LINES["tiny"])
    model = load(bundle, threads=1)
    meta = {"topic": "bench/in/x", "mid": 0, "correlation": "12"}

    def cpu_us(fn) -> float:
        for _ in range(50):
            fn()
        count, cpu0, start = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            count += 1
        return (time.process_time() - cpu0) / count * 1e6

    def answer(data: bytes) -> None:
        result, _ = predict_raw(model, data)
        result_bytes(model.name, model.version, result, 0.1, meta)

    def piped() -> None:
        ours.send_bytes(payload)
        answer(ours.recv_bytes())
    for _ in range(repeats):
        print(f"anchor {cpu_us(lambda: model.predict(decode_image(payload))):.0f} us, the "
              f"bridge's answer code {cpu_us(lambda: answer(payload)):.0f} us, + a pipe "
              f"round trip {cpu_us(piped):.0f} us (CPU of this process per message)",
              flush=True)
    ours.send_bytes(b"stop")
    echo.join(5)


def _echo(conn) -> None:
    while (message := conn.recv_bytes()) != b"stop":
        conn.send_bytes(message)


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per run")
    parser.add_argument("--batches", default="1,8",
                        help="prototype variants: messages per hand-over, comma-separated")
    parser.add_argument("--serve", nargs=2, metavar=("BUNDLE", "PORT"),
                        help=argparse.SUPPRESS)   # the prototype (the harness starts it)
    parser.add_argument("--answer-path", action="store_true",
                        help="only the in-process loops: anchor, answer code, + pipe")
    args = parser.parse_args()
    if args.answer_path:
        answer_path()
    elif args.serve:
        serve(args.serve[0], int(args.serve[1]))
    else:
        bench(args.rounds, args.duration, [int(b) for b in args.batches.split(",")])


if __name__ == "__main__":
    main()
