"""Accuracy-aware int8: find the layers that cost the most accuracy and keep them in float.

The pass works on the calibration set (the held-out split stays for validation):

1. quantize everything with the recipe; if top-1 agreement with the float model already
   meets the target, stop: nothing is kept in float;
2. per-layer sensitivity, one of three ways:
   - "one_pass" (default, layer_noise.py): the relative rounding noise each layer's int8
     form adds (its activation tensors per channel, its weights), from one float run over
     the calibrated ranges: nothing is quantized per layer. The search then keeps whole
     blocks float first (block_search.py), then prunes per layer;
   - "isolated": quantize that layer alone, everything else float, and measure the
     output error it introduces. This finds tensors with outlier activations: both the layer
     producing such a tensor and the one consuming it quantize it, so each shows up alone,
     whereas leaving either one out of an all-int8 model changes nothing (the other still
     quantizes the tensor);
   - "leave_one_out": quantize every *other* layer and measure how much of the all-int8
     error disappears; it measures the layer in the model that would ship, where errors
     compound, but misses such pairs;
3. keep layers in float, most sensitive first, re-measuring after each, until the target is
   met or `max_float_layers` is reached (then the best mix found is returned, marked unmet);
4. once the target is met, prune (`prune_float_layers`): try each kept layer back in int8,
   the least sensitive first, and leave it int8 when the target still holds without it. A
   layer added early may be redundant once later ones are float too (the "isolated"
   ranking lists both the producer and the consumer of an outlier tensor), and every float
   layer costs speed and size on the device.

Calibration runs once (`Calibrated` reuses the ranges), so each step costs one graph
rewrite and one pass over the calibration set. The pruning is shared with the TFLite path
(litert_int8.py): it only sees a `measure(float nodes) -> (model, Score)` callable.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .quantize import QUANTIZABLE_OPS, Calibrated, recipe_float_nodes, weighted_nodes
from .recipes import Recipe
from .scoring import AgreementMeter, Score, TaskMetric, row_kl

log = logging.getLogger(__name__)

#: The pass, and the names benchmarks/int8_standin.py still imports from here (their home
#: is scoring.py).
__all__ = ["AccuracyTarget", "SENSITIVITY_METHODS", "accuracy_aware", "AgreementMeter",
           "Score", "row_kl"]

SENSITIVITY_METHODS = ("one_pass", "isolated", "leave_one_out")
#: Pruning leaves layers int8 only while the mix gives back at most this fraction of the
#: output error that the greedy phase's float layers removed from the all-int8 model.
#: Agreement alone is a count on a few hundred samples that sees only the first class
#: output: a layer that brings back a real share of the damage without flipping a top-1
#: here is likely to flip some on held-out data, or breaks an output agreement does not
#: look at (which validation may then refuse). A layer whose int8 form is only rounding
#: noise stays far below a quarter (0.02% for the head of the tests' outlier CNN), while one
#: that matters gives back most of it: with only the consumer of the TFLite benchmark's
#: outlier tensor float, agreement is 0.887 (it would pass a 0.88 target) but 92% of the
#: error is back. The bound is scaled by the removed error, not by the greedy mix's own
#: error, which is often ~0 (exactly 0 when every layer ended float); it is fixed at the
#: greedy mix, so returning several layers does not compound it.
MAX_ERROR_GIVEN_BACK = 0.25


@dataclass(frozen=True)
class AccuracyTarget:
    """What accuracy-aware quantization aims for.

    min_agreement: top-1 agreement with the float model on the calibration set (0-1).
    max_float_layers: at most this many quantizable layers are kept in float; 0 = only the
        post-training methods that keep every layer int8 (float outputs, equalization,
        calibration choice, bias correction, learned rounding).
    samples: at most this many calibration samples are used to measure (speed).
    method: "one_pass" (default: layer_noise.py, one float run, and the search tries whole
        blocks first) | "isolated" | "leave_one_out" (one quantization per layer; see the
        module docstring).
    reconstruction: None (default) or reconstruction.ReconstructionSettings: also try
        block reconstruction with activation quantization in the loop (BRECQ/QDrop-style;
        minutes on a MobileNetV2 on one core, so opt-in: the pass's 60 s goal holds
        without it). Like every fitted method, fitted on part of the calibration samples
        and kept only when better on the rest (selection.FittedSplit).
    """

    min_agreement: float = 0.99
    max_float_layers: int = 8
    samples: int = 256
    method: str = "one_pass"
    reconstruction: Any = None

    def __post_init__(self) -> None:
        if self.method not in SENSITIVITY_METHODS:
            raise ConversionError(f"unknown sensitivity method {self.method!r}; use one of "
                                  f"{', '.join(SENSITIVITY_METHODS)}")
        if not 0.0 < self.min_agreement <= 1.0:
            raise ConversionError(f"agreement target must be in (0, 1], got {self.min_agreement}")
        if self.max_float_layers < 0:
            raise ConversionError("max_float_layers must be 0 (PTQ methods only) or more")
        if self.samples < 2:
            raise ConversionError("the sensitivity pass needs at least 2 samples")


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's measured effect; larger `impact` = more harmful in int8.

    isolated: error/agreement of the model where only this layer is int8; impact = error.
    leave_one_out: error/agreement of the all-int8 model with this layer float; impact =
        fraction of the all-int8 error that keeping it float removes.
    """

    node: str
    op_type: str
    method: str
    error: float
    agreement: float
    impact: float

    def describe(self, rank: int) -> str:
        if self.method == "one_pass":
            return (f"sensitivity rank {rank}: its int8 form adds relative output error "
                    f"{self.error:.3g} (one float pass: its activations' and weights' "
                    "rounding)")
        if self.method == "isolated":
            return (f"sensitivity rank {rank}: int8 alone, this layer gives output error "
                    f"{self.error:.3g} and top-1 agreement {self.agreement:.4f}")
        return (f"sensitivity rank {rank}: keeping it float removes {self.impact:.0%} of the "
                f"all-int8 output error (agreement {self.agreement:.4f})")


