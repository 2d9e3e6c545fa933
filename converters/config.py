"""Typed, frozen configuration for a conversion, validated before any work starts.

Every bad combination (int8 I/O without int8, a calibration method the target cannot use,
a tolerance outside its range) is rejected here, so a conversion never spends a minute
exporting a model only to fail on an option it could have refused up front.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from edgepack.devices.catalog import QUANTIZATIONS as MODES
from edgepack.devices.catalog import TARGETS
from edgepack.runtime.errors import ConversionError

#: Calibration methods; onnxruntime offers all three, TFLite only min/max.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Held-out samples compared when no limit is given: all of them up to this many.
DEFAULT_VALIDATION_LIMIT = 10_000


@dataclass(frozen=True)
class CalibrationConfig:
    """How activation ranges are measured for `int8`.

    method: "minmax" | "entropy" | "percentile" (the last two: ONNX target only).
    samples: at most this many calibration samples are used.
    percentile: the percentile kept by the "percentile" method.
    float_outputs: the model's outputs are not requantized to 8 bits (the last layer's
        int32 result is dequantized straight to float; int8.CalibrationSettings); ONNX
        target only.
    """

    method: str = "minmax"
    samples: int = 200
    percentile: float = 99.999
    float_outputs: bool = False

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ConversionError(
                f"unknown calibration method {self.method!r}; use one of "
                f"{', '.join(CALIBRATION_METHODS)}")
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ConversionError(
                f"calibration samples must be a positive integer, got {self.samples!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConversionError(
                f"calibration percentile must be in (50, 100], got {self.percentile}")


@dataclass(frozen=True)
class QuantizationConfig:
    """Which quantization to apply.

    mode: "none" (fp32), "fp16" (half weights, float32 I/O), "dynamic" (int8 weights,
        float activations), "int8" (int8 weights and activations, calibrated).
    per_channel: per-output-channel weight scales (int8/dynamic); on by default because
        per-tensor scales lose noticeably more accuracy on depthwise/conv layers.
    int8_io: the model takes and returns int8 tensors (scale/zero point in the specs);
        only meaningful with mode "int8".
    reduce_range: ONNX only: 7-bit weights. onnxruntime's x86 int8 kernels without VNNI
        (u8s8 via VPMADDUBSW) saturate int16 partial sums with full 8-bit weights; measured
        here on an AMD EPYC host, a small trained CNN went from 0.8% to 27% relative output
        error. None (default): the int8 recipe for the device decides (7-bit on x86
        without VNNI, 8-bit on ARM and VNNI); dynamic mode then uses 7-bit.
    accuracy_target: int8 only: keep the most sensitive layers in float until top-1
        agreement with the float model on the calibration set reaches this (0-1]; None =
        plain int8 (see edgepack.converters.int8.sensitivity).
    speed_check: int8 only: time the int8 model against the float one on this machine
        and record/warn whether it is faster (see edgepack.converters.int8.speed).
    device: the device profile whose int8 recipe applies (None: this machine); filled
        from ConversionConfig.device.
    examples: the manifest's `examples` (filled from ConversionConfig.examples): the int8
        speed check feeds what verify and serve feed (e.g. sr = 16000), not random values.
    task_metric: int8 with an accuracy target: the task's agreement that steers the
        accuracy-aware search instead of top-1 (set by the pipeline for detectors:
        converters.detection.with_detection_metric); None = top-1 agreement.
    """

    mode: str = "none"
    per_channel: bool = True
    int8_io: bool = False
    reduce_range: bool | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    accuracy_target: float | None = None
    max_float_layers: int | None = None
    reconstruction: bool = False
    speed_check: bool = True
    device: str | None = None
    examples: Any = None
    task_metric: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConversionError(
                f"unknown quantization mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.int8_io and self.mode != "int8":
            raise ConversionError(
                f"int8 model I/O needs quantization mode 'int8', not {self.mode!r}; "
                "drop --int8-io or use --quantize int8")
        if self.accuracy_target is not None:
            if self.mode != "int8":
                raise ConversionError(
                    f"an accuracy target needs quantization mode 'int8', not {self.mode!r}")
            if not isinstance(self.accuracy_target, (int, float)) or \
                    not 0.0 < self.accuracy_target <= 1.0:
                raise ConversionError(f"the accuracy target is a top-1 agreement in (0, 1], "
                                      f"got {self.accuracy_target!r}")
        for given, flag in ((self.max_float_layers is not None, "--max-float-layers"),
                            (self.reconstruction, "--reconstruct")):
            if given and self.accuracy_target is None:
                raise ConversionError(f"{flag} steers the accuracy-aware int8 pass: add "
                                      "--accuracy-target (e.g. 0.95)")
        if self.max_float_layers is not None and (
                isinstance(self.max_float_layers, bool) or
                not isinstance(self.max_float_layers, int) or self.max_float_layers < 0):
            raise ConversionError(f"max_float_layers is a layer count >= 0 (0: every layer "
                                  f"int8), got {self.max_float_layers!r}")

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "int8"

    def int8_options(self, engine: str, exclude_nodes: tuple[str, ...] = ()) -> Any:
        """This config as the options of edgepack.converters.int8 for `engine`
        ("onnxruntime" -> Int8Options, "litert" -> LiteRtInt8Options): the one place the
        translation is written, for the ONNX and TFLite paths alike."""
        from .int8 import (AccuracyTarget, CalibrationSettings, Int8Options,
                           LiteRtInt8Options, SpeedSettings)
        accuracy = None
        if self.accuracy_target is not None:
            fields: dict[str, Any] = {"min_agreement": self.accuracy_target}
            if self.max_float_layers is not None:
                fields["max_float_layers"] = self.max_float_layers
            if self.reconstruction:
                if engine == "litert":
                    raise ConversionError("block reconstruction (--reconstruct) is for the "
                                          "ONNX target only; drop it or use -t onnx")
                from .int8.reconstruction import ReconstructionSettings
                fields["reconstruction"] = ReconstructionSettings()
            accuracy = AccuracyTarget(**fields)
        speed = SpeedSettings(examples=self.examples) if self.speed_check else None
        overrides: list[tuple[str, Any]] = [("per_channel", self.per_channel)]
        if engine == "litert":
            if self.calibration.float_outputs:
                raise ConversionError("float outputs (calibration float_outputs) are for "
                                      "the ONNX target only")
            return LiteRtInt8Options(device=self.device, recipe_overrides=tuple(overrides),
                                     int8_io=self.int8_io, accuracy=accuracy, speed=speed)
        if self.reduce_range is not None:
            overrides.append(("reduce_range", self.reduce_range))
        if self.int8_io:
            # make_int8_io turns the boundary Q/DQ into int8 graph I/O: they must be S8.
            overrides.append(("activation_type", "int8"))
        return Int8Options(
            device=self.device, recipe_overrides=tuple(overrides),
            calibration=CalibrationSettings(self.calibration.method,
                                            self.calibration.percentile,
                                            float_outputs=self.calibration.float_outputs),
            accuracy=accuracy, speed=speed, exclude_nodes=tuple(exclude_nodes),
            task_metric=self.task_metric)

    def to_record(self, calibration_samples: int | None = None) -> dict[str, Any] | None:
        """The manifest's `quantization` field (None for fp32)."""
        if self.mode == "none":
            return None
        record: dict[str, Any] = {"mode": self.mode}
        if self.mode in ("dynamic", "int8"):
            record["per_channel"] = self.per_channel
            # int8: replaced by the recipe's value once quantized (None = recipe decides).
            record["reduce_range"] = self.reduce_range is not False if self.mode == "dynamic" \
                else self.reduce_range
        if self.mode == "int8":
            record["io"] = "int8" if self.int8_io else "float32"
            record["calibration"] = {"method": self.calibration.method,
                                     "samples": calibration_samples}
            if self.calibration.method == "percentile":
                record["calibration"]["percentile"] = self.calibration.percentile
            if self.calibration.float_outputs:
                record["calibration"]["float_outputs"] = True
        if self.mode == "fp16":
            record["io"] = "float32"
        return record


