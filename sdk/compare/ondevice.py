"""`--on-device`: each bundle run under qemu emulation of the device, compared with the host.

This answers "does the ARM build of the engine compute the same thing?" (int8 bundles:
bit for bit; float bundles: within the emulation tolerance), on real held-out samples. The
time qemu takes says nothing about the board's speed, so it is not reported at all.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import EdgepackError

log = logging.getLogger(__name__)


def emulate_bundle(path: Path, device: str, inputs: Mapping[str, np.ndarray],
                   input_names: Sequence[str], samples: int,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Emulated run of `path` on up to `samples` held-out samples (one batch).

    Returns {"ok", "samples", "rule", "max_abs", "mismatches", "device_engine", "qemu_cpu"}
    or {"ok": False, "error": ...} when emulation could not run (never raises for that).
    """
    from edgepack.devices.emulation import emulate
    from edgepack.runtime import load

    from .accuracy import _match

    try:
        with load(path) as model:
            names = _match([s.name for s in model.inputs], list(input_names))
            first = model.inputs[0].shape
            count = first[0] if first and first[0] > 0 else samples
            count = min(count, len(next(iter(inputs.values()))))
            feeds = model.preprocess({b: inputs[s][:count] for b, s in zip(names, input_names)})
        result = emulate(path, device, feeds, progress=progress)
    except EdgepackError as e:
        log.warning("emulation of %s failed: %s", path.name, e)
        return {"ok": False, "error": str(e).splitlines()[0]}
    outputs = result.outputs
    return {"ok": result.ok, "samples": count,
            "rule": ",".join(sorted({o.rule for o in outputs})),
            "max_abs": max((o.max_abs for o in outputs), default=0.0),
            "mismatches": sum(o.mismatches for o in outputs),
            "device_engine": result.device_engine, "qemu_cpu": result.qemu_cpu}
