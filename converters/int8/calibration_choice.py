"""Calibration method per tensor, and the float-graph choices made before calibrating.

One calibration method for every tensor is a compromise: MinMax keeps the whole range
(right for bounded post-ReLU tensors), Percentile and Entropy clip rare outliers (right for
heavy-tailed tensors, where MinMax spends the 256 levels on values that almost never occur).
`choose_calibration` takes the MinMax ranges of the plain calibration (all samples), runs
the float model once more on a subsample to fill one histogram per activation tensor
(activation_stats.py), computes the Percentile and Entropy ranges from those histograms, and
for every tensor picks the range whose quantization gives that tensor the lowest error
(per-sample relative squared error, summed over samples), all without running the model
again. The candidates {each method alone, the per-tensor mix} are then quantized with their
ranges given (no calibration run: `Calibrated.with_ranges`) and the one whose model scores
best on the calibration samples is kept: a significant difference in top-1 agreement, or
within its noise the lower output divergence (selection.ptq_better).

onnxruntime's own Entropy/Percentile calibrators re-ran the model per method and built their
histograms in Python per batch: 100-180 s on a 224x224 MobileNetV2 on 2 cores, for the same
decisions.

`prepare_calibrated` is what `quantize_int8` runs when an accuracy target is set and plain
int8 misses it: outputs left in float (no 8-bit requantization of the logits), cross-layer
equalization (cle.py, a float rewrite, so a fresh calibration),
then the calibration choice; each is kept only when the all-int8 result is better by
`selection.ptq_better` (significantly higher agreement, or within the noise lower
divergence from the float outputs).
Later methods (bias correction, learned rounding, float layers) run in `accuracy_aware`,
which reuses the all-int8 measurement made here (`Calibrated.remember`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .quantize import (METHODS, Calibrated, CalibrationSettings, float_graph_outputs,
                       recipe_float_nodes)
from .recipes import Recipe

log = logging.getLogger(__name__)

#: Calibration samples whose activations fill the histograms that decide the per-tensor
#: choice and give the Percentile/Entropy ranges.
CHOICE_SAMPLES = 64


@dataclass(frozen=True)
class CalibrationChoice:
    """The chosen calibration: a per-tensor mix or one method for the model."""

    calibrated: Calibrated          # ready to quantize (owned by the caller from now on)
    chosen: str                     # "per_tensor" or a method name
    scores: dict[str, Any]          # candidate -> Score on the measurement samples
    per_tensor: dict[str, str]      # tensor -> method, for the mix
    model_bytes: bytes              # the all-int8 model of the chosen calibration

    def to_record(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for method in self.per_tensor.values():
            counts[method] = counts.get(method, 0) + 1
        return {"chosen": self.chosen,
                "candidates": {k: {"agreement": round(s.agreement, 6),
                                   "error": float(f"{s.error:.4g}")}
                               for k, s in self.scores.items()},
                "per_tensor_methods": counts}


def choose_calibration(float_model: bytes, calibration: Mapping[str, np.ndarray],
                       recipe: Recipe, meter, settings: CalibrationSettings,
                       methods: Sequence[str] = METHODS,
                       exclude_nodes: Sequence[str] = (),
                       reuse: Calibrated | None = None,
                       reuse_measured: tuple[bytes, Any] | None = None) -> CalibrationChoice:
    """The MinMax/Percentile/Entropy ranges of every activation tensor of `float_model`,
    the per-tensor mix of the best of them, and the candidate whose all-int8 model `meter`
    (model bytes -> Score) scores best.

    reuse: a Calibrated of this float model (not calibrated again; the caller keeps owning
    it: it is never closed here, and may be the one returned); reuse_measured: its all-int8
    model and that model's score under `meter`, when the caller has measured them already."""
    from .activation_stats import collect_histograms, method_ranges
    from .selection import best_of, ptq_better

    candidates: dict[str, tuple[Calibrated, bytes]] = {}
    scores: dict[str, Any] = {}
    ours: list[Calibrated] = []

    def calibrated_with(method: str, ranges: Mapping[str, tuple[float, float]]) -> Calibrated:
        c = Calibrated.with_ranges(float_model, calibration,
                                   replace(settings, method=method), ranges)
        ours.append(c)
        return c

    # Candidates whose ranges come out alike quantize to the same bytes: scored once.
    by_model: dict[str, Any] = {}
    if reuse_measured is not None:
        by_model[_digest(reuse_measured[0])] = reuse_measured[1]

    def score_of(name: str, c: Calibrated, known=None) -> None:
        model = known[0] if known else c.quantize(recipe, exclude_nodes)
        key = _digest(model)
        if key not in by_model:
            by_model[key] = known[1] if known else meter(model)
        candidates[name], scores[name] = (c, model), by_model[key]

    usable = reuse is not None and reuse.model_bytes == float_model
    try:
        if usable and reuse.settings.method == "minmax":
            base = reuse
        else:
            base = Calibrated(float_model, calibration, replace(settings, method="minmax"))
            ours.append(base)
        if "minmax" in methods:
            score_of("minmax", base, reuse_measured if base is reuse else None)
        elif not base.calibrated:
            base.quantize(recipe, exclude_nodes)
        minmax = base.ranges()
        histograms = collect_histograms(float_model, calibration, minmax, CHOICE_SAMPLES)
        ranges = method_ranges(histograms, methods, settings.percentile)
        for method in methods:
            if method == "minmax":
                continue
            if usable and reuse.settings.method == method:
                score_of(method, reuse, reuse_measured)
            else:
                score_of(method, calibrated_with(method, {**minmax, **ranges[method]}))
        per_tensor = _per_tensor_choice(histograms, ranges, recipe.activation_type)
        best_method = best_of(scores)
        if len(set(per_tensor.values())) > 1:
            mixed = {**minmax, **{t: ranges[m][t] for t, m in per_tensor.items()}}
            score_of("per_tensor", calibrated_with(best_method, mixed))
        chosen = best_method
        if "per_tensor" in scores and ptq_better(scores["per_tensor"], scores[best_method],
                                                 status_quo=False):
            chosen = "per_tensor"
    except BaseException:
        for c in ours:
            c.close()
        raise
    calibrated, model = candidates[chosen]
    for c in ours:
        if c is not calibrated:
            c.close()
    log.info("calibration choice: %s (%s)", chosen, ", ".join(
        f"{k} {s.agreement:.4f}/{s.error:.3g}" for k, s in scores.items()))
    if hasattr(meter, "samples"):      # an AgreementMeter: accuracy_aware can reuse this
        calibrated.remember(exclude_nodes, meter.samples, model, scores[chosen])
    return CalibrationChoice(calibrated, chosen, scores, per_tensor, model)