class KeptLayer(Protocol):
    """A layer the pass may keep float: LayerSensitivity here, LayerError for TFLite."""

    node: str
    op_type: str

    def describe(self, rank: int) -> str: ...


#: The float layers of a candidate (besides the caller's and the recipe's) -> the candidate
#: model and its score on the measurement samples.
Measure = Callable[[Sequence[str]], "tuple[bytes, Score]"]


@dataclass(frozen=True)
class PruningTrial:
    """One layer of the greedy result tried back in int8 (`prune_float_layers`)."""

    node: str
    op_type: str
    others: tuple[str, ...]   # the layers still float during the trial
    score: Score              # the mix with this layer int8
    before: Score             # the greedy mix (all its layers float)
    error_limit: float        # the most error a pruned mix may have (MAX_ERROR_GIVEN_BACK)
    returned: bool            # True: the layer stays int8

    def describe(self, target: float) -> str:
        others = (f"once {', '.join(self.others)} {'was' if len(self.others) == 1 else 'were'}"
                  " float" if self.others else "with no other layer float")
        if self.returned:
            return (f"not needed {others}: agreement {self.score.agreement:.4f} (target "
                    f"{target}) and output error {self.score.error:.3g} without it "
                    f"({self.before.agreement:.4f} and {self.before.error:.3g} with it)")
        if self.score.agreement < target:
            return (f"needed: back in int8 it gives agreement {self.score.agreement:.4f}, "
                    f"below the target {target}")
        return (f"needed: back in int8 it keeps agreement {self.score.agreement:.4f} but gives "
                f"back over {MAX_ERROR_GIVEN_BACK:.0%} of the output error the float layers "
                f"removed (error {self.score.error:.3g}, at most {self.error_limit:.3g} allowed)")


@dataclass(frozen=True)
class Greedy:
    """What `keep_float_greedily` found: the best mix tried, how many candidates could not
    be kept float (`skipped`) and how many were tried and dropped because they did not
    improve the mix (`rejected`)."""

    kept: tuple[Any, ...]
    model_bytes: bytes
    score: Score
    skipped: int = 0
    rejected: int = 0


