"""The layer search of the accuracy-aware pass: which layers to keep float, and the result.

- `rank_layers`: each quantizable layer's sensitivity ("one_pass" from layer_noise.py,
  "isolated" or "leave_one_out": sensitivity.py's docstring says what each one sees);
- `keep_float_greedily`: keep layers float, most sensitive first, each only if it makes the
  mix strictly better, until the target is met or the budget of float layers is spent;
- `prune_float_layers`: once the target is met, try each kept layer back in int8, least
  sensitive first, and leave it int8 while the target (and MAX_ERROR_GIVEN_BACK) holds;
- `MixedPrecision`: the model to ship and the evidence for the manifest.

The search only sees a `measure(float nodes) -> (model, Score)` callable, so the TFLite path
(litert_int8.py) and the block search (block_search.py) share it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .quantize import Calibrated
from .recipes import Recipe
from .scoring import Score

if TYPE_CHECKING:       # the pass imports this module; the target is only read here
    from .sensitivity import AccuracyTarget

log = logging.getLogger(__name__)

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
