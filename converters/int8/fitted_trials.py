"""The fitted methods' trials of the accuracy-aware pass: fit, compare, keep or undo.

A fitted method (bias correction, block reconstruction) is fitted on `split.fit`, the first
part of the calibration samples, and kept only when the model with it is better on the
held-back `split.decide` (selection.fitted_better), so a rewrite that only fits its own
samples never ships. Each trial returns the model and score the pass goes on from, and the
method's record for the manifest. (Learned rounding's trial is adaround.try_learned_rounding.)
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from edgepack.runtime.errors import ConversionError

from .quantize import Calibrated
from .recipes import Recipe
from .scoring import AgreementMeter, Score

log = logging.getLogger(__name__)


def remembering(meter: "AgreementMeter") -> Callable[[bytes], Score]:
    """`meter`, scoring each distinct model once (the status quo of one fitted method is
    often the status quo of the next)."""
    import hashlib
    known: dict[str, Score] = {}

    def scored(model: bytes) -> Score:
        key = hashlib.blake2b(model, digest_size=16).hexdigest()
        if key not in known:
            known[key] = meter(model)
        return known[key]
    return scored


def try_bias_correction(float_model: bytes, split, measure: Callable[[Sequence[str]],
                                                                   tuple[bytes, Score]],
                        plain: tuple[bytes, Score], in_use: list, decide: "AgreementMeter"
                        ) -> tuple[tuple[bytes, Score], tuple[dict[str, Any], ...]]:
    """Correct the float biases for the int8 weights' expected error (bias_correction.py),
    estimated on `split.fit`, and keep the correction (appended to `in_use`, which
    `measure` applies to every later mix, to the int8 layers only) when the all-int8
    result is better with it on the held-back `split.decide` (selection.fitted_better)."""
    from .bias_correction import correct_biases
    from .selection import fitted_better, fitted_fields, fitted_record
    corrected = correct_biases(float_model, plain[0], split.fit)
    if not corrected.layers:
        return plain, ()
    in_use.append(corrected)
    after = measure([])
    before_decide, after_decide = decide(plain[0]), decide(after[0])
    kept = fitted_better(after_decide, before_decide)
    record = fitted_record("bias_correction", corrected.to_record(), plain[1], after[1],
                           kept, fitted_fields(after_decide, before_decide, split))
    log.info("accuracy-aware: bias correction of %d layers: agreement %.4f -> %.4f, error "
             "%.3g -> %.3g (%s)", len(corrected.layers), plain[1].agreement,
             after[1].agreement, plain[1].error, after[1].error, "kept" if kept else "undone")
    if not kept:
        in_use.clear()
        return plain, (record,)
    return after, (record,)


def try_reconstruction(calibrated: Calibrated, original: bytes, recipe: Recipe,
                       fixed: Sequence[str], split, meter: "AgreementMeter",
                       decide: "AgreementMeter", current: tuple[bytes, Score],
                       correction: list, settings
                       ) -> tuple[tuple[bytes, Score], tuple[dict[str, Any], ...]]:
    """Block reconstruction (reconstruction.py) of the current all-int8 model `current`
    (of `original`, the float model before the fitted methods, with the bias correction
    in `correction` if one was kept), fitted on `split.fit`, quantized through the same
    quantizer with the same ranges, and kept when better on the held-back `split.decide`
    (selection.fitted_better). When kept, `calibrated` quantizes the reconstructed float
    model from now on."""
    from .reconstruction import reconstruct
    from .selection import fitted_better, fitted_fields, fitted_record
    # Not calibrated.model_bytes: an undone method's trial model may still be in there.
    before_float = correction[0].apply(list(fixed)) if correction else original
    try:
        rebuilt = reconstruct(before_float, current[0], split.fit, settings)
    except ConversionError as e:
        log.info("accuracy-aware: block reconstruction not tried: %s", e)
        return current, ({"method": "block_reconstruction", "kept": False,
                          "skipped": str(e)},)
    calibrated.replace_model(rebuilt.model_bytes)
    calibrated_ranges = calibrated.ranges() if rebuilt.ranges else None
    if rebuilt.ranges:      # learned activation steps, as ranges the quantizer recomputes
        calibrated.replace_ranges({**calibrated_ranges, **rebuilt.ranges})
    model = calibrated.quantize(recipe, list(fixed))
    after = (model, meter(model))
    before_decide, after_decide = decide(current[0]), decide(model)
    kept = fitted_better(after_decide, before_decide)
    record = fitted_record("block_reconstruction", rebuilt.to_record(), current[1],
                           after[1], kept, fitted_fields(after_decide, before_decide, split))
    log.info("accuracy-aware: block reconstruction (%.0f s): held-back agreement %.4f -> "
             "%.4f (%s: %s)", rebuilt.seconds, before_decide.agreement,
             after_decide.agreement, "kept" if kept else "undone", record["decided_by"])
    if not kept:
        calibrated.replace_model(before_float)
        if calibrated_ranges is not None:
            calibrated.replace_ranges(calibrated_ranges)
        return current, (record,)
    return after, (record,)
