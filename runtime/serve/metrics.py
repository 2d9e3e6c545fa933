"""Prometheus text-format metrics, written by hand (the format is small; no dependency).

Exposed families:

- ``edgepack_requests_total{model,version}``: inference requests answered;
- ``edgepack_request_errors_total{model,version,code}``: inference requests refused/failed;
- ``edgepack_http_requests_total{code}``: every HTTP request, by status;
- ``edgepack_inference_seconds{model,version}``: histogram of inference request latency
  (decode + run + encode);
- ``edgepack_model_loaded{model,version}``: 1 per loaded version (gauge);
- ``edgepack_model_load_seconds{model,version}``: time to load + verify + smoke-test;
- ``edgepack_model_load_failures_total{model,version}``: refused versions.
- ``edgepack_mqtt_*``: the MQTT bridge's messages received/published/dropped/errors by
  subscription, reconnects and connected; its inference latency is in
  ``edgepack_inference_seconds{model,version,transport="mqtt"}``.
"""
from __future__ import annotations

import bisect
import threading
from collections import defaultdict

#: Latency buckets in seconds, from sub-millisecond tiny models to multi-second big ones.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


class Metrics:
    """Thread-safe counters, gauges and latency histograms of one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[Labels, list[float]] = {}   # bucket counts, overflow, sum, count

    def inc(self, family: str, labels: Labels, value: float = 1.0) -> None:
        with self._lock:
            series = self._counters[family]
            series[labels] = series.get(labels, 0.0) + value

    def set_gauge(self, family: str, labels: Labels, value: float | None) -> None:
        """Set a gauge; None removes the series (e.g. an unloaded version)."""
        with self._lock:
            if value is None:
                self._gauges[family].pop(labels, None)
            else:
                self._gauges[family][labels] = value

    def observe(self, labels: Labels, seconds: float) -> None:
        with self._lock:
            row = self._hist.get(labels)
            if row is None:
                row = self._hist[labels] = [0.0] * (len(BUCKETS) + 3)
            row[bisect.bisect_left(BUCKETS, seconds)] += 1  # le: bucket bound is inclusive
            row[-2] += seconds
            row[-1] += 1

    def counter(self, family: str, labels: Labels) -> float:
        """Current value of one counter series (0 if never incremented)."""
        with self._lock:
            return self._counters.get(family, {}).get(labels, 0.0)

    def render(self) -> str:
        """The whole registry in Prometheus text exposition format 0.0.4."""
        with self._lock:
            counters = {f: dict(s) for f, s in self._counters.items()}
            gauges = {f: dict(s) for f, s in self._gauges.items()}
            hist = {k: list(v) for k, v in self._hist.items()}
        lines: list[str] = []
        for family, help_text in _COUNTERS:
            lines += [f"# HELP {family} {help_text}", f"# TYPE {family} counter"]
            for labels, value in sorted(counters.get(family, {}).items()):
                lines.append(f"{family}{_fmt(labels)} {value:g}")
        for family, help_text in _GAUGES:
            lines += [f"# HELP {family} {help_text}", f"# TYPE {family} gauge"]
            for labels, value in sorted(gauges.get(family, {}).items()):
                lines.append(f"{family}{_fmt(labels)} {value:.6g}")
        name = "edgepack_inference_seconds"
        lines += [f"# HELP {name} Inference request latency (decode, run, encode).",
                  f"# TYPE {name} histogram"]
        for labels, row in sorted(hist.items()):
            cumulative = 0.0
            for bound, count in zip(BUCKETS, row):
                cumulative += count
                lines.append(f"{name}_bucket{_fmt(labels + (('le', f'{bound:g}'),))} "
                             f"{cumulative:g}")
            cumulative += row[len(BUCKETS)]
            lines.append(f"{name}_bucket{_fmt(labels + (('le', '+Inf'),))} {cumulative:g}")
            lines.append(f"{name}_sum{_fmt(labels)} {row[-2]:.9g}")
            lines.append(f"{name}_count{_fmt(labels)} {row[-1]:g}")
        return "\n".join(lines) + "\n"


_COUNTERS = (
    ("edgepack_requests_total", "Inference requests answered successfully."),
    ("edgepack_request_errors_total", "Inference requests answered with an error, by status."),
    ("edgepack_http_requests_total", "HTTP requests of any kind, by status."),
    ("edgepack_model_load_failures_total", "Model versions refused (load, verify or smoke)."),
    # The MQTT bridge (runtime/mqtt), labelled by subscription filter:
    ("edgepack_mqtt_messages_received_total", "MQTT messages received, by subscription."),
    ("edgepack_mqtt_messages_published_total", "MQTT results published, by subscription."),
    ("edgepack_mqtt_messages_dropped_total", "MQTT messages dropped by a full drop-oldest queue."),
    ("edgepack_mqtt_message_errors_total", "MQTT messages answered on the error topic."),
    ("edgepack_mqtt_reconnects_total", "Reconnections to the MQTT broker."),
)
_GAUGES = (
    ("edgepack_model_loaded", "1 for each model version currently loaded."),
    ("edgepack_model_load_seconds", "Seconds taken to load, verify and smoke-test a version."),
    ("edgepack_mqtt_connected", "1 while the MQTT bridge is connected to its broker."),
)