def _better(a: Score, b: Score) -> bool:
    """a is a strictly better mix than b: higher agreement, or as high with lower error."""
    return (a.agreement, -a.error) > (b.agreement, -b.error)


def keep_float_greedily(ranking: Sequence[KeptLayer],
                        measure: Callable[[Sequence[str]], tuple[bytes, Score] | None],
                        all_int8: tuple[bytes, Score], target: AccuracyTarget) -> Greedy:
    """Keep layers of `ranking` (most harmful first) in float one by one, re-measuring
    after each, until agreement reaches `target.min_agreement` or
    `target.max_float_layers` are float. Returns the best mix found (the all-int8
    `all_int8` model and score if none was better), logging a warning when it misses.

    A candidate joins the float set only when the mix with it is strictly better than the
    best mix so far (higher agreement, or as high with lower error): a layer whose float
    version lowers agreement is never carried into later mixes, and the search goes on
    with the next candidate while the budget of float layers lasts.

    Errors of two layers can cancel (an outlier channel scaled up by one conv and down by
    the next), so one of them alone may lower agreement while the pair is what is needed.
    The last rejected candidate stays *pending*: when the next candidate does not help
    alone, the mix with both is measured too (one more quantization), and both are kept if
    that mix is better than the best so far; when the next one does help, the pending one
    is tried again on top of it.

    `measure(nodes)` quantizes with `nodes` float and returns (model, score), or None when
    that mix is not admissible (the candidate is then skipped).
    """
    from ..progress import report
    order = {id(layer): i for i, layer in enumerate(ranking)}
    kept: list[KeptLayer] = []
    pending: KeptLayer | None = None
    skipped = rejected = 0
    best_model, best = all_int8

    def nodes(*extra: KeptLayer) -> list[str]:
        return [k.node for k in sorted((*kept, *extra), key=lambda k: order[id(k)])]

    for index, layer in enumerate(ranking):
        if len(kept) >= target.max_float_layers or best.agreement >= target.min_agreement:
            break
        report("sensitivity", index, len(ranking))
        measured = measure(nodes(layer))
        if measured is None:
            skipped += 1
            continue
        adding: tuple[KeptLayer, ...] = (layer,)
        model, result = measured
        if not _better(result, best) and pending is not None and \
                len(kept) + 2 <= target.max_float_layers:
            paired = measure(nodes(pending, layer))
            if paired is not None and _better(paired[1], best):
                adding, (model, result) = (pending, layer), paired
        if not _better(result, best):
            rejected += 1
            log.info("accuracy-aware: float %s does not help (agreement %.4f, error %.3g vs "
                     "%.4f, %.3g); left int8", layer.node, result.agreement, result.error,
                     best.agreement, best.error)
            pending = layer
            continue
        kept = sorted((*kept, *adding), key=lambda k: order[id(k)])
        best_model, best = model, result
        log.info("accuracy-aware: +float %s -> agreement %.4f, error %.3g",
                 " + ".join(k.node for k in adding), result.agreement, result.error)
        if pending is not None and pending not in adding and \
                len(kept) < target.max_float_layers and best.agreement < target.min_agreement:
            # The float set changed: the pending candidate may help now.
            retried = measure(nodes(pending))
            if retried is not None and _better(retried[1], best):
                kept = sorted((*kept, pending), key=lambda k: order[id(k)])
                (best_model, best), rejected = retried, rejected - 1
                log.info("accuracy-aware: +float %s (retried) -> agreement %.4f, error %.3g",
                         pending.node, best.agreement, best.error)
        if pending in kept:
            pending = None
    report("sensitivity", len(ranking), len(ranking))
    if best.agreement < target.min_agreement:
        notes = [f"{n} {what}" for n, what in ((skipped, "could not be kept float"),
                                                (rejected, "did not help")) if n]
        log.warning("accuracy-aware: %d layers kept in float reach agreement %.4f at best, "
                    "below the target %.4f%s", len(kept), best.agreement,
                    target.min_agreement, f" ({'; '.join(notes)})" if notes else "")
    return Greedy(tuple(kept), best_model, best, skipped, rejected)


