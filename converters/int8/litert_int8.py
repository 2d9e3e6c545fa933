"""int8 for LiteRT (TFLite): the recipe of the device, full-integer conversion, optional
accuracy-aware mixed precision and the on-the-spot speed check, recorded in the manifest
with the same keys as the ONNX path (onnx_int8.py).

    result = quantize_litert_int8("saved_model/", {"image": samples},
                                  LiteRtInt8Options(device="rpi4b", accuracy=AccuracyTarget(0.99)))
    result.model_bytes, result.record      # record -> manifest "quantization" fields

Accuracy-aware mode uses TensorFlow's own selective quantization
(tf.lite.experimental.QuantizationDebugger, `denylisted_nodes`), on the calibration samples:

1. calibrate once: the debugger converts with ranges only, and every candidate is a
   re-quantization of that calibrated model (no new calibration pass);
2. quantize everything; if top-1 agreement with the float TFLite model meets the target, stop;
3. rank layers by their own int8 error, from the debugger's layer-wise verification: each
   quantized op runs beside a float twin fed the same (dequantized) input, so a layer is
   measured alone, the TFLite counterpart of layer_search.py's "isolated" ranking;
4. keep layers float, worst first, re-quantizing and re-measuring after each, until the
   target is met or `max_float_layers` is reached (then the best mix, marked unmet);
5. once met, return the kept layers the target does not need to int8, least sensitive
   first: layer_search.py's `prune_float_layers`, on the same calibrated model and samples.

Kept-float layers are TFLite builtin float kernels between QUANTIZE/DEQUANTIZE ops. The
selective quantizer does not check `supported_ops`, so TFLITE_BUILTINS_INT8 needs no
widening, and the model keeps float I/O unless int8 I/O is asked for.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .layer_search import MixedPrecision, keep_float_greedily, prune_float_layers
from .onnx_int8 import Int8Result
from .recipes import Recipe, choose_recipe
from .scoring import AgreementMeter, Score
from .sensitivity import AccuracyTarget
from .speed import SpeedSettings, measure_speed

log = logging.getLogger(__name__)

#: The `method` recorded for the TFLite ranking (see `layer_errors`).
RANKING_METHOD = "layer_error"


@dataclass(frozen=True)
class LiteRtInt8Options:
    """How `quantize_litert_int8` works.

    recipe: an explicit LiteRT Recipe; None chooses one for `device` (a profile name,
        Profile or HostInfo; None = this machine).
    recipe_overrides: recipe fields to replace, as (name, value) pairs, e.g.
        (("per_channel", False),).
    int8_io: the model takes and returns int8 tensors.
    accuracy: None = plain int8; an AccuracyTarget = keep sensitive layers float until met
        (its `method` must stay "isolated": see the module docstring).
    speed: None = no speed check; SpeedSettings = time int8 vs fp32 here and warn if slower.
    """

    recipe: Recipe | None = None
    device: Any = None
    recipe_overrides: tuple[tuple[str, Any], ...] = ()
    int8_io: bool = False
    accuracy: AccuracyTarget | None = None
    speed: SpeedSettings | None = None

    def __post_init__(self) -> None:
        # TFLite's own layer-wise ranking (each layer's int8 error from one debugger run)
        # serves both the default "one_pass" and "isolated".
        if self.accuracy is not None and \
                self.accuracy.method not in ("one_pass", "isolated"):
            raise ConversionError(
                f"TFLite ranks layers by their own int8 error (layer-wise, like 'isolated'); "
                f"the sensitivity method {self.accuracy.method!r} exists for ONNX only")

    def resolved_recipe(self) -> Recipe:
        recipe = self.recipe or choose_recipe("litert", self.device)
        if recipe.engine != "litert":
            raise ConversionError(f"recipe {recipe.name} is for {recipe.engine}, not litert")
        recipe = recipe.with_overrides(**dict(self.recipe_overrides))
        if recipe.float_op_types or recipe.float_thin_convs:
            raise ConversionError(
                f"recipe {recipe.name} keeps op types or thin convs in float, which the TFLite "
                "path does not implement; drop float_op_types/float_thin_convs")
        return recipe


@dataclass(frozen=True)
class LayerError:
    """One TFLite layer's own int8 error, measured by the quantization debugger."""

    node: str       # output tensor name: what `denylisted_nodes` takes
    op_type: str    # TFLite builtin, e.g. CONV_2D
    error: float    # see `channel_error`

    def describe(self, rank: int) -> str:
        return (f"sensitivity rank {rank}: quantized on its own, its output is off by "
                f"{self.error:.0%} of the float layer's (mean over channels, TFLite "
                "quantization debugger)")


