"""Latency measurement of a loaded model: warm-up, timed runs, percentiles, peak RSS.

In the runtime because `edgepack bench` runs on devices and the converters' int8 speed
check times candidates with the same primitives (`edgepack.benchmark` re-exports them).
numpy and the standard library only.
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

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
    #: Spread of the timings: a mean above p99 means a few very slow runs (load from other
    #: processes, more threads than cores), which the mean alone hides.
    max_ms: float = float("nan")
    std_ms: float = float("nan")

    @property
    def skewed(self) -> bool:
        """Whether a few outliers pull the mean above the 90th percentile."""
        return self.mean_ms > self.p90_ms

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


#: Seconds to wait before timing a block when engines run thread pools. onnxruntime's
#: intra-op workers keep spinning for tens of milliseconds after a run; measured here
#: (MobileNetV2, 2 threads, 2 cores): a session timed right after another one ran at
#: 1.5-2.2x its solo latency, even after an untimed settling run, and at its solo latency
#: after a 50 ms pause. 0.1 s leaves a margin.
POOL_IDLE_S = 0.1


def pool_pause(threads: int | None) -> float:
    """The pause `time_interleaved` needs for engines using `threads` (None = all cores)."""
    return 0.0 if threads == 1 else POOL_IDLE_S


def time_interleaved(runners: Sequence[Callable[[], object]], *, rounds: int, block: int = 1,
                     warmup: int = 0, pause: float = 0.0,
                     clock: Callable[[], float] = time.perf_counter,
                     sleep: Callable[[float], None] = time.sleep) -> list[np.ndarray]:
    """Seconds per call of each runner, timed in rotating round-robin blocks.

    Timing A for a while and then B lets a burst of load from other processes favour one
    of them. Here each round runs one block of every runner, starting one further along
    each round, so noise lands on all of them alike. With `block` > 1 each block starts
    with one untimed call (cold caches after the switch), preceded by `pause` seconds (see
    POOL_IDLE_S: the previous runner's thread pool must go idle first).
    Returns one array of rounds * block timings per runner, in round order.
    """
    for runner in runners:
        for _ in range(warmup):
            runner()
    count = len(runners)
    times = [np.empty(rounds * block) for _ in runners]
    for round_ in range(rounds):
        for k in range(count):
            i = (round_ + k) % count
            runner = runners[i]
            if pause:
                sleep(pause)
            if block > 1:
                runner()
            for j in range(block):
                start = clock()
                runner()
                times[i][round_ * block + j] = clock() - start
    return times


def summarize(times: np.ndarray, warmup: int, threads: int | None) -> BenchResult:
    ms = times * 1e3
    return BenchResult(
        runs=len(times), warmup=warmup, threads=threads,
        mean_ms=float(ms.mean()), p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)), p99_ms=float(np.percentile(ms, 99)),
        min_ms=float(ms.min()), throughput_per_s=float(len(ms) / times.sum()),
        peak_rss_mb=peak_rss_mb(), max_ms=float(ms.max()), std_ms=float(ms.std()))


def benchmark(fn: Callable[[], object], *, runs: int = 100, warmup: int = 10,
              threads: int | None = None) -> BenchResult:
    """Time `fn` `runs` times after `warmup` untimed calls; `runs` must be at least 1."""
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    return summarize(time_calls(fn, runs, warmup), warmup, threads)


#: CPU flags that decide what int8 buys (x86: 8-bit dot products; ARM: sdot / i8mm).
INT8_FEATURES = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                 "asimddp", "i8mm", "fphp", "asimdhp")


def cpu_description(cpuinfo: str | None = None) -> str:
    """One line naming this CPU and its int8-relevant features, for benchmark output.

    Every figure a benchmark prints is only meaningful with it: int8 speed-ups differ by
    2x between an AVX2-only and an AVX512-VNNI x86 host.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            import platform
            return f"{platform.processor() or platform.machine()} (no /proc/cpuinfo)"
    names: dict[str, str] = {}
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "model") and value.strip():
            names.setdefault(key, value.strip())
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    # x86 has "model name" (its "model" is a number); a Pi has "Model : Raspberry Pi 4 ...".
    model = names.get("model name") or names.get("hardware") or (
        names.get("model") if not names.get("model", "").isdigit() else None)
    found = [f for f in INT8_FEATURES if f in flags]
    cores = sum(1 for line in cpuinfo.splitlines() if line.lower().startswith("processor"))
    return (f"{model or 'unknown CPU'}, {cores or '?'} cores, int8 features: "
            f"{', '.join(found) if found else 'none of ' + '/'.join(INT8_FEATURES[:5])}")
