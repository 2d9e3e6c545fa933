"""`compare()`: convert to every target x mode, measure every bundle, pick one."""
from __future__ import annotations

import logging
import os
import platform
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from edgepack.runtime.errors import EdgepackError

from .accuracy import measure_accuracy, score
from .config import CompareConfig
from .data import Dataset, load_dataset
from .latency import measure_latency
from .matrix import Candidate, convert_matrix
from .memory import MemoryProbeError, measure_memory
from .pick import choose, mark_slower_than_fp32, status_for
from .result import FAILED, CompareResult, Row

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def resolve_threads(config: CompareConfig) -> tuple[int | None, list[str]]:
    """Latency threads: explicit, else the device's recommendation capped at host cores."""
    if config.latency.threads is not None:
        return config.latency.threads, []
    if config.device is None:
        return None, []
    from edgepack.devices import load_profile
    wanted = load_profile(config.device).threads
    cores = os.cpu_count() or 1
    if wanted > cores:
        # More engine threads than cores measures contention, not the model.
        return cores, [f"{config.device} recommends {wanted} threads; this host has {cores} "
                       f"cores, so latency used {cores}"]
    return wanted, []


def _check(path: Path, device: str) -> dict[str, Any]:
    from edgepack.devices import check_bundle
    report = check_bundle(path, device)
    return {"ok": report.ok,
            "errors": [f.message for f in report.by_severity("error")],
            "warnings": [f.message for f in report.by_severity("warning")]}


def _measure_row(candidate: Candidate, dataset: Dataset, config: CompareConfig,
                 threads: int | None, sample: dict) -> Row:
    """Size, accuracy, memory and device check of one converted bundle."""
    from edgepack.runtime import read_bundle

    path = candidate.path
    notes = [f"converter validation: {f}" for f in candidate.validation.get("failures", [])]
    try:
        manifest = read_bundle(path).manifest
        model_bytes = manifest.files[manifest.model.path].bytes
        accuracy = measure_accuracy(path, dataset)
    except EdgepackError as e:
        return Row(candidate.target, candidate.mode, FAILED,
                   f"bundle does not run: {str(e).splitlines()[0]}", path=path)
    task = candidate.validation.get("task")
    if task and accuracy.accuracy is not None and abs(task["bundle"] - accuracy.accuracy) > 1e-9:
        notes.append(f"converter validation measured accuracy {task['bundle']:.4f}, "
                     f"compare measured {accuracy.accuracy:.4f} on the same samples")
    memory = None
    if config.memory:
        try:
            memory = measure_memory(path, sample, dataset.source.input_names, threads)
        except MemoryProbeError as e:
            notes.append(f"memory not measured: {e}")
    check = None
    if config.device:
        try:
            check = _check(path, config.device)
        except EdgepackError as e:
            check = {"ok": False, "errors": [f"check failed: {e}"], "warnings": []}
    metric = ("detection agreement" if accuracy.detection is not None
              else "accuracy" if dataset.labels is not None else "top-1 agreement")
    status, reason = status_for(accuracy.drop_points, config.max_drop, metric)
    return Row(candidate.target, candidate.mode, status, reason, path=path,
               bundle_bytes=path.stat().st_size, model_bytes=model_bytes, memory=memory,
               accuracy=accuracy, check=check, notes=tuple(notes))


def compare(model: Any, data: Any, config: CompareConfig = CompareConfig(), *,
            labels: Any = None, weights: str | Path | None = None,
            work_dir: str | Path | None = None,
            progress: Progress | None = None) -> CompareResult:
    """Convert `model` to every (target, mode) of `config`, measure each bundle, pick one.

    model: what `edgepack.convert` takes (live torch/keras model, file, module:factory).
    data: .npy/.npz path, array or dict (an .npz may hold 'labels'); split into calibration
        and held-out parts by `config.holdout`.
    labels: integer labels for `data` (array or .npy/.txt path).
    work_dir: where bundles are written and kept (default: a temporary directory removed on
        return; the result's paths are then None).
    Raises CompareError / the converters' errors for problems that stop every combination
    (unreadable data, a model that cannot be loaded); a combination that fails is a row.
    """
    say = progress or (lambda message: None)
    threads, notes = resolve_threads(config)
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="edgepack-compare-") as tmp:
            result = compare(model, data, config, labels=labels, weights=weights,
                             work_dir=tmp, progress=progress)
        return result.without_work_paths()  # the bundles went with the directory
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    say("loading the model and data ...")
    dataset = load_dataset(model, data, config, labels=labels, weights=weights)
    candidates = convert_matrix(dataset, config, work, say)
    sample = {n: a[:1] for n, a in dataset.held_out.arrays.items()}
    rows: list[Row] = []
    for candidate in candidates:
        if not candidate.ok:
            rows.append(Row(candidate.target, candidate.mode, FAILED,
                            f"{candidate.kind}: {candidate.reason}"))
            continue
        say(f"measuring {candidate.key} (accuracy, memory, check) ...")
        rows.append(_measure_row(candidate, dataset, config, threads, sample))
    timed = {r.key: r.path for r in rows if r.measured}
    if timed:
        say(f"timing {len(timed)} bundles interleaved ({config.latency.rounds} rounds x "
            f"{config.latency.block} runs) ...")
        try:
            latencies = measure_latency(timed, sample, dataset.source.input_names,
                                        config.latency, threads)
            rows = [replace(r, latency=latencies.get(r.key)) for r in rows]
        except EdgepackError as e:
            notes.append(f"latency not measured: {e}")
    rows = mark_slower_than_fp32(rows)
    if config.on_device:
        from .ondevice import emulate_bundle
        done = []
        for row in rows:
            if row.measured:
                say(f"emulating {row.key} on {config.device} ...")
                row = replace(row, on_device=emulate_bundle(
                    row.path, config.device, dataset.held_out.arrays,
                    dataset.source.input_names, config.on_device_samples, say))
            done.append(row)
        rows = done
    pick = choose(rows, config.device)
    source_accuracy = score(dataset.reference, dataset.reference, dataset.labels).accuracy
    host = {"machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "system": platform.system()}
    return CompareResult(
        model=config.name, device=config.device, threads=threads, host=host,
        max_drop=config.max_drop,
        metric=("detection_agreement" if config.decode else
                "accuracy" if dataset.labels is not None else "top1_agreement"),
        source_accuracy=source_accuracy, held_out=len(dataset.held_out),
        calibration=len(dataset.calibration), rows=tuple(rows), pick=pick,
        latency_runs=config.latency.runs, notes=tuple(notes))
