"""Interleaved latency: every bundle loaded at once, timed in rotating round-robin blocks.

Timing bundle A for ten seconds and then bundle B for ten seconds lets a noisy neighbour
(another build, thermal throttling, a cron job) favour one of them. Here each round runs
one block of every bundle, in an order that rotates each round, so noise is spread over
all bundles alike; the percentiles are then taken over all blocks of a bundle. With thread
pools, each block first waits for the previous bundle's pool to stop spinning
(edgepack.runtime.benchmark.time_interleaved).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgepack.runtime.benchmark import BenchResult, pool_pause, summarize, time_interleaved

from .config import LatencyConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Latency:
    """Per-bundle timings (milliseconds per batch-1 `run`) and their summary."""

    result: BenchResult
    times_ms: tuple[float, ...]
    round_medians_ms: tuple[float, ...] = ()     # median of each round's block, in order

    @property
    def p50_ms(self) -> float:
        return self.result.p50_ms

    @property
    def p99_ms(self) -> float:
        return self.result.p99_ms

    def to_dict(self, with_samples: bool = False) -> dict:
        data = {k: v for k, v in self.result.to_dict().items() if k != "peak_rss_mb"}
        if with_samples:
            data["times_ms"] = list(self.times_ms)
            data["round_medians_ms"] = list(self.round_medians_ms)
        return data


def _feeds(model, sample: Mapping[str, np.ndarray], names: Sequence[str]) -> dict:
    """Batch-1 raw feeds for `model` (preprocessed/quantized once, outside the timing)."""
    from .accuracy import _match
    bundle_names = _match([s.name for s in model.inputs], list(names))
    return model.preprocess({b: sample[s] for b, s in zip(bundle_names, names)})


def measure_latency(paths: Mapping[str, Path], sample: Mapping[str, np.ndarray],
                    input_names: Sequence[str], config: LatencyConfig,
                    threads: int | None) -> dict[str, Latency]:
    """Time `model.run` on one sample for every bundle in `paths` (key -> bundle path).

    sample: one batch-1 array per source input name. Returns key -> Latency.
    """
    from edgepack.runtime import load

    models, feeds = {}, {}
    try:
        for key, path in paths.items():
            models[key] = load(path, threads=threads)
            feeds[key] = _feeds(models[key], sample, input_names)
        keys = list(models)
        arrays = time_interleaved(
            [lambda run=models[k].run, feed=feeds[k]: run(feed) for k in keys],
            rounds=config.rounds, block=config.block, warmup=config.warmup,
            pause=pool_pause(threads))
        times = dict(zip(keys, arrays))
    finally:
        for model in models.values():
            model.close()
    out = {}
    for key, array in times.items():
        blocks = (array * 1e3).reshape(config.rounds, config.block)
        out[key] = Latency(summarize(array, config.warmup, threads),
                           tuple(float(t) for t in array * 1e3),
                           tuple(float(m) for m in np.median(blocks, axis=1)))
        log.info("%s: p50 %.3f ms  p99 %.3f ms", key, out[key].p50_ms, out[key].p99_ms)
    return out
