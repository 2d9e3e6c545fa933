"""MQTT bridge throughput and latency vs in-process predict, against a real Mosquitto.

    .venv/bin/python benchmarks/mqtt.py [--duration 4] [--lines tiny,camera]
                                        [--protocol 5|3.1.1] [--offered 1.25]
                                        [--latency-messages 300] [--one-thread] [--phases] [--pin]
                                        [--switch-interval MS] [--interleave 6]

Two model lines, each with its own anchor (fixed seeds):

- ``tiny``: a 32x32 conv classifier fed 64x64 JPEGs (~0.5 ms per message in process: the
  bridge's own per-message cost shows at its worst);
- ``camera``: a 160x160 conv classifier (64 channels) fed 320x240 JPEGs, a few ms per
  inference, like a small camera model.

Per line: mosquitto on a free 127.0.0.1 port, and `edgepack mqtt` in a subprocess (as on a
device), started once per QoS with one subscription, ``bench/in/+`` -> ``bench/out/{1}``.
Every phase publishes on its own topic level, so a late result of one phase is never
counted in another.

- anchor: in-process `decode JPEG + Model.predict` on the same bytes, one thread (what an
  app's own loop would do per message), before and after the bridge runs (mean reported);
  predict alone on the decoded image for reference;
- QoS 0: --offered x the anchor rate for --duration s into a drop-oldest queue of 8.
  The load comes from a raw-socket publisher (pre-encoded PUBLISH packets: a few us per
  message), not paho, so the load generator does not take the CPU the bridge needs on a
  2-core host. Results/s counted at the collector, drops reported by the bridge;
- QoS 0 interleaved (--interleave rounds, a diagnostic printed next to the headline):
  with a bridge started for it (the QoS 0 counters and timers stay the phase's own),
  0.5 s of the anchor (the bridge idle) then 1 s of the same load, in alternation, so
  each bridge window has an anchor window a second away (ratio and CPU ratio per round);
- QoS 1: --duration s worth of messages from paho as fast as the in-flight windows allow;
  results/s from the first publish to the last result;
- latency: --latency-messages QoS 1 messages paced at half the QoS 1 rate; each result is
  matched to its request by correlation data (MQTT 5) or by order on the phase's own topic
  (MQTT 3.1.1: one QoS 1 lane answers in order, nothing dropped); publish -> result, both
  time stamps taken in this process with time.perf_counter (one clock). Sanity check: every
  request answered once, every latency positive and at least the bridge's own
  queued_ms + latency_ms for it; a failed check exits 1 instead of printing numbers.

CPU per answered message is reported for each process (bridge, mosquitto, this process =
publisher + collector) from /proc: on a shared machine it moves less than rates do.
Ratios are to the anchor measured in the same run (goal >= 0.8 at QoS 0).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "mqtt"))

from mqtt_bench.clients import Bridge, RawPublisher, Side  # noqa: E402
from mqtt_bench.procstat import Cpu, cpu_seconds, thread_cpu_seconds, thread_sched  # noqa: E402

LINES = {  # name: (JPEG width, JPEG height, model input size, conv width)
    "tiny": (64, 64, 32, 16),
    "camera": (320, 240, 160, 64),
}


def build(directory: Path, width: int, height: int, size: int, channels: int
          ) -> tuple[Path, bytes]:
    import models
    from PIL import Image

    from edgepack.runtime import pack_bundle
    bundle = pack_bundle(directory / f"conv{size}.edgepack",
                         models.onnx_conv_classifier(seed=0, size=size, width=channels),
                         name="conv", labels=["cat", "dog", "bird", "fish"],
                         preprocess={"x": [{"op": "resize", "size": [size, size]},
                                           {"op": "scale", "factor": 1 / 255},
                                           {"op": "layout", "from": "HWC", "to": "NCHW"}]},
                         postprocess={"logits": [{"op": "softmax"}, {"op": "topk", "k": 2}]})
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buffer, "JPEG", quality=90)
    return bundle, buffer.getvalue()


@dataclass
class Anchor:
    """The in-process figures: decode+predict msg/s and its process CPU ms per message;
    predict alone msg/s; thread CPU us of a decode alone and of a predict alone."""

    rate: float
    cpu_ms: float
    bare: float
    decode_us: float
    predict_us: float
    #: thread CPU us of the decode and of the predict inside the decode+predict loop (what
    #: the bridge worker does per message): each runs colder than in a loop of its own
    loop_decode_us: float = 0.0
    loop_predict_us: float = 0.0


def in_process(bundle: Path, payload: bytes, seconds: float) -> Anchor:
    """The anchor, one thread: what an app's own loop does per message."""
    from edgepack.runtime import load
    from edgepack.runtime.images import decode_image
    with load(bundle, threads=1) as model:
        decoded = decode_image(payload)

        def rate(fn, limit: float = seconds) -> tuple[float, float, float]:
            for _ in range(10):
                fn()
            count, cpu0, start = 0, time.process_time(), time.perf_counter()
            thread0 = time.thread_time()
            while time.perf_counter() - start < limit:
                fn()
                count += 1
            wall = time.perf_counter() - start
            return (count / wall, (time.process_time() - cpu0) * 1000 / count,
                    (time.thread_time() - thread0) * 1e6 / count)
        full, cpu_ms, _ = rate(lambda: model.predict(decode_image(payload)))
        bare, _, predict_us = rate(lambda: model.predict(decoded))
        _, _, decode_us = rate(lambda: decode_image(payload), min(seconds, 1.0))
        clock = time.thread_time_ns
        count = spent_decode = spent_predict = 0
        start = time.perf_counter()
        while time.perf_counter() - start < min(seconds, 1.0):
            t0 = clock()
            image = decode_image(payload)
            t1 = clock()
            model.predict(image)
            spent_decode += t1 - t0
            spent_predict += clock() - t1
            count += 1
    return Anchor(full, cpu_ms, bare, decode_us, predict_us,
                  spent_decode / 1000 / count, spent_predict / 1000 / count)