def _digest(model: bytes) -> str:
    import hashlib
    return hashlib.blake2b(model, digest_size=16).hexdigest()


def _per_tensor_choice(histograms: Mapping[str, Any],
                       ranges: Mapping[str, Mapping[str, tuple[float, float]]],
                       activation_type: str) -> dict[str, str]:
    """tensor -> the method whose range quantizes it with the lowest error."""
    order = list(ranges)
    choice = {}
    for t, h in histograms.items():
        errors = [h.error(*ranges[m][t], activation_type) for m in order]
        # Ties (e.g. a tensor every method ranges alike) go to the first method (minmax).
        choice[t] = order[int(np.argmin(errors))]
    return choice


def fake_quant(x: np.ndarray, low: float, high: float, activation_type: str) -> np.ndarray:
    """x through the asymmetric activation quantizer onnxruntime builds from [low, high]."""
    qmin, qmax = (0, 255) if activation_type == "uint8" else (-128, 127)
    low, high = min(float(np.min(low)), 0.0), max(float(np.max(high)), 0.0)
    scale = (high - low) / (qmax - qmin) or 1.0
    zero = np.round(qmin - low / scale)
    q = np.clip(np.round(x * (1.0 / scale)) + zero, qmin, qmax)   # keeps x's float type
    return (q - zero) * scale


