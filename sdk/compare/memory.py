"""Peak memory of one bundle, measured in a fresh subprocess per bundle.

Why a subprocess and not an RSS delta in this process: the peak RSS counter of a process
only ever grows, and freed heap is rarely returned to the OS, so after the first bundle
(and after torch/tensorflow were imported for the conversion) an in-process delta measures
allocator history, not the bundle, and depends on the order bundles were measured in. A
fresh interpreter that imports only numpy + edgepack.runtime, as on a device, gives every
bundle the same starting point:

- peak_mb: the child's peak resident memory after loading the bundle and running it:
  what the device must have free for this process;
- model_mb: peak minus the resident memory once the engine library is imported: what the
  bundle itself costs on top of an empty engine (weights, pre-packed kernels, arena).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

PROBE = Path(__file__).with_name("_memprobe.py")
TIMEOUT_S = 300
RUNS = 5


@dataclass(frozen=True)
class Memory:
    """Peak memory of a fresh process that loaded and ran the bundle (MB = 2**20 bytes)."""

    peak_mb: float
    model_mb: float
    engine_baseline_mb: float

    def to_dict(self) -> dict[str, float]:
        return {"peak_mb": round(self.peak_mb, 2), "model_mb": round(self.model_mb, 2),
                "engine_baseline_mb": round(self.engine_baseline_mb, 2)}


class MemoryProbeError(RuntimeError):
    """The child process failed; the row keeps its other numbers and notes this."""


def measure_memory(path: Path, sample: Mapping[str, np.ndarray], input_names: Sequence[str],
                   threads: int | None) -> Memory:
    """Peak memory of loading `path` and running it on `sample` (batch-1, source input names)."""
    from edgepack.runtime import read_bundle

    from .accuracy import _match

    bundle_names = _match([s.name for s in read_bundle(path).manifest.inputs], list(input_names))
    with tempfile.TemporaryDirectory(prefix="edgepack-mem-") as tmp:
        inputs = Path(tmp, "inputs.npz")
        np.savez(inputs, **{b: sample[s] for b, s in zip(bundle_names, input_names)})
        cmd = [sys.executable, str(PROBE), str(path), str(inputs), str(threads or 0), str(RUNS)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise MemoryProbeError(f"memory probe gave no answer in {TIMEOUT_S} s") from e
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise MemoryProbeError(f"memory probe exited with {done.returncode}: {tail}")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise MemoryProbeError(f"memory probe printed no result: {done.stdout[-200:]!r}") from e
    return Memory(peak_mb=data["peak_mb"],
                  model_mb=max(0.0, data["peak_mb"] - data["engine_baseline_mb"]),
                  engine_baseline_mb=data["engine_baseline_mb"])