@dataclass
class Round:
    """One round of `interleaved`: the anchor alone, then the bridge under the QoS 0 load,
    each measured over its own window."""

    anchor_rate: float
    anchor_cpu_ms: float       # this process's CPU per decode+predict
    bridge_rate: float         # answers received per second of the load window
    bridge_cpu_ms: float       # the bridge process's CPU per answer


def interleaved(rounds: int, bundle: Path, payload: bytes, side: "Side",
                raw: "RawPublisher", bridge_pid: int, rate: float, anchor_s: float = 0.5,
                load_s: float = 1.0) -> list[Round]:
    """Anchor and bridge measured in alternation, `rounds` times: `anchor_s` of in-process
    decode+predict (one thread, the bridge idle), then `load_s` of the QoS 0 load at `rate`
    msg/s on its own topic per round. The before/after anchor is minutes away from the
    bridge's phases, and on a shared host the speed of the same code drifts by 1.5x within
    a minute; here each bridge window has an anchor window a second away."""
    from edgepack.runtime import load
    from edgepack.runtime.images import decode_image
    out = []
    with load(bundle, threads=1) as model:
        for _ in range(10):
            model.predict(decode_image(payload))
        for k in range(rounds):
            count, cpu0, start = 0, time.process_time(), time.perf_counter()
            while time.perf_counter() - start < anchor_s:
                model.predict(decode_image(payload))
                count += 1
            a_wall = time.perf_counter() - start
            a_cpu = (time.process_time() - cpu0) * 1000 / count
            topic = f"il{k}"
            b_cpu0 = cpu_seconds(bridge_pid)
            sent, window = raw.paced(f"bench/in/{topic}", payload, rate, load_s)
            side.wait(topic, sent, 0.3)     # the queue's last few (at most 8) arrive
            got = len(side.results(topic))
            b_cpu = (cpu_seconds(bridge_pid) - b_cpu0) * 1000 / max(1, got)
            side.forget(topic)
            out.append(Round(count / a_wall, a_cpu, got / window, b_cpu))
    return out


