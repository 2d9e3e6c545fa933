"""Latency measurement of a loaded model: warm-up, timed runs, percentiles, peak RSS."""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class BenchResult:
    runs: int
    warmup: int
    threads: int | None
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    throughput_per_s: float
    peak_rss_mb: float

    def to_dict(self) -> dict:
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB.

    On Linux the kernel's VmHWM is used: ru_maxrss survives execve, so a CLI started from a
    large parent (a notebook with torch loaded) would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> np.ndarray:
    """Seconds per call for `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times


def summarize(times: np.ndarray, warmup: int, threads: int | None) -> BenchResult:
    ms = times * 1e3
    return BenchResult(
        runs=len(times), warmup=warmup, threads=threads,
        mean_ms=float(ms.mean()), p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)), p99_ms=float(np.percentile(ms, 99)),
        min_ms=float(ms.min()), throughput_per_s=float(len(ms) / times.sum()),
        peak_rss_mb=peak_rss_mb())


def benchmark(fn: Callable[[], object], *, runs: int = 100, warmup: int = 10,
              threads: int | None = None) -> BenchResult:
    return summarize(time_calls(fn, runs, warmup), warmup, threads)
