"""Choosing between all-int8 candidates (PTQ methods) without chasing measurement noise.

Top-1 agreement on a few hundred calibration samples is a count: at 0.95 on 256 samples
its binomial standard error is 0.013, larger than the gap between most PTQ candidates
(float outputs, equalization, calibration methods). Ranking candidates by it alone picks
whichever one happened to flip a few more of *these* samples: on the issue-18 stand-in two
candidates reached 0.955-0.956 held out, but the pass kept one at 0.948.

`ptq_better(a, b)` decides as a statistician would, with `b` (the status quo: the model
without the method, or the first candidate) kept unless `a` is significantly better:

1. the difference in agreement is measured on the same samples, so its noise is that of
   the *paired* difference: per-sample hits a_i, b_i, d_i = a_i - b_i, standard error
   sd(d) / sqrt(n). Samples both candidates get right (or wrong) add no noise; only the
   ones they disagree on do. A difference larger than `AGREEMENT_SE` standard errors is
   taken as real: the higher agreement wins;
2. otherwise the candidates are told apart by a continuous score of the same outputs that
   has far less variance than a count: the KL divergence of the float model's softmax from
   the candidate's (`Score.divergences`, per sample), which sees how near each ambiguous
   sample is to flipping, not only whether it flipped. Its paired difference must also
   exceed `AGREEMENT_SE` of its standard errors: the lower divergence then wins;
3. within the noise of both, `a` is not better: the method is not kept (a change to the
   model has to earn its place; among equals the simpler pipeline stays). Between
   alternatives of equal cost (MinMax, Percentile, Entropy, the per-tensor mix: one of
   them is used whatever happens) there is no status quo, and the lower divergence, the
   lower-variance estimate, picks (`best_of`).

For outputs that are not class scores (no divergence) the normalized output error decides
in step 2, and without per-sample hits (an aggregate task metric such as detection
agreement) higher agreement, or as high with lower error.

The held-out split is never looked at: this uses only the calibration measurements.
The accuracy-aware layer search (layer_search.py) keeps its strict rule (a kept-float
layer must raise agreement, or keep it and lower the error): there a float layer costs
speed, and a layer that only moves noise is not worth it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

#: A difference in agreement counts as real beyond this many standard errors of the
#: paired difference (two: the conventional 95 % level); within it, divergence decides.
AGREEMENT_SE = 2.0


def _paired(x: np.ndarray | None, y: np.ndarray | None) -> tuple[float, float] | None:
    if x is None or y is None or len(x) != len(y) or len(x) < 2:
        return None
    d = np.asarray(x, np.float64) - np.asarray(y, np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def paired_difference(a: Any, b: Any) -> tuple[float, float] | None:
    """(agreement of a - agreement of b, standard error of that difference) from their
    per-sample hits on the same samples; None when either score has no per-sample hits."""
    return _paired(a.hits, b.hits)


def divergence_difference(a: Any, b: Any) -> tuple[float, float] | None:
    """(divergence of a - divergence of b, its paired standard error), or None."""
    return _paired(a.divergences, b.divergences)


def _significant(paired: tuple[float, float] | None, se: float) -> bool:
    return paired is not None and paired[0] != 0.0 and abs(paired[0]) > se * paired[1]


def ptq_better(a: Any, b: Any, se: float = AGREEMENT_SE, status_quo: bool = True) -> bool:
    """True when candidate score `a` is better than `b` (module docstring): a significant
    agreement difference decides; within its noise, with `status_quo` (b is the model
    without the method) a significantly lower divergence, else False; without
    `status_quo` (a and b are alternatives of equal cost, as calibration methods are) the
    lower divergence, the best estimate there is."""
    paired = paired_difference(a, b)
    if paired is None:
        return (a.agreement, -a.error) > (b.agreement, -b.error)
    if _significant(paired, se):
        return paired[0] > 0
    kl = divergence_difference(a, b)
    if kl is not None:
        return kl[0] < 0 and (not status_quo or _significant(kl, se))
    return a.error < b.error      # no class scores: the output error


def best_of(scores: dict[str, Any], se: float = AGREEMENT_SE) -> str:
    """The key of the best of `scores`, alternatives of equal cost (calibration methods):
    a significantly higher agreement, else the lowest divergence (`ptq_better` without
    a status quo), in one pass (the first of equals wins)."""
    best = None
    for name, s in scores.items():
        if best is None or ptq_better(s, scores[best], se, status_quo=False):
            best = name
    if best is None:
        raise ValueError("no candidate to choose from")
    return best


def describe(a: Any, b: Any, se: float = AGREEMENT_SE) -> str:
    """Why `ptq_better(a, b)` decided as it did, for the log and the manifest."""
    paired = paired_difference(a, b)
    if paired is None:
        return "agreement, then output error (no per-sample hits)"
    diff, error = paired
    if _significant(paired, se):
        return f"agreement differs by {diff:+.4f} (> {se:g} x SE {error:.4f})"
    head = f"agreement within noise ({diff:+.4f}, SE {error:.4f})"
    kl = divergence_difference(a, b)
    if kl is None:
        return f"{head}: output error {a.error:.4g} vs {b.error:.4g}"
    verdict = "significant" if _significant(kl, se) else "within noise: no change"
    return (f"{head}; divergence {a.divergence:.4g} vs {b.divergence:.4g} "
            f"({kl[0]:+.3g}, SE {kl[1]:.3g}: {verdict})")


def comparison_fields(after: Any, before: Any) -> dict[str, Any]:
    """The manifest fields of one PTQ method's keep/undo decision: why (`decided_by`) and,
    when the outputs are class scores, the divergences compared."""
    fields: dict[str, Any] = {"decided_by": describe(after, before)}
    if np.isfinite(before.divergence) and np.isfinite(after.divergence):
        fields.update(divergence_before=float(f"{before.divergence:.4g}"),
                      divergence_after=float(f"{after.divergence:.4g}"))
    return fields


# --- methods fitted on calibration samples ----------------------------------------------
#
# A method that *fits* something to the calibration samples (bias correction's means,
# learned rounding, block reconstruction: thousands of rounding choices) can look better
# on those samples and worse on any others: session 6's activation equalization reached
# 0.961 on the calibration set and its float function moved by up to 3.1 logits on new
# data, and the significance rule above, fed the samples it was fitted on, kept it. So a
# fitted method is fitted on one part of the calibration samples and judged, with
# `ptq_better` against the model without it, on the other part only.

#: The share of the calibration samples a fitted method may fit; the rest decide.
FIT_FRACTION = 2 / 3
#: Fewer held-back samples than this cannot judge a method: it is not tried.
MIN_DECIDE = 16


@dataclass(frozen=True)
class FittedSplit:
    """Calibration samples split for a fitted method: `fit` (what it may fit) and
    `decide` (what judges it; never seen by the fit)."""

    fit: dict[str, np.ndarray]
    decide: dict[str, np.ndarray]

    @property
    def counts(self) -> tuple[int, int]:
        return (min(len(a) for a in self.fit.values()),
                min(len(a) for a in self.decide.values()))


def fitted_split(samples: Mapping[str, np.ndarray], fraction: float = FIT_FRACTION,
                 minimum: int = MIN_DECIDE) -> FittedSplit | None:
    """The first `fraction` of the samples to fit, the rest to decide; None when fewer
    than `minimum` samples would be left to decide (the method is then not tried)."""
    count = min(len(a) for a in samples.values())
    fit = int(round(count * fraction))
    if count - fit < minimum or fit < 1:
        return None
    return FittedSplit({n: a[:fit] for n, a in samples.items()},
                       {n: a[fit:count] for n, a in samples.items()})


def fitted_better(after_decide: Any, before_decide: Any, se: float = AGREEMENT_SE) -> bool:
    """Keep a fitted method: `ptq_better` (with the status quo, the model without it)
    on the held-back samples only. The scores given must be on `FittedSplit.decide`."""
    return ptq_better(after_decide, before_decide, se, status_quo=True)


def fitted_fields(after_decide: Any, before_decide: Any, split: FittedSplit,
                  after_fit: Any | None = None, before_fit: Any | None = None
                  ) -> dict[str, Any]:
    """Manifest fields of a fitted method's decision: the held-back comparison that
    decided, and (for the record) the agreement on the samples it was fitted on."""
    fit, decide = split.counts
    fields: dict[str, Any] = {
        "decided_on": f"{decide} held-back calibration samples (fitted on {fit})",
        "decide_agreement_before": round(before_decide.agreement, 6),
        "decide_agreement_after": round(after_decide.agreement, 6),
        **comparison_fields(after_decide, before_decide)}
    if after_fit is not None and before_fit is not None:
        fields.update(fit_agreement_before=round(before_fit.agreement, 6),
                      fit_agreement_after=round(after_fit.agreement, 6))
        if np.isfinite(before_fit.divergence) and np.isfinite(after_fit.divergence):
            fields.update(fit_divergence_before=float(f"{before_fit.divergence:.4g}"),
                          fit_divergence_after=float(f"{after_fit.divergence:.4g}"))
    return fields


def fitted_record(method: str, details: Mapping[str, Any], before: Any, after: Any,
                  kept: bool, decision: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest record of a fitted method: what it did (`details`), the agreement and
    error on all calibration samples before and after (`before`/`after`: Scores), whether
    it was kept, and the held-back comparison that decided (`decision`: `fitted_fields`)."""
    return {"method": method, **details,
            "agreement_before": round(before.agreement, 6),
            "agreement_after": round(after.agreement, 6),
            "error_before": float(f"{before.error:.4g}"),
            "error_after": float(f"{after.error:.4g}"), "kept": kept, **decision}