#: Default tolerances per mode. Relative error is max |source - bundle| / max |source|.
#: int8 numbers are loose on purpose: 8-bit activations cost ~1% per layer on small nets,
#: and the task metric (max_drop, in accuracy points) is the check that matters there.
_DEFAULT_TOLERANCES = {
    "none": dict(min_cosine=0.99999, max_rel_error=1e-3, min_top1_agreement=0.99, max_drop=0.1),
    "fp16": dict(min_cosine=0.9999, max_rel_error=1e-2, min_top1_agreement=0.98, max_drop=0.2),
    "dynamic": dict(min_cosine=0.995, max_rel_error=0.1, min_top1_agreement=0.95, max_drop=1.0),
    "int8": dict(min_cosine=0.98, max_rel_error=0.2, min_top1_agreement=0.9, max_drop=1.5),
}


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail thresholds for validation; `max_drop` is in accuracy points (0-100)."""

    min_cosine: float
    max_rel_error: float
    min_top1_agreement: float
    max_drop: float

    @classmethod
    def for_mode(cls, mode: str, **overrides: float | None) -> "Tolerances":
        """The default tolerances of `mode`, with any non-None override applied."""
        if mode not in _DEFAULT_TOLERANCES:
            raise ConversionError(f"unknown quantization mode {mode!r}")
        values = dict(_DEFAULT_TOLERANCES[mode])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        checks = [("min_cosine", -1.0, 1.0), ("max_rel_error", 0.0, math.inf),
                  ("min_top1_agreement", 0.0, 1.0), ("max_drop", 0.0, 100.0)]
        for name, low, high in checks:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConversionError(f"tolerance {name} must be in [{low}, {high}], got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return {"min_cosine": self.min_cosine, "max_rel_error": self.max_rel_error,
                "min_top1_agreement": self.min_top1_agreement, "max_drop": self.max_drop}


@dataclass(frozen=True)
class ConversionConfig:
    """Everything that decides what a conversion produces (data is passed separately).

    target: "onnx" | "tflite".
    quantization: see QuantizationConfig.
    tolerances: None means the defaults of the quantization mode.
    accept: write the bundle even when validation is outside tolerance (never for
        inf/NaN or constant outputs).
    opset: ONNX opset for exporters that take one.
    dynamic_batch: export a dynamic batch axis where the model allows it.
    nhwc: for pytorch -> tflite, present NHWC I/O instead of the model's NCHW.
    validation_samples: at most this many held-out samples are compared; None (default)
        compares all of them up to DEFAULT_VALIDATION_LIMIT. The report says how many of
        how many were used.
    name/version: the bundle's name and version; preprocess/postprocess/labels go
        into the manifest unchanged (validated by the runtime when packing).
    device: a device profile name; its defaults and refusals apply when edgepack.devices
        is available.
    task/decode/assets: DESIGN §7 manifest fields written into the bundle as given
        (e.g. {"kind": "detect"} and detection decode steps; validation then compares
        detections, see edgepack.converters.detection).
    stream/examples: the manifest's `stream` (window, hop, context, state pairs, constants)
        and `examples` (per input: value/range/shape/asset), checked here with the
        manifest schema the runtime reads, and against the model's specs when the bundle
        is packed (as model.stream() checks them); the int8 speed check feeds the examples.
    """

    target: str = "onnx"
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    tolerances: Tolerances | None = None
    accept: bool = False
    opset: int = 18
    dynamic_batch: bool = True
    nhwc: bool = False
    validation_samples: int | None = None
    name: str = "model"
    version: str = "1.0.0"
    preprocess: Any = None
    postprocess: Any = None
    labels: tuple[str, ...] | None = None
    device: str | None = None
    task: Any = None
    decode: Any = None
    assets: Any = None
    stream: Any = None
    examples: Any = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConversionError(
                f"unknown target {self.target!r}; use one of {', '.join(TARGETS)}")
        self._check_stream_fields()
        if self.examples and self.quantization.examples != self.examples:
            # the speed check runs inside the quantizer, which sees only that config
            object.__setattr__(self, "quantization",
                               replace(self.quantization, examples=dict(self.examples)))
        if self.device is not None and self.quantization.device != self.device:
            # The int8 recipe is chosen inside the quantizer, which sees only this config.
            object.__setattr__(self, "quantization",
                               replace(self.quantization, device=self.device))
        method = self.quantization.calibration.method
        if self.target == "tflite" and self.quantization.mode == "int8" and method != "minmax":
            raise ConversionError(
                f"the TFLite converter calibrates with min/max only, not {method!r}; "
                "drop the calibration method or convert to --target onnx")
        if not isinstance(self.opset, int) or not 13 <= self.opset <= 23:
            raise ConversionError(f"ONNX opset must be an integer in 13..23, got {self.opset!r}")
        if self.validation_samples is not None and (
                not isinstance(self.validation_samples, int) or
                isinstance(self.validation_samples, bool) or self.validation_samples < 1):
            raise ConversionError(f"validation_samples must be a positive integer or None, "
                                  f"got {self.validation_samples!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConversionError("the bundle name must be a non-empty string")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))

    def _check_stream_fields(self) -> None:
        """`stream`/`examples` through the manifest schema the runtime reads (one error,
        naming the field, before any conversion work)."""
        if self.stream is None and self.examples is None:
            return
        from edgepack.runtime import manifest as schema
        from edgepack.runtime.errors import ManifestError
        try:
            if self.stream is not None:
                if not isinstance(self.stream, dict) or not self.stream:
                    raise ManifestError("stream must be an object such as {\"rate\": 16000, "
                                        "\"window\": 512}")
                schema._stream(self.stream, "stream")
            if self.examples is not None:
                schema._examples(self.examples, "examples")
        except ManifestError as e:
            raise ConversionError(f"convert: {e}") from e

    @property
    def validation_limit(self) -> int:
        """The most held-out samples validation compares."""
        return self.validation_samples or DEFAULT_VALIDATION_LIMIT

    @property
    def effective_tolerances(self) -> Tolerances:
        return self.tolerances or Tolerances.for_mode(self.quantization.mode)

    def with_changes(self, **changes: Any) -> "ConversionConfig":
        """A copy with fields replaced (re-validated)."""
        return replace(self, **changes)