@dataclass(frozen=True)
class LiteRtMixedPrecision(MixedPrecision):
    """MixedPrecision whose kept layers are LayerErrors (same `describe`/`node`/`op_type`),
    recorded with the TFLite ranking method."""

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "method": RANKING_METHOD}


def quantize_litert_int8(saved_model: str | Path, calibration: Mapping[str, np.ndarray],
                         options: LiteRtInt8Options = LiteRtInt8Options()) -> Int8Result:
    """Convert the SavedModel at `saved_model` to a full-integer TFLite model as `options` say.

    calibration: float32 samples per signature input, batch axis first, all of them used
        (never the held-out validation split: the accuracy-aware pass measures on these).
    Raises ConversionError (bad options, no calibration data, converter failure).
    """
    recipe = options.resolved_recipe()
    samples = _checked(calibration)
    count = min(len(a) for a in samples.values())
    float_model = None
    if options.accuracy is not None or options.speed is not None:
        float_model = _convert(_converter(saved_model, recipe, None))
    mixed = None
    if options.accuracy is None:
        converter = _converter(saved_model, recipe, samples)
        if options.int8_io:
            import tensorflow as tf
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        quantized = _convert(converter, list(samples))
    else:
        mixed = accuracy_aware_litert(_converter(saved_model, recipe, samples), float_model,
                                      samples, options.accuracy, int8_io=options.int8_io)
        quantized = mixed.model_bytes
    record: dict[str, Any] = {"recipe": recipe.to_record(),
                              "calibration": {"method": "minmax", "samples": count},
                              "kept_float": []}
    if mixed is not None:
        record["accuracy_aware"] = mixed.to_record()
        record["kept_float"] = [dict(k) for k in record["accuracy_aware"]["kept_float"]]
    speed = None
    if options.speed is not None:
        speed = measure_speed(float_model, quantized, "litert", options.speed)
        record["speed"] = speed.to_record(target_device=options.device)
    return Int8Result(quantized, recipe, record, mixed, speed)


def accuracy_aware_litert(converter, float_model: bytes, samples: Mapping[str, np.ndarray],
                          target: AccuracyTarget = AccuracyTarget(), *,
                          int8_io: bool = False) -> LiteRtMixedPrecision:
    """Quantize with `converter` (set up for int8 with a representative dataset), keeping
    the layers with the largest own int8 error in float until top-1 agreement with
    `float_model` on `samples` reaches `target.min_agreement`.

    int8_io: the returned model has int8 I/O; a layer whose float form would leave a model
    input or output float is not kept float (it is skipped, logged).
    Raises ConversionError when the converter fails or no layer can be kept float.
    """
    import tensorflow as tf
    try:  # calibrates once; every candidate below re-quantizes the calibrated model
        with _debugger_warnings_off():
            debugger = tf.lite.experimental.QuantizationDebugger(converter=converter)
    except Exception as e:
        raise _failure(e, list(samples)) from e
    measured = {n: a[:target.samples] for n, a in samples.items()}
    meter = AgreementMeter("litert", float_model, measured)
    n_used = meter.count

    def measure(nodes: Sequence[str]) -> tuple[bytes, Score]:
        model = _requantize(debugger, nodes)
        return model, meter(model)

    full, base = measure([])
    log.info("accuracy-aware (TFLite): all-int8 agreement %.4f (target %.4f), error %.3g on "
             "%d samples", base.agreement, target.min_agreement, base.error, n_used)
    if base.agreement >= target.min_agreement:
        return LiteRtMixedPrecision(_shipped(full, int8_io), target, base, base, (), (), n_used)
    ranking = layer_errors(debugger, measured)
    if not ranking:
        raise ConversionError("the TFLite model has no quantized layer to keep in float")

    def measure_admissible(nodes: Sequence[str]) -> tuple[bytes, Score] | None:
        candidate = _requantize(debugger, nodes)
        if int8_io and _with_io(candidate, True) is None:
            log.info("accuracy-aware (TFLite): %s stays int8: in float it would leave the "
                     "model's I/O float, and int8 I/O was asked for", nodes[-1])
            return None
        return candidate, meter(candidate)

    greedy = keep_float_greedily(ranking, measure_admissible, (full, base), target)
    if greedy.score.agreement < target.min_agreement:
        return LiteRtMixedPrecision(_shipped(greedy.model_bytes, int8_io), target, base,
                                    greedy.score, greedy.kept, tuple(ranking), n_used)
    # Fewer float layers can only leave fewer tensors at the model's I/O float, so every
    # pruned mix still takes int8 I/O when the greedy one did.
    pruned = prune_float_layers(greedy.kept, greedy.model_bytes, greedy.score, measure,
                                target.min_agreement, all_int8=base)
    return LiteRtMixedPrecision(_shipped(pruned.model_bytes, int8_io), target, base,
                                pruned.score, pruned.kept, tuple(ranking), n_used,
                                pruned.trials)