def interleaved_line(rounds: list[Round]) -> str:
    ratio = sorted(r.bridge_rate / r.anchor_rate for r in rounds)
    cpu = sorted(r.bridge_cpu_ms / r.anchor_cpu_ms for r in rounds)
    anchors = sorted(r.anchor_rate for r in rounds)
    bridges = sorted(r.bridge_rate for r in rounds)
    return (f"  QoS 0 interleaved with the anchor ({len(rounds)} rounds of 0.5 s anchor, 1 s "
            f"load): ratio median {float(np.median(ratio)):.2f} (range {ratio[0]:.2f}-"
            f"{ratio[-1]:.2f}); anchor {anchors[0]:.0f}-{anchors[-1]:.0f} msg/s, bridge "
            f"{bridges[0]:.0f}-{bridges[-1]:.0f}; bridge CPU per answer / anchor CPU per "
            f"message median {float(np.median(cpu)):.2f} (range {cpu[0]:.2f}-{cpu[-1]:.2f})")


def phase_lines(label: str, stats: dict, before: dict[int, float], after: dict[int, float],
                answered: int, sched0: dict[int, tuple[int, int, int]] | None = None,
                sched1: dict[int, tuple[int, int, int]] | None = None) -> list[str]:
    """The bridge's per-thread CPU over the phase (/proc, per answered message) and its
    own per-step timers (mean thread CPU / wall us per step, from `[bridge] phases`;
    these also count the readiness probes and the settling after the phase); with
    `sched0`/`sched1` (`thread_sched` before and after), each thread's voluntary and
    involuntary context switches and its time runnable but off the CPU, per answer."""
    n = max(1, answered)
    phases = stats.get("phases") or {}
    names = {entry.get("tid"): name for name, entry in phases.items()}
    lines = [f"  {label} bridge threads, CPU per answered message over the phase "
             "(steps: thread CPU / wall us each, count):"]
    for tid, cpu in sorted(after.items()):
        used = (cpu - before.get(tid, 0.0)) * 1e6 / n
        if used < 1:
            continue
        name = names.get(tid, "other (main, reconnect supervisor, engine)")
        sched = ""
        if sched0 is not None and sched1 is not None and tid in sched1:
            v0, i0, w0 = sched0.get(tid, (0, 0, 0))
            v1, i1, w1 = sched1[tid]
            sched = (f" (switches per answer: {(v1 - v0) / n:.2f} voluntary, "
                     f"{(i1 - i0) / n:.2f} involuntary; runnable off-CPU "
                     f"{(w1 - w0) / 1000 / n:.0f} us)")
        lines.append(f"    {name}: {used:.0f} us{sched}")
        steps = (phases.get(name) or {}).get("steps") or {}
        for step, figures in steps.items():
            lines.append(f"        {step:38s} {figures['cpu_us']:8.1f} / "
                         f"{figures['wall_us']:8.1f}  x{figures['n']}")
    return lines


def latency_check(lat: np.ndarray, inside: np.ndarray, expected: int) -> str | None:
    """Why the latency figures cannot be right, or None."""
    if lat.size != expected:
        return f"{lat.size} of {expected} requests matched to a result"
    if (lat <= 0).any():
        return f"{int((lat <= 0).sum())} latencies <= 0 (min {lat.min():.3f} ms)"
    short = lat + 0.05 < inside
    if short.any():
        return (f"{int(short.sum())} end-to-end latencies shorter than the bridge's own "
                "queued_ms + latency_ms for the same message")
    return None