@dataclass(frozen=True)
class Pruned:
    """What `prune_float_layers` leaves: the final float layers and their model."""

    kept: tuple[Any, ...]
    model_bytes: bytes
    score: Score
    trials: tuple[PruningTrial, ...]


def prune_float_layers(kept: Sequence[KeptLayer], model_bytes: bytes, result: Score,
                       measure: Measure, min_agreement: float, *, all_int8: Score) -> Pruned:
    """Try each of `kept` (most sensitive first, as the greedy phase added them) back in
    int8, the least sensitive first; a layer stays int8 when the mix without it still
    reaches `min_agreement` and gives back at most MAX_ERROR_GIVEN_BACK of the error that
    the float layers removed from `all_int8`.

    `model_bytes`/`result`: the greedy mix (all of `kept` float), which met the target.
    `measure(nodes)` quantizes with `nodes` float (the caller adds its own fixed ones) and
    returns (model, score), on the same samples that gave `result`.
    """
    removed = max(all_int8.error - result.error, 0.0)
    error_limit = result.error + MAX_ERROR_GIVEN_BACK * removed
    current = list(kept)
    best_model, best = model_bytes, result
    trials = []
    for layer in reversed(kept):
        others = [k for k in current if k is not layer]
        model, trial = measure([k.node for k in others])
        returned = trial.agreement >= min_agreement and trial.error <= error_limit
        log.info("accuracy-aware: %s back to int8 -> agreement %.4f, error %.3g: %s",
                 layer.node, trial.agreement, trial.error, "kept int8" if returned else "needed")
        trials.append(PruningTrial(layer.node, layer.op_type, tuple(k.node for k in others),
                                   trial, result, error_limit, returned))
        if returned:
            current, best_model, best = others, model, trial
    return Pruned(tuple(current), best_model, best, tuple(trials))


@dataclass(frozen=True)
class MixedPrecision:
    """Result of the pass: the model to ship and the evidence for the manifest."""

    model_bytes: bytes
    target: AccuracyTarget
    all_int8: Score
    final: Score
    kept_float: tuple[LayerSensitivity, ...]
    ranking: tuple[LayerSensitivity, ...] = field(default=())
    samples: int = 0
    pruning: tuple[PruningTrial, ...] = ()   # empty when the target was not met
    #: PTQ improvements tried before keeping layers float, in order, with their effect.
    methods: tuple[Mapping[str, Any], ...] = ()

    @property
    def met(self) -> bool:
        return self.final.agreement >= self.target.min_agreement

    def to_record(self) -> dict[str, Any]:
        """The `accuracy_aware` entry of the manifest's quantization record."""
        return {
            "target_agreement": self.target.min_agreement,
            "measured_on": f"calibration set ({self.samples} samples)",
            "agreement_all_int8": round(self.all_int8.agreement, 6),
            "agreement": round(self.final.agreement, 6),
            "error_all_int8": float(f"{self.all_int8.error:.4g}"),
            "error": float(f"{self.final.error:.4g}"),
            "met": self.met,
            "method": self.target.method,
            "kept_float": [{"node": s.node, "op": s.op_type, "reason": self._reason(s, i)}
                           for i, s in enumerate(self.kept_float)],
            "returned_to_int8": [{"node": t.node, "op": t.op_type,
                                  "reason": t.describe(self.target.min_agreement)}
                                 for t in self.pruning if t.returned],
            "methods": [dict(m) for m in self.methods],
        }

    def _reason(self, layer: KeptLayer, index: int) -> str:
        # The rank in the whole ranking: pruning (and TFLite's int8-I/O skips) leave gaps.
        rank = self.ranking.index(layer) + 1 if layer in self.ranking else index + 1
        trial = next((t for t in self.pruning if t.node == layer.node), None)
        needed = f"; {trial.describe(self.target.min_agreement)}" if trial else ""
        return layer.describe(rank) + needed


