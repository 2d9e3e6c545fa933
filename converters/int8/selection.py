"""Choosing between all-int8 candidates (PTQ methods) without chasing measurement noise.

Top-1 agreement on a few hundred calibration samples is a count: at 0.95 on 256 samples
its binomial standard error is 0.013, larger than the gap between most PTQ candidates
(float outputs, equalization, calibration methods). Ranking candidates by it alone picks
whichever one happened to flip a few more of *these* samples: on the issue-18 stand-in two
candidates reached 0.955-0.956 held out, but the pass kept one at 0.948.

`ptq_better(a, b)` decides as a statistician would:

1. the difference in agreement is measured on the same samples, so its noise is that of
   the *paired* difference: per-sample hits a_i, b_i, d_i = a_i - b_i, standard error
   sd(d) / sqrt(n). Samples both candidates get right (or wrong) add no noise; only the
   ones they disagree on do;
2. a difference larger than `AGREEMENT_SE` standard errors is taken as real: the higher
   agreement wins;
3. otherwise the candidates are told apart by a continuous score of the same outputs that
   has far less variance than a count: the mean KL divergence of the float model's
   softmax from the candidate's (`Score.divergence`), which sees how near each ambiguous
   sample is to flipping, not only whether it flipped; for outputs that are not class
   scores (no divergence), the normalized output error.

The held-out split is never looked at: this uses only the calibration measurements.
The accuracy-aware layer search (sensitivity.py) keeps its strict rule (a kept-float
layer must raise agreement, or keep it and lower the error): there a float layer costs
speed, and a layer that only moves noise is not worth it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: A difference in agreement counts as real beyond this many standard errors of the
#: paired difference (two: the conventional 95 % level); within it, divergence decides.
AGREEMENT_SE = 2.0


def paired_difference(a: Any, b: Any) -> tuple[float, float] | None:
    """(agreement of a - agreement of b, standard error of that difference) from their
    per-sample hits on the same samples; None when either score has no per-sample hits."""
    if a.hits is None or b.hits is None or len(a.hits) != len(b.hits) or len(a.hits) < 2:
        return None
    d = np.asarray(a.hits, np.float64) - np.asarray(b.hits, np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def continuous(s: Any) -> float:
    """The low-variance score compared within the noise: divergence, else output error."""
    return s.divergence if np.isfinite(s.divergence) else s.error


def ptq_better(a: Any, b: Any, se: float = AGREEMENT_SE) -> bool:
    """True when candidate score `a` is better than `b` (module docstring): a significant
    agreement difference decides; within the noise, the lower divergence (or error) does.
    Without per-sample hits (an aggregate task metric), strictly higher agreement or, as
    high, lower error."""
    paired = paired_difference(a, b)
    if paired is None:
        return (a.agreement, -a.error) > (b.agreement, -b.error)
    diff, error = paired
    if diff != 0.0 and abs(diff) > se * error:
        return diff > 0
    if continuous(a) != continuous(b):
        return continuous(a) < continuous(b)
    return (a.agreement, -a.error) > (b.agreement, -b.error)


def best_of(scores: dict[str, Any], se: float = AGREEMENT_SE) -> str:
    """The key of the best score of `scores` by `ptq_better`, in one pass (the first of
    equals wins)."""
    best = None
    for name, s in scores.items():
        if best is None or ptq_better(s, scores[best], se):
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
    if diff != 0.0 and abs(diff) > se * error:
        return f"agreement differs by {diff:+.4f} (> {se:g} x SE {error:.4f})"
    kind = "divergence" if np.isfinite(a.divergence) and np.isfinite(b.divergence) \
        else "output error"
    return (f"agreement within noise ({diff:+.4f}, SE {error:.4f}): {kind} "
            f"{continuous(a):.4g} vs {continuous(b):.4g}")


def comparison_fields(after: Any, before: Any) -> dict[str, Any]:
    """The manifest fields of one PTQ method's keep/undo decision: why (`decided_by`) and,
    when the outputs are class scores, the divergences compared."""
    fields: dict[str, Any] = {"decided_by": describe(after, before)}
    if np.isfinite(before.divergence) and np.isfinite(after.divergence):
        fields.update(divergence_before=float(f"{before.divergence:.4g}"),
                      divergence_after=float(f"{after.divergence:.4g}"))
    return fields
