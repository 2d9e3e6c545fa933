"""Child process of `edgepack.compare.memory`: load one bundle, run it, report memory.

    python _memprobe.py BUNDLE INPUTS.npz THREADS RUNS

Prints one JSON line: resident memory (MB) after importing the bundle's engine, and the
process's peak resident memory after loading the bundle and running it RUNS times.
Imports only numpy and edgepack.runtime, like a device would.
"""
import importlib
import json
import resource
import sys


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status in MB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_mb() -> float:
    value = _status_mb("VmRSS")
    return value if value is not None else _peak_mb()


def _peak_mb() -> float:
    # VmHWM belongs to this address space, which execve made fresh. ru_maxrss is not
    # usable on Linux here: it survives execve, so a child of a parent that had imported
    # torch and tensorflow would report the parent's peak.
    value = _status_mb("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def main(argv):
    import numpy as np

    from edgepack.runtime import load, read_bundle
    from edgepack.runtime.engines import BUILTIN

    bundle_path, inputs_path, threads, runs = argv[1], argv[2], int(argv[3]), int(argv[4])
    bundle = read_bundle(bundle_path)
    engine = bundle.manifest.model.engine
    if engine in BUILTIN:
        importlib.import_module(BUILTIN[engine][0])
    with np.load(inputs_path) as data:
        raw = {name: data[name] for name in data.files}
    baseline = _rss_mb()
    with load(bundle, threads=threads or None) as model:
        feeds = model.preprocess(raw)
        for _ in range(runs):
            model.run(feeds)
        after = _rss_mb()
    print(json.dumps({"engine_baseline_mb": baseline, "after_mb": after,
                      "peak_mb": _peak_mb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