def layer_errors(debugger, samples: Mapping[str, np.ndarray]) -> list[LayerError]:
    """Each quantized layer's own int8 error on `samples`, largest first.

    `debugger` is a QuantizationDebugger built from a converter, with no layer denylisted.
    """
    import tensorflow as tf
    order = _input_order(debugger.calibrated_model, samples)
    count = min(len(a) for a in samples.values())

    def dataset() -> Iterator[list[np.ndarray]]:
        return ([samples[n][i:i + 1] for n in order] for i in range(count))

    # Re-opened from its bytes: only that way does the debugger keep intermediate tensors,
    # which the float/int8 comparison reads (from the converter, a RESHAPE's float values
    # read back as 1e27: their buffer had been reused).
    with _debugger_warnings_off():
        stats = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debugger.get_debug_quantized_model(),
            debug_dataset=dataset, debug_options=tf.lite.experimental.QuantizationDebugOptions(
                layer_direct_compare_metrics={"channel_error": channel_error}))
        stats.run()
    dump = io.StringIO()
    stats.layer_statistics_dump(dump)
    # An unknown name in denylisted_nodes is ignored without a word: rank only real tensors.
    known = set(_tensor_names(debugger.calibrated_model))
    layers = [LayerError(row["tensor_name"], row["op_name"], float(row["channel_error"]))
              for row in csv.DictReader(io.StringIO(dump.getvalue()))
              if row["tensor_name"] in known and math.isfinite(float(row["channel_error"]))]
    return sorted(layers, key=lambda layer: -layer.error)


def channel_error(float_values: np.ndarray, quantized: np.ndarray, scale: float,
                  zero_point: int) -> float:
    """Mean over output channels (last axis) of ||dequantized - float|| / ||float||.

    Relative per channel, so layers of any magnitude compare, and per channel because a
    per-tensor activation scale is shared: one outlier channel widens it until the other
    channels round to zero. A per-tensor measure hides exactly that case: on an 8-channel
    conv with one channel x1000, rmse/scale was 0.15 (plain rounding gives ~0.29) and
    rmse/rms is dominated by the outlier, while this gives 0.87 (0.13 for the healthy head).
    NaN when every channel is zero in float (the debugger averages over samples with nanmean).
    """
    ref = np.asarray(float_values, dtype=np.float64)
    got = (np.asarray(quantized, dtype=np.float64) - zero_point) * scale
    if ref.ndim == 0:
        ref, got = ref.reshape(1), got.reshape(1)
    axes = tuple(range(ref.ndim - 1))
    signal = np.sqrt(np.sum(ref ** 2, axis=axes))
    error = np.sqrt(np.sum((got - ref) ** 2, axis=axes))
    alive = signal > 0
    return float(np.mean(error[alive] / signal[alive])) if alive.any() else float("nan")


def _converter(saved_model: str | Path, recipe: Recipe,
               samples: Mapping[str, np.ndarray] | None):
    """A TFLiteConverter for the float model (samples None) or full-integer int8."""
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if samples is None:
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not recipe.per_channel:
        # No public switch exists; this private flag is what the converter (and the
        # quantization debugger) read.
        converter._experimental_disable_per_channel = True
    return converter