def prepare_calibrated(float_model: bytes, calibration: Mapping[str, np.ndarray],
                       recipe: Recipe, settings: CalibrationSettings, target,
                       exclude_nodes: Sequence[str] = (), *, equalization: bool = True,
                       choice: bool = True, outputs: bool = True, smoothing: bool = True,
                       metric=None
                       ) -> tuple[Calibrated, tuple[dict[str, Any], ...]]:
    """The Calibrated for the accuracy-aware pass and the records of the methods tried.

    Plain int8 first; when it misses `target.min_agreement`, float model outputs
    (`CalibrationSettings.float_outputs`: the last layer still computes in int8), activation
    smoothing of MatMul/Gemm inputs with outlier channels (smoothing.py), cross-layer
    equalization and then the calibration choice, each kept only when the all-int8 score is
    strictly better
    (records as in `accuracy_aware.methods`). The caller owns (closes) the result, whose
    `reference_bytes` is `float_model` (the equalized model is not what is compared against)
    and which remembers its all-int8 model and score (`Calibrated.measured`). `metric`: the
    task's agreement (AgreementMeter), for detectors the detection agreement.
    """
    from .selection import ptq_better as _better
    from .scoring import AgreementMeter

    meter = AgreementMeter("onnxruntime", float_model,
                           {n: a[:target.samples] for n, a in calibration.items()},
                           metric=metric)
    current = Calibrated(float_model, calibration, settings)
    records: list[dict[str, Any]] = []

    def measured(c: Calibrated) -> tuple[bytes, Any]:
        c.reference_bytes = float_model
        model = c.quantize(recipe, exclude_nodes)
        result = meter(model)
        c.remember(exclude_nodes, meter.samples, model, result)
        return model, result

    try:
        best_model, best = measured(current)
        if best.agreement >= target.min_agreement:
            return current, ()
        if outputs and not settings.float_outputs:
            # Same ranges, no recalibration: only the outputs' requantization goes.
            floated = replace(settings, float_outputs=True)
            trial = Calibrated.with_ranges(current.model_bytes, calibration, floated,
                                           current.ranges())
            # What trial.quantize would give (same graph and ranges, output Q/DQ removed),
            # without another run of onnxruntime's quantizer (~3 s on a MobileNetV2).
            model = float_graph_outputs(best_model)
            trial.reference_bytes = float_model
            after = meter(model)
            trial.remember(exclude_nodes, meter.samples, model, after)
            kept = _better(after, best)
            records.append(_record("float_outputs", best, after, kept, {}))
            if kept:
                current.close()
                current, best_model, best, settings = trial, model, after, floated
            else:
                trial.close()
        if smoothing:
            stays_float = set(exclude_nodes) | set(recipe_float_nodes(float_model, recipe))
            current, best_model, best = _try_smoothing(current, (best_model, best), calibration,
                                                       settings, measured, records, stays_float)
        # The model before equalization stays open when equalization is kept: the
        # calibration choice then runs on both, and the better complete pipeline wins
        # (the methods interact: equalization moves the ranges the choice picks from).
        unequalized: tuple[Calibrated, bytes, Any] | None = None
        if equalization:
            from .cle import equalize
            exact = equalize(current.model_bytes)
            relaxed = equalize(current.model_bytes, relax_clips=True)
            variants = [("cross_layer_equalization", exact)]
            if len(relaxed.pairs) > len(exact.pairs):   # ReLU6 pairs: measured, not exact
                variants.append(("cross_layer_equalization_relu6_as_relu", relaxed))
            start = best
            for name, equalized in variants:
                if not equalized.pairs:
                    continue
                if name.endswith("relu6_as_relu"):
                    # Not exact: when the float rewrite alone already scores significantly
                    # below the int8 model in hand, its int8 model cannot beat it. One float
                    # run instead of a calibration, a quantization and a run (8 s of the
                    # pass on a 224x224 MobileNetV2, where the float rewrite agreed 0.82).
                    alone = meter(equalized.model_bytes)
                    if _better(best, alone):
                        records.append({
                            "method": name, "kept": False, **equalized.to_record(),
                            "skipped": f"ReLU6 -> ReLU alone, in float, scores below the "
                                       f"int8 model in hand (agreement {alone.agreement:.4f} "
                                       f"vs {best.agreement:.4f}, divergence "
                                       f"{alone.divergence:.4g} vs {best.divergence:.4g})"})
                        continue
                trial = Calibrated(equalized.model_bytes, calibration, settings)
                model, after = measured(trial)
                kept = _better(after, best)
                records.append(_record(name, start, after, kept, equalized.to_record()))
                if kept:
                    if records[:-1] and records[-2]["kept"] and \
                            records[-2]["method"].startswith("cross_layer_equalization"):
                        records[-2]["kept"] = False      # superseded by this variant
                    if unequalized is None:
                        unequalized = (current, best_model, best)
                    else:
                        current.close()
                    current, best_model, best = trial, model, after
                else:
                    trial.close()
        if choice and best.agreement < target.min_agreement:
            current, best, branch_records = _choose_on_branches(
                float_model, calibration, recipe, meter, settings, exclude_nodes,
                (current, best_model, best), unequalized)
            unequalized = None          # closed or returned by _choose_on_branches
            if branch_records[-1].get("branch") == "without equalization":
                for r in records:       # the pipeline without equalization won
                    if r["method"].startswith("cross_layer_equalization") and r["kept"]:
                        r.update(kept=False, superseded_by="calibration choice without "
                                 "equalization scored better (selection.ptq_better)")
            records.extend(branch_records)
        elif unequalized is not None:
            unequalized[0].close()
            unequalized = None
    except BaseException:
        current.close()
        if unequalized is not None:
            unequalized[0].close()
        raise
    return current, tuple(records)