def accuracy_aware(calibrated: Calibrated, recipe: Recipe, samples: Mapping[str, np.ndarray],
                   target: AccuracyTarget = AccuracyTarget(), *,
                   keep_float: Sequence[str] = (), threads: int | None = None,
                   methods_before: Sequence[Mapping[str, Any]] = (),
                   metric: TaskMetric | None = None) -> MixedPrecision:
    """Quantize `calibrated` with `recipe`, keeping the most sensitive layers in float until
    top-1 agreement with the float model on `samples` reaches `target.min_agreement`.
    `keep_float` names nodes that stay float in every candidate (the caller's choice).
    `methods_before`: records of PTQ methods the caller already tried (cross-layer
    equalization, calibration choice: calibration_choice.prepare_calibrated), listed first.
    `metric`: the task's agreement in place of top-1 (AgreementMeter), e.g. the detection
    agreement for a detector (converters.detection.detection_metric): every candidate of
    the search is scored, kept or refused by it, and the target is a target of it.

    Raises ConversionError when the model has nothing to quantize.
    """
    # Against the model before any float rewrite (equalization), as prepare_calibrated did.
    meter = AgreementMeter("onnxruntime", calibrated.reference_bytes,
                           {n: a[:target.samples] for n, a in samples.items()}, threads,
                           metric=metric)
    n_used = meter.count
    fixed = list(keep_float)

    correction: list = []   # the bias correction in use, if any (set below)
    rounding: list = []     # the learned rounding (adaround.py) in use, if any (set below)
    original = calibrated.model_bytes

    def measure(nodes: Sequence[str]) -> tuple[bytes, Score]:
        # Both only where the weights are int8; an undone method leaves its model behind.
        if correction or rounding or calibrated.model_bytes is not original:
            rounded = [r.node for r in rounding[0].layers] if rounding else []
            model = correction[0].apply([*fixed, *nodes, *rounded]) if correction \
                else original
            if rounding:
                model = rounding[0].apply(model, skip=[*fixed, *nodes])
            calibrated.replace_model(model)
        model = calibrated.quantize(recipe, [*fixed, *nodes])
        return model, meter(model)

    # prepare_calibrated measured this very model already (same float nodes and samples).
    full, base = calibrated.measured(fixed, meter.samples) or measure([])
    log.info("accuracy-aware: all-int8 agreement %.4f (target %.4f), error %.3g on %d samples",
             base.agreement, target.min_agreement, base.error, n_used)
    # The manifest's all-int8 figure is the plain one, before the caller's methods.
    plain = Score(methods_before[0]["agreement_before"], methods_before[0]["error_before"]) \
        if methods_before else base
    if base.agreement >= target.min_agreement:
        return MixedPrecision(full, target, plain, base, (), (), n_used,
                              methods=tuple(methods_before))
    # Fitted methods fit the first part of the calibration samples and are judged on the
    # rest (selection.FittedSplit): a rewrite that only fits its samples is never kept.
    from .selection import fitted_split
    split = fitted_split(samples)
    decide = _remembering(AgreementMeter("onnxruntime", calibrated.reference_bytes,
                                         split.decide, threads, metric=metric)) \
        if split is not None else None
    if split is None:
        log.info("accuracy-aware: too few calibration samples to hold some back: the "
                 "fitted methods (bias correction, learned rounding, reconstruction) are "
                 "not tried")
        methods: tuple = ()
    else:
        (full, base), methods = _try_bias_correction(original, split, measure, (full, base),
                                                     correction, decide)
    if split is not None and target.reconstruction is not None:
        (full, base), rebuilt = _try_reconstruction(calibrated, original, recipe, fixed,
                                                    split, meter, decide, (full, base),
                                                    correction, target.reconstruction)
        if rebuilt and rebuilt[0]["kept"]:
            # the reconstructed float model (weights on their grid) is the model from now
            # on; a kept bias correction is part of it
            original = calibrated.model_bytes
            correction.clear()
        methods = (*methods, *rebuilt)
    methods = (*methods_before, *methods)
    # The sensitivity ranking quantizes one layer at a time on the plain float model (its
    # mixes are not built through `measure`, which applies the correction itself).
    calibrated.replace_model(original)
    if base.agreement >= target.min_agreement:
        return MixedPrecision(full, target, plain, base, (), (), n_used, methods=methods)
    by_recipe = recipe_float_nodes(calibrated.model_bytes, recipe)
    nodes = [(name, op) for name, op in weighted_nodes(calibrated.model_bytes, QUANTIZABLE_OPS)
             if name and name not in by_recipe and name not in fixed]
    if not nodes:
        raise ConversionError("the model has no named quantizable layer to keep in float")
    ranking = rank_layers(calibrated, recipe, meter, base, nodes, target.method, fixed,
                          samples=samples)
    from .adaround import try_learned_rounding
    (full, base), learned = try_learned_rounding(original, split, ranking, measure,
                                                 (full, base), rounding, decide=decide) \
        if split is not None else ((full, base), ())
    methods = (*methods, *learned)
    if base.agreement >= target.min_agreement:
        return MixedPrecision(full, target, plain, base, (), tuple(ranking), n_used,
                              methods=methods)
    if target.max_float_layers == 0:      # PTQ methods only: no layer is kept float
        return MixedPrecision(full, target, plain, base, (), tuple(ranking), n_used,
                              methods=methods)
    if target.method == "one_pass":
        from .block_search import search_blocks
        return search_blocks(calibrated, ranking, measure, (full, base), target, plain,
                              n_used, methods)
    greedy = keep_float_greedily(ranking, measure, (full, base), target)
    if greedy.score.agreement < target.min_agreement:
        return MixedPrecision(greedy.model_bytes, target, plain, greedy.score, greedy.kept,
                              tuple(ranking), n_used, methods=methods)
    pruned = prune_float_layers(greedy.kept, greedy.model_bytes, greedy.score, measure,
                                target.min_agreement, all_int8=base)
    return MixedPrecision(pruned.model_bytes, target, plain, pruned.score, pruned.kept,
                          tuple(ranking), n_used, pruned.trials, methods=methods)


