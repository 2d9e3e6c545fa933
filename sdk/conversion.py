"""`edgepack.convert(...)` (defined here, in edgepack.conversion): the one-call conversion API (a thin layer over edgepack.converters)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from edgepack.runtime.errors import ConversionError

from edgepack.converters import (CalibrationConfig, ConversionConfig, ConversionResult,
                                 QuantizationConfig, Tolerances, convert_model)


def convert(source: Any, out: str | Path, *, target: str | None = None,
            quantize: str | None = None,
            example_inputs: Any = None, input_shapes: Sequence[Sequence[int]] | None = None,
            weights: str | Path | None = None,
            calibration_data: Any = None, calibration_method: str = "minmax",
            calibration_samples: int = 200, per_channel: bool = True, int8_io: bool = False,
            reduce_range: bool | None = None, accuracy_target: float | None = None,
            max_float_layers: int | None = None, reconstruction: bool = False,
            speed_check: bool = True,
            validation_data: Any = None, validation_labels: Any = None,
            validation_samples: int | None = None, max_drop: float | None = None,
            tolerances: Tolerances | None = None, accept: bool = False,
            name: str | None = None, version: str = "1.0.0",
            labels: Sequence[str] | None = None,
            preprocess: Mapping[str, list] | None = None,
            postprocess: Mapping[str, list] | None = None,
            task: Mapping[str, Any] | None = None,
            decode: Sequence[Mapping[str, Any]] | None = None,
            assets: Mapping[str, Any] | None = None,
            stream: Mapping[str, Any] | None = None,
            examples: Mapping[str, Any] | None = None,
            opset: int = 18, dynamic_batch: bool = True, nhwc: bool = False,
            device: str | None = None, directory: bool = False) -> ConversionResult:
    """Convert a PyTorch/Keras/ONNX/TFLite model into a validated bundle at `out`.

    source: a live torch.nn.Module / keras.Model, a model file (.pt2, TorchScript .pt,
        .keras, .h5, SavedModel dir, .onnx, .tflite) or "module:factory" (+ `weights`).
    target: "onnx" or "tflite".  quantize: "none", "fp16", "dynamic" or "int8".
        Unset, they come from the `device` profile's recommendations, else onnx / none.
    calibration_data (int8): .npy/.npz path, image folder, array, dict or iterable.
    validation_data/validation_labels: held-out samples (and integer labels for accuracy);
        without them a tail of the calibration data is held out, else seeded random inputs.
    validation_samples: compare at most this many held-out samples (default: all, up to
        10,000); the report records how many were available when fewer were used.
    max_drop: allowed accuracy drop in points (overrides the mode's default).
    accept: keep a bundle whose validation is outside tolerance (never one with inf/NaN or
        constant outputs).
    reduce_range: ONNX int8/dynamic with 7-bit weights, safe on x86 int8 kernels without
        VNNI; False for full 8-bit weights. None (default): the int8 recipe of the device
        (or of this machine) decides.
    accuracy_target (int8): keep the most sensitive layers in float until top-1 agreement
        with the source on the calibration set reaches this (e.g. 0.99); the manifest
        lists the layers kept in float and why.
    max_float_layers (with accuracy_target): at most this many layers kept float (default
        8); 0 = every layer int8, only the post-training methods (docs/int8-accuracy.md).
    reconstruction (with accuracy_target, ONNX): also try block reconstruction
        (BRECQ/QDrop-style; about a minute more on a small CNN), kept only if better on
        held-back calibration samples.
    task/decode/assets: DESIGN §7 fields for the bundle, e.g. task={"kind": "detect"} with
        decode=[{"op": "yolo"}, {"op": "nms"}]: validation then matches detections.
    stream/examples: the manifest's `stream` (window, hop, context, state pairs) and
        `examples` (per input: value/range/shape, e.g. {"sr": {"value": 16000}}), checked
        against the converted model when it is packed; the int8 speed check feeds the
        examples.
    speed_check (int8): time int8 against fp32 on this machine; the validation report says
        whether it is faster here, and a warning is logged when it is not.

    Returns a ConversionResult (path, validation report, model size). Raises
    ConversionError, ValidationError (with `.report`) or EngineNotInstalledError.
    """
    chosen_by_device = quantize is None and device is not None
    target, quantize = resolve_defaults(target, quantize, device)
    if chosen_by_device and quantize == "int8" and calibration_data is None:
        from edgepack.devices import refuse_reason
        if not refuse_reason(device, target, quantize):  # else the device refusal comes first
            raise ConversionError(_needs_calibration(device, target))
    quantization = QuantizationConfig(
        mode=quantize, per_channel=per_channel, int8_io=int8_io, reduce_range=reduce_range,
        accuracy_target=accuracy_target, max_float_layers=max_float_layers,
        reconstruction=reconstruction, speed_check=speed_check,
        calibration=CalibrationConfig(method=calibration_method, samples=calibration_samples))
    if tolerances is None and max_drop is not None:
        tolerances = Tolerances.for_mode(quantize, max_drop=max_drop)
    config = ConversionConfig(
        target=target, quantization=quantization, tolerances=tolerances, accept=accept,
        opset=opset, dynamic_batch=dynamic_batch, nhwc=nhwc,
        validation_samples=validation_samples, name=name or Path(out).stem, version=version,
        preprocess=preprocess, postprocess=postprocess,
        labels=tuple(labels) if labels is not None else None, device=device,
        task=task, decode=decode, assets=assets, stream=stream, examples=examples)
    return convert_model(source, out, config, example_inputs=example_inputs,
                         input_shapes=input_shapes, weights=weights,
                         calibration_data=calibration_data, validation_data=validation_data,
                         validation_labels=validation_labels, directory=directory)


def resolve_defaults(target: str | None, quantize: str | None,
                     device: str | None) -> tuple[str, str]:
    """The (target, quantization) a conversion uses: as given, else the device profile's
    recommendation, else onnx / none. Raises DeviceError for an unknown profile."""
    if device is not None and (target is None or quantize is None):
        from edgepack.devices import defaults_for  # raises DeviceError for an unknown profile
        recommended = defaults_for(device)
        target = target or recommended.target
        quantize = quantize or recommended.quantization
    return target or "onnx", quantize or "none"


def _needs_calibration(device: str, target: str) -> str:
    """The refusal when the device's recommended int8 has no data, with the modes that need
    none and that the device can run."""
    from edgepack.devices import refuse_reason
    others = [m for m in ("dynamic", "fp16", "none") if not refuse_reason(device, target, m)]
    offer = " or ".join(f"-q {m}" for m in others)
    return (f"--device {device} recommends {target} int8, which needs calibration data: pass "
            f"--calibration-data (a .npy/.npz file or an image folder of typical inputs)"
            + (f", or choose {offer}" if offer else ""))