class Pinning:
    """--pin: the bridge (all its threads) and the anchor on the last core, mosquitto and
    this process's publisher and collector on the others, so that the model work of both
    runs on a core of its own; other processes on the host still go anywhere."""

    def __init__(self, enabled: bool):
        cores = sorted(os.sched_getaffinity(0))
        self.all = set(cores)
        self.bridge = {cores[-1]} if enabled else None
        self.rest = set(cores[:-1]) if enabled else None

    def anchor(self, fn, *a):
        if self.bridge is None:
            return fn(*a)
        os.sched_setaffinity(0, self.bridge)     # this thread only
        try:
            return fn(*a)
        finally:
            os.sched_setaffinity(0, self.all)

    def load_side(self, broker_pid: int) -> None:
        """mosquitto's threads and this thread (clients started later inherit it)."""
        if self.rest is None:
            return
        for tid in os.listdir(f"/proc/{broker_pid}/task"):
            os.sched_setaffinity(int(tid), self.rest)
        os.sched_setaffinity(0, self.rest)

    def release(self) -> None:
        if self.rest is not None:
            os.sched_setaffinity(0, self.all)


def run_line(name: str, args: argparse.Namespace, work: Path, pin: bool = False
             ) -> list[str]:
    from mqtt_broker import Broker, free_port
    width, height, size, channels = LINES[name]
    work.mkdir(parents=True, exist_ok=True)
    bundle, payload = build(work, width, height, size, channels)
    seconds = min(args.duration, 3.0)
    pinning = Pinning(pin)
    anchor0 = pinning.anchor(in_process, bundle, payload, seconds)
    full0 = anchor0.rate
    broker = Broker(work / f"broker-{name}", free_port())
    broker.directory.mkdir()
    broker.start()
    out: list[str] = []
    try:
        pinning.load_side(broker.process.pid)
        side = Side(broker.port, args.protocol)
        raw = RawPublisher(broker.port, args.protocol)
        try:
            # --- QoS 0 at --offered x the anchor, paced in bursts of 8 ---------------
            bridge = Bridge(bundle, broker.url, work, args.protocol, 0, not args.one_thread,
                            args.phases, pinning.bridge, args.switch_interval)
            bridge.ready(side, lambda i: raw.send(raw.packet("bench/in/probe", payload,
                                                              b"p%d" % i)))
            rate = args.offered * full0
            cpu0 = Cpu.now(bridge.proc.pid, broker.process.pid)
            threads0 = thread_cpu_seconds(bridge.proc.pid)
            sched0 = thread_sched(bridge.proc.pid)
            start = time.perf_counter()     # results are timed from the first publish
            sent, offered_s = raw.paced("bench/in/q0", payload, rate, args.duration)
            # Settled: what is still queued in the bridge (at most its queue of 8) arrives.
            side.wait("q0", sent, 2.0)
            got0 = side.results("q0")
            cpu1 = Cpu.now(bridge.proc.pid, broker.process.pid)
            threads1 = thread_cpu_seconds(bridge.proc.pid)
            sched1 = thread_sched(bridge.proc.pid)
            stats0 = bridge.stop()
            window = (got0[-1][0] - start) if got0 else args.duration
            q0 = len(got0) / window
            bridge0_stats = bridge.stats

            # --- QoS 0 interleaved with the anchor: a bridge of its own, so the
            # counters and phase timers above are the QoS 0 phase's alone ------------
            rounds: list[Round] = []
            if args.interleave:
                bridge = Bridge(bundle, broker.url, work, args.protocol, 0,
                                not args.one_thread, False, pinning.bridge,
                                args.switch_interval)
                side.forget("probe")
                bridge.ready(side, lambda i: raw.send(raw.packet("bench/in/probe", payload,
                                                                  b"p%d" % i)))
                rounds = interleaved(args.interleave, bundle, payload, side, raw,
                                     bridge.proc.pid, rate)
                bridge.stop()

            # --- QoS 1: as many as the in-flight windows allow, all answered ---------
            bridge = Bridge(bundle, broker.url, work, args.protocol, 1, not args.one_thread,
                            args.phases, pinning.bridge, args.switch_interval)
            side.forget("probe")
            bridge.ready(side, lambda i: side.publish("probe", payload, -1 - i))
            n1 = max(200, int(full0 * args.duration))
            cpu2 = Cpu.now(bridge.proc.pid, broker.process.pid)
            threads2 = thread_cpu_seconds(bridge.proc.pid)
            sched2 = thread_sched(bridge.proc.pid)
            start = time.perf_counter()
            for i in range(n1):
                side.publish("q1", payload, i)
            got1 = side.wait("q1", n1, 60 + args.duration * 4)
            cpu3 = Cpu.now(bridge.proc.pid, broker.process.pid)
            threads3 = thread_cpu_seconds(bridge.proc.pid)
            sched3 = thread_sched(bridge.proc.pid)
            last = side.results("q1")
            q1 = got1 / ((last[-1][0] - start) if got1 else 1.0)

            # --- latency at half the QoS 1 rate --------------------------------------
            gap = 2.0 / max(q1, 1.0)
            sent_at: list[float] = []
            for i in range(args.latency_messages):
                sent_at.append(time.perf_counter())
                side.publish("lat", payload, i)
                time.sleep(gap)
            side.wait("lat", args.latency_messages, 30)
            stats1 = bridge.stop()
        finally:
            raw.close()
            side.close()
    finally:
        broker.stop()
        pinning.release()
    anchor1 = pinning.anchor(in_process, bundle, payload, seconds)
    full1 = anchor1.rate
    full = (full0 + full1) / 2

    results = side.results("lat")
    if args.protocol == "5":
        matched = {int(c): (t, p) for t, c, p in results if c is not None}
        pairs = [(matched[i], s) for i, s in enumerate(sent_at) if i in matched]
    else:
        pairs = list(zip(((t, p) for t, _, p in results), sent_at))
    lat = np.array([(t - s) * 1000 for (t, _), s in pairs])
    inside = np.array([(lambda d: d["queued_ms"] + d["latency_ms"])(json.loads(p))
                       for (_, p), _ in pairs])
    problem = latency_check(lat, inside, args.latency_messages)
    if len(results) != args.latency_messages:
        problem = problem or f"{len(results)} results for {args.latency_messages} requests"

    where = (f"; pinned: bridge and anchor on core {min(pinning.bridge)}, mosquitto and "
             f"the clients on {','.join(map(str, sorted(pinning.rest)))}" if pin else "")
    out.append(f"{name}: conv classifier {size}x{size}, {channels} channels (JPEG "
               f"{width}x{height}, {len(payload)} bytes), 1 engine thread{where}")
    out.append(f"  in-process decode+predict {full:8.0f} msg/s   ({full0:.0f} before, "
               f"{full1:.0f} after; predict alone {anchor0.bare:.0f}/s; CPU "
               f"{anchor0.cpu_ms:.2f} ms/msg)")
    out.append(f"  bridge QoS 0              {q0:8.0f} msg/s   ratio {q0 / full:.2f} "
               f"(goal >= 0.8); offered {sent / offered_s:.0f}/s: sent {sent}, answered "
               f"{len(got0)}, dropped {stats0.get('dropped', '?')}")
    out.append(f"      CPU per answered message: {cpu0.per(cpu1, len(got0))}; per received: "
               f"bridge {(cpu1.bridge - cpu0.bridge) * 1000 / max(1, sent):.3f} ms")
    if rounds:
        out.append(interleaved_line(rounds))
    out.append(f"  bridge QoS 1              {q1:8.0f} msg/s   ratio {q1 / full:.2f}; "
               f"{n1} sent, {got1} answered")
    out.append(f"      CPU per message: {cpu2.per(cpu3, got1)}")
    if problem:
        out.append(f"  latency: SANITY CHECK FAILED: {problem}")
    else:
        out.append(f"  end-to-end latency QoS 1 at {1 / gap:.0f} msg/s: p50 "
                   f"{np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms "
                   f"({lat.size} messages; inside the bridge p50 "
                   f"{np.percentile(inside, 50):.2f} ms)")
    out.append(f"  bridge counters: QoS 0 {json.dumps(stats0)}; QoS 1 received "
               f"{stats1.get('received', '?')}, answered {stats1.get('answered', '?')}")
    if args.phases:
        out.append(f"  anchor alone, thread CPU: decode {(anchor0.decode_us + anchor1.decode_us) / 2:.0f}"
                   f" us, predict {(anchor0.predict_us + anchor1.predict_us) / 2:.0f} us "
                   f"(before {anchor0.decode_us:.0f} + {anchor0.predict_us:.0f}, after "
                   f"{anchor1.decode_us:.0f} + {anchor1.predict_us:.0f})")
        out.append(f"  anchor's decode+predict loop, thread CPU: decode "
                   f"{(anchor0.loop_decode_us + anchor1.loop_decode_us) / 2:.0f} us, predict "
                   f"{(anchor0.loop_predict_us + anchor1.loop_predict_us) / 2:.0f} us (before "
                   f"{anchor0.loop_decode_us:.0f} + {anchor0.loop_predict_us:.0f}, after "
                   f"{anchor1.loop_decode_us:.0f} + {anchor1.loop_predict_us:.0f}; the worker's "
                   "steps below do the same per message, among other code)")
        out += phase_lines("QoS 0", bridge0_stats, threads0, threads1, len(got0),
                           sched0, sched1)
        out += phase_lines("QoS 1", bridge.stats, threads2, threads3, got1, sched2,
                           sched3)
    return out if not problem else out + ["SANITY"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--lines", default="tiny,camera",
                        help=f"model lines to run, comma-separated: {', '.join(LINES)}")
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5",
                        help="MQTT version of the bridge and the benchmark's clients")
    parser.add_argument("--one-thread", action="store_true",
                        help="the bridge drives paho's network loop from its one worker "
                             "thread ([bridge] network_thread = false)")
    parser.add_argument("--phases", action="store_true",
                        help="diagnostic: the bridge's per-thread CPU and per-step timers "
                             "([bridge] phases = true) next to the anchor's decode and "
                             "predict alone")
    parser.add_argument("--switch-interval", type=float, metavar="MS",
                        help="the bridge's [bridge] switch_interval_ms (Python's GIL "
                             "switch interval while it runs) [left as it is]")
    parser.add_argument("--pin", action="store_true",
                        help="run each line twice: as usual, then with the bridge and the "
                             "anchor on one core and mosquitto + the load on the other(s)")
    parser.add_argument("--interleave", type=int, default=6, metavar="ROUNDS",
                        help="after the QoS 0 phase, ROUNDS of anchor and bridge measured "
                             "in alternation (0: off)")
    parser.add_argument("--offered", type=float, default=1.25,
                        help="QoS 0 offered load as a multiple of the in-process rate")
    args = parser.parse_args()
    lines = [n.strip() for n in args.lines.split(",") if n.strip()]
    unknown = [n for n in lines if n not in LINES]
    if unknown:
        parser.error(f"unknown line(s) {unknown}; known: {', '.join(LINES)}")
    from edgepack.runtime.benchmark import cpu_description
    load = os.getloadavg()
    switch = (f", GIL switch interval {args.switch_interval:g} ms" if args.switch_interval
              else "")
    print(f"MQTT {args.protocol} bridge{' in one thread' if args.one_thread else ''}{switch} "
          f"vs in-process ({cpu_description()}; load average "
          f"{load[0]:.1f} at start; other processes share the machine: quote ranges)",
          flush=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in lines:
            for pin in ((False, True) if args.pin else (False,)):
                out = run_line(name, args, Path(tmp) / f"{name}-{int(pin)}", pin)
                failed |= out[-1] == "SANITY"
                print("\n".join(line for line in out if line != "SANITY"), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
