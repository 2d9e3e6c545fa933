"""Kept so `edgepack.benchmark` imports keep working: the timing primitives live in the
runtime (`edgepack.runtime.benchmark`), since `edgepack bench` runs on devices and the
converters' int8 speed check uses them too (layers point one way: runtime <- ... <- sdk)."""
from edgepack.runtime.benchmark import (POOL_IDLE_S, BenchResult, benchmark, peak_rss_mb,
                                        pool_pause, summarize, time_calls, time_interleaved)

__all__ = ["POOL_IDLE_S", "BenchResult", "benchmark", "peak_rss_mb", "pool_pause",
           "summarize", "time_calls", "time_interleaved"]