def _remembering(meter: "AgreementMeter") -> Callable[[bytes], Score]:
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


def _try_bias_correction(float_model: bytes, split, measure: Callable[[Sequence[str]],
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


def _try_reconstruction(calibrated: Calibrated, original: bytes, recipe: Recipe,
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


def rank_layers(calibrated: Calibrated, recipe: Recipe, meter: Callable[[bytes], Score],
                base: Score, nodes: Sequence[tuple[str, str]], method: str = "isolated",
                fixed: Sequence[str] = (), samples: Mapping[str, np.ndarray] | None = None
                ) -> list[LayerSensitivity]:
    """Sensitivity of each (node, op) in `nodes` by `method`, most harmful first
    (`fixed` nodes stay float throughout). "one_pass" needs the calibration `samples`
    and quantizes nothing (layer_noise.py); the others quantize once per layer."""
    from ..progress import report
    if method == "one_pass":
        from .layer_noise import layer_noise
        if samples is None:
            raise ConversionError("the one-pass sensitivity ranking needs calibration samples")
        if not calibrated.calibrated:
            calibrated.quantize(recipe, fixed)
        noise = layer_noise(calibrated.model_bytes, samples, calibrated.ranges(),
                            [name for name, _ in nodes], recipe.activation_type,
                            recipe.per_channel, recipe.reduce_range)
        ranking = [LayerSensitivity(name, op, method, noise[name].total, float("nan"),
                                    noise[name].total)
                   for name, op in nodes if name in noise]
        ranking.sort(key=lambda s: -s.impact)
        return ranking
    names = [name for name, _ in nodes]
    ranking = []
    for index, (name, op) in enumerate(nodes):
        report("sensitivity", index, len(nodes))
        if method == "isolated":
            others = [n for n in names if n != name]
            result = meter(calibrated.quantize(recipe, [*fixed, *others]))
            impact = result.error
        else:
            result = meter(calibrated.quantize(recipe, [*fixed, name]))
            impact = (base.error - result.error) / base.error if base.error > 0 else 0.0
        ranking.append(LayerSensitivity(name, op, method, result.error, result.agreement,
                                        impact))
    report("sensitivity", len(nodes), len(nodes))
    ranking.sort(key=lambda s: -s.impact)
    return ranking
