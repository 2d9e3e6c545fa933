"""Fitted methods are judged on calibration samples they were not fitted on
(selection.FittedSplit / fitted_better): a planted overfit rewrite, exact on the samples it
was fitted on and worse on every other, is rejected, although the significance rule fed
the fit samples would keep it; a rewrite that is better everywhere is kept."""
from __future__ import annotations

import numpy as np
from edgepack.converters.int8.selection import (MIN_DECIDE, fitted_better, fitted_fields,
                                                fitted_split, ptq_better)
from edgepack.converters.int8.recipes import choose_recipe
from edgepack.converters.int8.scoring import score

RECIPE = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)


def _logits(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, 10)) * 2.0


def test_the_split_holds_back_the_last_third_and_refuses_too_few_samples():
    x = np.arange(300)[:, None].astype(np.float32)
    split = fitted_split({"x": x})
    assert split.counts == (200, 100)
    assert split.fit["x"][-1, 0] == 199 and split.decide["x"][0, 0] == 200
    assert fitted_split({"x": x[:3 * MIN_DECIDE]}).counts == (2 * MIN_DECIDE, MIN_DECIDE)
    assert fitted_split({"x": x[:3 * MIN_DECIDE - 3]}) is None


def test_a_planted_overfit_rewrite_is_rejected_on_the_held_back_samples():
    reference = _logits(300)
    split = fitted_split({"x": reference})
    fit, decide = split.counts
    rng = np.random.default_rng(1)
    status_quo = reference + rng.standard_normal(reference.shape) * 0.6
    # the rewrite memorized its fit samples (exact there) and is worse on all others
    overfit = np.concatenate([reference[:fit],
                              reference[fit:] + rng.standard_normal((decide, 10)) * 1.2])
    on_fit = [score([reference[:fit]], [m[:fit]]) for m in (overfit, status_quo)]
    on_decide = [score([reference[fit:]], [m[fit:]]) for m in (overfit, status_quo)]
    # judged on the samples it was fitted on, the noise-aware rule would keep it
    assert on_fit[0].agreement == 1.0 and ptq_better(on_fit[0], on_fit[1])
    assert not fitted_better(on_decide[0], on_decide[1])
    fields = fitted_fields(on_decide[0], on_decide[1], split, on_fit[0], on_fit[1])
    assert fields["decided_on"] == "100 held-back calibration samples (fitted on 200)"
    assert fields["fit_agreement_after"] == 1.0
    assert fields["decide_agreement_after"] < fields["decide_agreement_before"]


def test_a_rewrite_better_on_unseen_samples_too_is_kept():
    reference = _logits(300, seed=2)
    split = fitted_split({"x": reference})
    fit, _ = split.counts
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(reference.shape)
    status_quo, better = reference + 0.8 * noise, reference + 0.3 * noise
    after, before = (score([reference[fit:]], [m[fit:]]) for m in (better, status_quo))
    assert fitted_better(after, before)
    assert not fitted_better(before, after)


def test_the_accuracy_aware_pass_judges_bias_correction_on_held_back_samples(calib):
    from edgepack.converters.int8 import AccuracyTarget, Calibrated, accuracy_aware
    from int8_models import conv_net
    with Calibrated(conv_net(seed=0, outlier=30.0), {"x": calib}) as calibrated:
        mixed = accuracy_aware(calibrated, RECIPE, {"x": calib},
                               AccuracyTarget(0.999, max_float_layers=0))
    bias = next(m for m in mixed.to_record()["methods"] if m["method"] == "bias_correction")
    assert bias["decided_on"] == "67 held-back calibration samples (fitted on 133)"
    assert {"decide_agreement_before", "decide_agreement_after"} <= set(bias)
    if "agreement differs" in bias["decided_by"]:
        assert bias["kept"] is (bias["decide_agreement_after"] > bias["decide_agreement_before"])
    else:
        assert bias["kept"] is (": significant)" in bias["decided_by"] and
                                bias["divergence_after"] < bias["divergence_before"])


def test_without_enough_samples_to_hold_back_fitted_methods_are_not_tried(calib):
    from edgepack.converters.int8 import AccuracyTarget, Calibrated, accuracy_aware
    from int8_models import conv_net
    count = 40          # 27 to fit would leave 13 < MIN_DECIDE to judge
    with Calibrated(conv_net(seed=0, outlier=30.0), {"x": calib[:count]}) as calibrated:
        mixed = accuracy_aware(calibrated, RECIPE, {"x": calib[:count]},
                               AccuracyTarget(0.999, max_float_layers=0))
    assert mixed.to_record()["methods"] == []