def _representative(samples: Mapping[str, np.ndarray]) -> Callable[[], Iterator[dict]]:
    def generate() -> Iterator[dict[str, np.ndarray]]:
        from ..progress import report
        count = min(len(a) for a in samples.values())
        for i in range(count):
            report("calibrate", i, count)
            yield {n: a[i:i + 1] for n, a in samples.items()}
        report("calibrate", count, count)
    return generate


def _convert(converter, names: Sequence[str] = ()) -> bytes:
    try:
        return converter.convert()
    except Exception as e:
        raise _failure(e, names) from e


def _failure(e: Exception, names: Sequence[str]) -> ConversionError:
    """A converter failure as one clear error; `names`: the calibration data's inputs."""
    if isinstance(e, KeyError):  # the representative dataset lacks a signature input
        return ConversionError(f"calibration data has no samples for model input "
                               f"{e.args[0]!r}; it has {sorted(names)}")
    from ..keras_tflite import conversion_error
    return conversion_error(e)


def _requantize(debugger, nodes: Sequence[str]) -> bytes:
    import tensorflow as tf
    # Setting options re-instruments the debug model too (unused here): the public API
    # offers no cheaper way to re-quantize the calibrated model with a new denylist.
    try:
        with _debugger_warnings_off():
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=list(nodes))
        return debugger.get_nondebug_quantized_model()
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        kept = f" with {len(nodes)} layer(s) kept float" if nodes else ""
        raise ConversionError(f"TFLite int8 quantization{kept} failed: {first[:300]}") from e


@contextmanager
def _debugger_warnings_off() -> Iterator[None]:
    """The debugger runs on tf.lite.Interpreter, which warns that it is deprecated and that
    keeping intermediate tensors costs memory, and averages a layer that is all-zero in
    float (NaN, see `channel_error`) with a "Mean of empty slice" warning: all known and
    intended here, not news for the user (NaN layers are not ranked)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning,
                                module=r"tensorflow\.lite\.python\.interpreter")
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        yield


def _with_io(model: bytes, int8_io: bool) -> bytes | None:
    """`model` with int8 I/O when asked; None when a float layer at the boundary keeps
    an input or output float (TensorFlow then leaves that tensor float, with a warning)."""
    if not int8_io:
        return model
    import tensorflow as tf
    from tensorflow.lite.python.util import modify_model_io_type  # what the converter uses
    converted = modify_model_io_type(model, tf.int8, tf.int8)
    from edgepack.runtime.engines import open_engine
    engine = open_engine("litert", converted)
    try:
        dtypes = {s.dtype for s in (*engine.inputs(), *engine.outputs())}
    finally:
        engine.close()
    return converted if dtypes == {"int8"} else None


def _shipped(model: bytes, int8_io: bool) -> bytes:
    shipped = _with_io(model, int8_io)
    if shipped is None:
        raise ConversionError("the TFLite quantizer left the model's I/O float although int8 "
                              "I/O was asked for; convert without --int8-io")
    return shipped


def _checked(calibration: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not calibration:
        raise ConversionError("int8 quantization needs calibration data (a .npy/.npz file, "
                              "an image folder or an iterable of samples); pass "
                              "--calibration-data")
    arrays = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in calibration.items()}
    if min(len(a) for a in arrays.values()) < 1:
        raise ConversionError("calibration data holds no samples")
    return arrays


def _tensor_names(model_bytes: bytes) -> list[str]:
    from edgepack.runtime.engines.litert_engine import interpreter_class
    return [t["name"] for t in interpreter_class()(model_content=model_bytes)
            .get_tensor_details()]


def _input_order(model_bytes: bytes, samples: Mapping[str, np.ndarray]) -> list[str]:
    """Names of `samples` in the model's input order (the debugger feeds by position)."""
    from edgepack.runtime.engines.litert_engine import interpreter_class, tensor_names
    interpreter = interpreter_class()(model_content=model_bytes)
    names = tensor_names(interpreter)
    order = [names[d["index"]] for d in interpreter.get_input_details()]
    return order if set(order) == set(samples) else list(samples)
