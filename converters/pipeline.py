"""One conversion, start to finish: check, load, convert, pack, validate, write.

Order matters: everything that can be refused from the arguments alone (unknown path,
mode the path cannot produce, int8 without data, device refusal) is refused before the
source model is loaded or exported.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.runtime.errors import (ConversionError, DeviceError, EdgepackError,
                                     EngineNotInstalledError)

from . import registry
from .artifacts import ConvertedModel, SourceModel
from .calibration import Samples, load_samples
from .config import ConversionConfig
from .detection import apply_accuracy_target, with_detection_metric
from .extras import raise_if_missing_module
from .progress import report
from .sources import KERAS_SUFFIXES, TORCH_SUFFIXES, detect_framework, load_source
from .validation import one_call_per_sample, raise_if_failed, validate

log = logging.getLogger(__name__)

#: When no held-out data is given, validation uses this many seeded random samples.
RANDOM_VALIDATION_SAMPLES = 64


@dataclass(frozen=True)
class ConversionResult:
    """The written bundle and what was measured on the way."""

    path: Path
    validation: dict[str, Any]
    model_bytes: int
    quantization: dict[str, Any] | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def guess_framework(source: Any) -> str | None:
    """The source framework from the object or file suffix, without loading anything."""
    if isinstance(source, SourceModel):
        return source.framework
    if isinstance(source, (str, Path)):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix in TORCH_SUFFIXES:
            return "pytorch"
        if suffix in KERAS_SUFFIXES or (path.is_dir() and (path / "saved_model.pb").exists()):
            return "keras"
        if suffix in (".onnx", ".tflite"):
            return suffix[1:]
        return None  # module:factory: known once the factory has run
    return detect_framework(source)


def convert_model(source: Any, out: str | Path, config: ConversionConfig, *,
                  example_inputs: Any = None, input_shapes: Any = None,
                  weights: str | Path | None = None, calibration_data: Any = None,
                  validation_data: Any = None, validation_labels: Any = None,
                  directory: bool = False) -> ConversionResult:
    """Convert `source` into the bundle `out`, validated against the source.

    Raises ConversionError (bad arguments, unsupported op/shape, converter failure),
    ValidationError (outside tolerance and not config.accept, or broken outputs) and
    EngineNotInstalledError (an optional dependency is missing; the message names the extra).
    """
    try:
        return _convert(source, out, config, example_inputs=example_inputs,
                        input_shapes=input_shapes, weights=weights,
                        calibration_data=calibration_data, validation_data=validation_data,
                        validation_labels=validation_labels, directory=directory)
    except EngineNotInstalledError:
        raise
    except Exception as e:  # data readers (images), validation engines, ...: same rule
        raise_if_missing_module(e, "this conversion")
        raise


def _convert(source: Any, out: str | Path, config: ConversionConfig, *,
             example_inputs: Any, input_shapes: Any, weights: str | Path | None,
             calibration_data: Any, validation_data: Any, validation_labels: Any,
             directory: bool) -> ConversionResult:
    quant = config.quantization
    framework = guess_framework(source)
    if framework is not None:
        registry.check_mode(registry.get_converter(framework, config.target), quant.mode)
    _check_device(config)
    if quant.needs_calibration and calibration_data is None:
        raise ConversionError(
            "int8 quantization needs calibration data (a .npy/.npz file, an image folder or "
            "an iterable of samples); pass calibration_data / --calibration-data")

    report("load", 0, 1)
    loaded = load_source(source, example_inputs=example_inputs, weights=weights,
                         input_shapes=input_shapes)  # a missing framework names its extra
    entry = registry.get_converter(loaded.framework, config.target)
    registry.check_mode(entry, quant.mode)
    # A detector's int8 accuracy-aware search is scored by detection agreement, the metric
    # its --accuracy-target gates on (int8 Int8Options.task_metric).
    config = with_detection_metric(config, loaded)
    per_call = one_call_per_sample(loaded.example_inputs, config.stream)
    calibration, held_out, data_kind, available = _datasets(
        loaded, config, calibration_data, validation_data, validation_labels, per_call)
    converter = entry.load()
    report("convert", 0, 1)
    try:
        converted: ConvertedModel = converter(
            loaded, config, None if calibration is None else calibration.arrays)
    except EngineNotInstalledError:
        raise
    except Exception as e:
        # However deep an import failed (torch.onnx.export importing onnxscript), the user
        # is told which module is missing and which extra installs it.
        raise_if_missing_module(e, f"{entry.source}->{entry.target}")
        if isinstance(e, EdgepackError):
            raise
        # a framework failure we did not anticipate: keep its message
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConversionError(f"{entry.source}->{entry.target} with {entry.tool} failed: "
                              f"{first}") from e

    source_record = {"framework": loaded.framework, "framework_version": loaded.framework_version,
                     "converter": converted.converter, "edgepack_version": _edgepack_version()}
    if loaded.origin:
        source_record["file"] = Path(loaded.origin).name
    if converted.notes:
        source_record["notes"] = list(converted.notes)
    out = Path(out)
    report("validate", 0, len(held_out))
    with tempfile.TemporaryDirectory(prefix="edgepack-conv-") as tmp:
        candidate = _pack(Path(tmp, "candidate"), converted, loaded, config, source_record,
                          None, directory=True)
        output_names = _bundle_output_names(candidate)
        # Labels of a bundle with decode steps name classes inside a decoded tensor (a
        # YOLO [1, 4+C, N] output), not its last dimension: the decoder checks them.
        if config.labels and not config.decode:
            from edgepack.runtime import read_bundle

            from .labels import check_labels
            check_labels(config.labels, read_bundle(candidate).manifest.outputs, "--labels")
        record = validate(loaded, converted, candidate, held_out,
                          config.effective_tolerances, data_kind, output_names, per_call)
        apply_accuracy_target(record, config.quantization.accuracy_target)  # detectors
    if available > len(held_out):
        # Never silently: the report (and the CLI's table) says how many were left out.
        record["available"] = available
        log.warning("validation compared %d of %d held-out samples (validation_samples=%d)",
                    len(held_out), available, config.validation_limit)
    report("validate", len(held_out), len(held_out))
    log.info("validation %s on %d %s samples", "passed" if record["passed"] else "FAILED",
             record["samples"], data_kind)
    raise_if_failed(record, config.accept)
    if record["failures"]:
        record["accepted"] = True
        log.warning("validation outside tolerance, accepted: %s", "; ".join(record["failures"]))
    path = _pack(out, converted, loaded, config, source_record, record, directory=directory)
    hint = accuracy_hint(converted.quantization, config)
    return ConversionResult(path, record, len(converted.model_bytes),
                            dict(converted.quantization) if converted.quantization else None,
                            converted.notes + ((hint,) if hint else ()))


def accuracy_hint(quantization: Any, config: ConversionConfig) -> str | None:
    """A note for a conversion whose int8 accuracy target was not met: what it reached,
    and the options not used yet that go further (the manifest has the details)."""
    aware = (quantization or {}).get("accuracy_aware")
    if not isinstance(aware, dict) or aware.get("met") is not False:
        return None
    q = config.quantization
    steps = []
    if not q.reconstruction and config.target == "onnx":
        steps.append("--reconstruct (block reconstruction, about a minute more on a small "
                     "CNN)")
    floated = len(aware.get("kept_float") or ())
    from .int8 import AccuracyTarget
    allowed = q.max_float_layers if q.max_float_layers is not None else \
        AccuracyTarget().max_float_layers
    if allowed == 0:
        steps.append("--max-float-layers N (layers kept float cost speed)")
    elif floated >= allowed:
        steps.append(f"a --max-float-layers above {floated}")
    steps += ["more calibration samples (--calibration-samples)",
              "quantization-aware training (edgepack optimize qat, docs/qat.md)"]
    return (f"int8 accuracy target {aware.get('target_agreement')} not met on the calibration "
            f"samples: agreement {float(aware.get('agreement', float('nan'))):.4f} with "
            f"{floated} layer(s) float; to go further: {'; '.join(steps)}")


def _pack(out: Path, converted: ConvertedModel, source: SourceModel, config: ConversionConfig,
          source_record: dict, validation: dict | None, directory: bool) -> Path:
    from edgepack.runtime import pack_bundle
    inputs = converted.inputs
    in_names = _bundle_input_names(converted, source)
    layouts = {name: layout for name, layout in zip(in_names, source.layouts) if layout}
    # Users name steps after the source's tensors ("image"); the bundle's tensors may be
    # called otherwise (TFLite models without a signature), so keys are translated.
    preprocess = _rekey(config.preprocess, dict(zip(source.input_names, in_names)))
    postprocess = config.postprocess
    if postprocess:
        out_names = _bundle_output_names_of(converted)
        order = converted.output_order or tuple(range(len(out_names)))
        by_source = {source.output_names[j]: out_names[i] for i, j in enumerate(order)
                     if source.output_names and j < len(source.output_names)}
        postprocess = _rekey(postprocess, by_source)
    return pack_bundle(out, converted.model_bytes, name=config.name, version=config.version,
                       engine=converted.engine, inputs=inputs, outputs=converted.outputs,
                       preprocess=preprocess, postprocess=postprocess,
                       labels=list(config.labels) if config.labels else None,
                       layouts=layouts or None, opset=converted.opset, source=source_record,
                       quantization=converted.quantization, validation=validation,
                       task=config.task, decode=config.decode, assets=config.assets,
                       stream=config.stream, examples=config.examples, directory=directory)


def _rekey(steps: Any, mapping: dict[str, str]) -> Any:
    if not isinstance(steps, dict):
        return steps  # None, or a wrong type pack_bundle reports with its own message
    return {mapping.get(key, key): value for key, value in steps.items()}


def _bundle_output_names_of(converted: ConvertedModel) -> list[str]:
    if converted.outputs is not None:
        return [s.name for s in converted.outputs]
    from edgepack.runtime.engines import open_engine
    engine = open_engine(converted.engine, converted.model_bytes)
    try:
        return [s.name for s in engine.outputs()]
    finally:
        engine.close()


def _bundle_input_names(converted: ConvertedModel, source: SourceModel) -> list[str]:
    """The model's input names in source input order."""
    if converted.inputs is not None:
        return [s.name for s in converted.inputs]
    if converted.input_map:
        return [converted.input_map.get(n, n) for n in source.input_names]
    from edgepack.runtime.engines import open_engine
    engine = open_engine(converted.engine, converted.model_bytes)
    try:
        return [s.name for s in engine.inputs()]
    finally:
        engine.close()


