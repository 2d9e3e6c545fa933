""""Is int8 faster than fp32 here?" — measured on the spot, on the machine converting.

Both models are opened through the runtime's own engines (what a device runs) in one
process and timed in alternating blocks (edgepack.runtime.benchmark.time_interleaved), so a burst
of load from other processes hits both alike; the verdict uses medians. With more than one
thread each block waits for the other model's thread pool to stop spinning first: without
that pause, 2-thread timings measured the two pools fighting over the cores. The result is a fact about *this*
machine: the manifest records it with the host's CPU family so nobody mistakes it for a
measurement on the target board.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgepack.runtime.errors import ConversionError
from edgepack.runtime.specs import example_feeds

log = logging.getLogger(__name__)

#: A ratio above this counts as "not faster": int8 that saves under 5% is noise here.
FASTER_BELOW = 0.95


@dataclass(frozen=True)
class SpeedSettings:
    """threads: thread counts to measure; rounds: timed runs per model, in blocks of
    `block` alternating between the models."""

    threads: tuple[int, ...] = (1,)
    rounds: int = 15
    warmup: int = 3
    block: int = 5
    #: the manifest's `examples` (e.g. {"sr": {"value": 16000}}): the timed feeds are the
    #: ones verify and serve's load check use (runtime.specs.example_feeds), not random
    examples: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.threads or any(not isinstance(t, int) or t < 1 for t in self.threads):
            raise ConversionError(f"speed check threads must be positive integers, "
                                  f"got {self.threads!r}")
        if self.rounds < 3 or self.warmup < 0 or self.block < 1:
            raise ConversionError("speed check needs rounds >= 3, warmup >= 0 and block >= 1")


@dataclass(frozen=True)
class SpeedPoint:
    """Median latencies at one thread count; ratio = int8 / fp32."""

    threads: int
    fp32_ms: float
    int8_ms: float

    @property
    def ratio(self) -> float:
        return self.int8_ms / self.fp32_ms if self.fp32_ms > 0 else float("inf")

    @property
    def faster(self) -> bool:
        return self.ratio < FASTER_BELOW


@dataclass(frozen=True)
class SpeedReport:
    """The on-the-spot comparison (one point per thread count)."""

    engine: str
    points: tuple[SpeedPoint, ...]
    host: str = ""

    @property
    def faster(self) -> bool:
        """True when int8 is faster at every measured thread count."""
        return all(p.faster for p in self.points)

    def to_record(self, target_device: Any = None) -> dict[str, Any]:
        """The `speed` entry of the manifest (quantization and validation records).

        target_device: the device profile (name or Profile) the bundle is converted for;
        the record then notes that the figures are this host's, not that device's.
        """
        record: dict[str, Any] = {
            "engine": self.engine, "host": self.host, "faster_than_fp32": self.faster,
            "points": [{"threads": p.threads, "fp32_ms": round(p.fp32_ms, 3),
                        "int8_ms": round(p.int8_ms, 3), "ratio": round(p.ratio, 3),
                        "faster": p.faster} for p in self.points]}
        if target_device is not None:
            name = getattr(target_device, "name", target_device)
            record["note"] = f"measured on the converting host, not on {name}"
        return record

    def summary(self) -> str:
        """One line for the validation table, e.g. 'x0.68 at 1 thread (faster)'."""
        parts = [f"x{p.ratio:.2f} at {p.threads} thread{'s' if p.threads > 1 else ''}"
                 for p in self.points]
        verdict = "yes" if self.faster else "NO"
        return f"faster than fp32 here? {verdict}: int8/fp32 latency " + ", ".join(parts)


def measure_speed(fp32_model: bytes, int8_model: bytes, engine: str = "onnxruntime",
                  settings: SpeedSettings = SpeedSettings(),
                  feeds: Mapping[str, np.ndarray] | None = None) -> SpeedReport:
    """Time `int8_model` against `fp32_model` on `engine`, interleaved, per thread count.

    feeds: inputs for the fp32 model (default: runtime.specs.example_feeds with
    settings.examples, as the runtime builds them: seeded random where no example); the int8
    model gets the same arrays, quantized when its inputs are integer.
    Raises EngineNotInstalledError/EngineError from the runtime when a model cannot run.
    """
    from edgepack.runtime.benchmark import pool_pause, time_interleaved
    from edgepack.runtime.engines import open_engine
    block = min(settings.block, settings.rounds)
    points = []
    for threads in settings.threads:
        fp32 = open_engine(engine, fp32_model, threads=threads)
        int8 = open_engine(engine, int8_model, threads=threads)
        try:
            f_feeds = dict(feeds) if feeds is not None else example_feeds(
                fp32.inputs(), examples=settings.examples)
            i_feeds = _feeds_for(int8.inputs(), fp32.inputs(), f_feeds)
            times = time_interleaved(
                [lambda: fp32.run(f_feeds), lambda: int8.run(i_feeds)],
                rounds=-(-settings.rounds // block), block=block, warmup=settings.warmup,
                pause=pool_pause(threads))
            f_ms, i_ms = (1e3 * float(np.median(t)) for t in times)
        finally:
            fp32.close()
            int8.close()
        points.append(SpeedPoint(threads, f_ms, i_ms))
        log.info("speed (%s, %d thread(s)): fp32 %.2f ms, int8 %.2f ms, ratio %.3f",
                 engine, threads, f_ms, i_ms, i_ms / f_ms)
    report = SpeedReport(engine, tuple(points), _host_label())
    if not report.faster:
        slow = ", ".join(f"x{p.ratio:.2f} at {p.threads} thread(s)" for p in points
                         if not p.faster)
        log.warning("int8 is not faster than fp32 on this machine (%s) with %s: %s; "
                    "consider fp32/fp16 for this host, or check on the target device",
                    report.host, engine, slow)
    return report


def _feeds_for(int8_specs, fp32_specs, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fp32 feeds renamed/cast to the int8 model's inputs (positional match)."""
    out = {}
    for q_spec, f_spec in zip(int8_specs, fp32_specs):
        value = np.asarray(feeds[f_spec.name])
        if q_spec.dtype in ("int8", "uint8"):
            params = q_spec.quantization
            scale = params.scale[0] if params else 1.0
            zero = params.zero_point[0] if params else 0
            info = np.iinfo(q_spec.dtype)
            value = np.clip(np.round(value / scale) + zero, info.min, info.max)
        out[q_spec.name] = value.astype(q_spec.dtype)
    return out


def _host_label() -> str:
    try:
        from edgepack.devices import detect_host

        from .recipes import cpu_family
        host = detect_host()
        return f"{host.arch} {cpu_family(host.arch, host.features)}"
    except Exception:  # a label only: never let host detection fail a conversion
        return ""