def _try_smoothing(current: Calibrated, start: tuple[bytes, Any],
                   calibration: Mapping[str, np.ndarray], settings: CalibrationSettings,
                   measured, records: list, float_nodes: set[str]
                   ) -> tuple[Calibrated, bytes, Any]:
    """Activation smoothing at each strength of smoothing.ALPHAS; the better strength
    (lower divergence: alternatives of equal cost) is kept when it beats `start` (the
    status quo, selection.ptq_better). Appends one record; returns what the pass goes on
    from (`current` closed if replaced)."""
    from .selection import ptq_better
    from .smoothing import ALPHAS, smooth_each
    best_model, best = start
    variants = smooth_each(current.model_bytes, calibration, ALPHAS, float_nodes=float_nodes)
    if not variants[0].tensors:     # the same tensors qualify at every strength
        records.append({"method": "activation_smoothing", "kept": False,
                        "skipped": variants[0].reason})
        return current, best_model, best
    trials = []         # (Smoothing, Calibrated, model, score)
    try:
        for smoothed in variants:
            trial = Calibrated(smoothed.model_bytes, calibration, settings)
            try:
                scored = measured(trial)
            except BaseException:
                trial.close()
                raise
            trials.append((smoothed, trial, *scored))
    except BaseException:
        for _, trial, _, _ in trials:
            trial.close()
        raise
    chosen = trials[0]
    for other in trials[1:]:
        if ptq_better(other[3], chosen[3], status_quo=False):
            chosen = other
    kept = ptq_better(chosen[3], best)
    details = {**chosen[0].to_record(), "alphas": {
        str(t[0].alpha): {"agreement": round(t[3].agreement, 6),
                          "error": float(f"{t[3].error:.4g}")} for t in trials}}
    records.append(_record("activation_smoothing", best, chosen[3], kept, details))
    for trial in trials:
        if not (kept and trial is chosen):
            trial[1].close()
    if not kept:
        return current, best_model, best
    current.close()
    return chosen[1], chosen[2], chosen[3]


def _choose_on_branches(float_model: bytes, calibration: Mapping[str, np.ndarray],
                        recipe: Recipe, meter, settings: CalibrationSettings,
                        exclude_nodes: Sequence[str], equalized: tuple,
                        unequalized: tuple | None) -> tuple[Calibrated, Any, list[dict]]:
    """The calibration choice on the current model and, when equalization was kept, on the
    model before it; (the winning Calibrated, its score, records). Every Calibrated given
    or made here that is not returned is closed. The winner is the best of the complete
    pipelines by selection.ptq_better; each branch's choice is kept only if it beats that
    branch's own start."""
    from .selection import ptq_better
    branches = [("with equalization" if unequalized else "", equalized)]
    if unequalized is not None:
        branches.append(("without equalization", unequalized))
    results = []     # (label, Calibrated, score, record)
    try:
        for label, (start_cal, start_model, start) in branches:
            picked = choose_calibration(start_cal.model_bytes, calibration, recipe, meter,
                                        settings, exclude_nodes=exclude_nodes,
                                        reuse=start_cal, reuse_measured=(start_model, start))
            picked.calibrated.reference_bytes = float_model
            after = picked.scores[picked.chosen]
            kept = ptq_better(after, start)
            record = _record("calibration_choice", start, after, kept, picked.to_record())
            if label:
                record["branch"] = label
            if kept:
                if picked.calibrated is not start_cal:
                    start_cal.close()
                results.append((label, picked.calibrated, after, record))
            else:
                if picked.calibrated is not start_cal:
                    picked.calibrated.close()
                results.append((label, start_cal, start, record))
    except BaseException:
        for _, c, _, _ in results:
            c.close()
        for _, (c, _, _) in branches[len(results):]:
            c.close()
        raise
    # Without equalization is the status quo: the equalized pipeline must be better.
    winner = results[-1]
    for other in results[:-1]:
        if ptq_better(other[2], winner[2]):
            winner = other
    records = []
    for result in results:
        if result is not winner:
            result[1].close()
            result[3]["kept"] = False
            result[3]["lost_to"] = winner[0] or "the other branch"
            records.append(result[3])
    records.append(winner[3])
    if len(results) > 1:
        log.info("calibration choice: pipeline %s kept (%s)", winner[0],
                 ", ".join(f"{label} {score.agreement:.4f}/{score.divergence:.4g}"
                           for label, _, score, _ in results))
    return winner[1], winner[2], records



def _record(method: str, before, after, kept: bool, details: Mapping[str, Any]) -> dict:
    from .selection import comparison_fields
    why = comparison_fields(after, before)
    log.info("accuracy-aware: %s: agreement %.4f -> %.4f, error %.3g -> %.3g (%s: %s)",
             method, before.agreement, after.agreement, before.error, after.error,
             "kept" if kept else "undone", why["decided_by"])
    return {"method": method, **details, "agreement_before": round(before.agreement, 6),
            "agreement_after": round(after.agreement, 6),
            "error_before": float(f"{before.error:.4g}"),
            "error_after": float(f"{after.error:.4g}"), "kept": kept, **why}