def _bundle_output_names(path: Path) -> list[str]:
    from edgepack.runtime import read_bundle
    return [s.name for s in read_bundle(path).manifest.outputs]


def _datasets(source: SourceModel, config: ConversionConfig, calibration_data: Any,
              validation_data: Any, validation_labels: Any, per_call: bool = False
              ) -> tuple[Samples | None, Samples, str, int]:
    """Calibration samples, held-out validation samples (at most config.validation_limit),
    what the latter are, and how many held-out samples there were before that limit.
    With per_call (a stream's inputs share no batch axis), sample i of every input is one
    call's whole tensor."""
    common = dict(preprocess=config.preprocess, class_names=config.labels)
    calibration = load_samples(calibration_data, source.input_names, source.example_inputs,
                               what="calibration", **common)
    held_out = load_samples(validation_data, source.input_names, source.example_inputs,
                            what="validation", **common)
    if held_out is not None and validation_labels is not None:
        held_out = Samples(held_out.arrays, np.asarray(validation_labels).reshape(-1))
        if len(held_out.labels) != len(held_out):
            raise ConversionError(f"{len(held_out.labels)} validation labels for "
                                  f"{len(held_out)} validation samples")
    kind = "held-out"
    if held_out is None and calibration is not None and len(calibration) >= 2:
        # Hold out the tail so validation never sees the samples int8 was calibrated on.
        split = max(1, min(config.validation_limit, len(calibration) // 5))
        held_out = calibration.take(len(calibration) - split)
        calibration = calibration.take(0, len(calibration) - split)
        kind = "calibration split"
    elif held_out is None and per_call:
        held_out = _random_calls(source, config.examples or {}, RANDOM_VALIDATION_SAMPLES)
        kind = "random"
    elif held_out is None:
        rng = np.random.default_rng(0)
        count = RANDOM_VALIDATION_SAMPLES
        held_out = Samples({n: rng.standard_normal((count, *x.shape[1:])).astype(x.dtype)
                            if x.dtype.kind == "f" else np.repeat(x[:1], count, axis=0)
                            for n, x in zip(source.input_names, source.example_inputs)})
        kind = "random"
    available = len(held_out)
    held_out = held_out.take(0, config.validation_limit)
    return calibration, held_out, kind, available


def _random_calls(source: SourceModel, examples: dict, count: int) -> Samples:
    """`count` seeded calls of a model validated one call per sample: each input at its
    example shape, drawn by runtime.specs.example_feeds as the manifest's `examples` say (a
    value, e.g. sr = 16000, or a range, e.g. audio in [-1, 1]; floats otherwise standard
    normal, as verify and the int8 speed check draw them)."""
    from edgepack.runtime.specs import TensorSpec, example_feeds
    specs = [TensorSpec(name, tuple(np.shape(x)), str(np.asarray(x).dtype))
             for name, x in zip(source.input_names, source.example_inputs)]
    calls = [example_feeds(specs, seed=i, examples=examples) for i in range(count)]
    return Samples({spec.name: np.stack([call[spec.name] for call in calls])
                    for spec in specs})


def _check_device(config: ConversionConfig) -> None:
    if config.device is None:
        return
    try:
        from edgepack import devices
    except ImportError:
        log.warning("edgepack.devices is not available; --device %s is not checked",
                    config.device)
        return
    refuse = getattr(devices, "refuse_reason", None)
    if refuse is None:
        return
    reason = refuse(config.device, config.target, config.quantization.mode)
    if reason:
        raise DeviceError(f"device {config.device}: {reason}")


def _edgepack_version() -> str:
    try:
        from importlib.metadata import version
        return version("edgepack")
    except Exception:  # not installed as a distribution (e.g. running from a checkout)
        return "0.1.0"
