"""The noise-aware choice between all-int8 candidates (converters/int8/selection.py): an
agreement difference within its paired standard error is decided by a significantly lower
divergence, a significant one by agreement, and within the noise of both the status quo
stays; the Score's divergence and hits are what they say."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgepack.converters.int8.selection import (AGREEMENT_SE, best_of,
                                                divergence_difference, paired_difference,
                                                ptq_better)
from edgepack.converters.int8.scoring import Score, mean_kl, score


def _score(hits: np.ndarray, divergence: float, error: float = 0.1, spread: float = 0.5,
           seed: int = 0) -> Score:
    """A Score with per-sample divergences around `divergence` (relative spread)."""
    rng = np.random.default_rng(seed)
    kl = divergence * (1.0 + spread * rng.standard_normal(len(hits)))
    return Score(float(np.mean(hits)), error, float(np.mean(kl)), hits.astype(np.float64), kl)


def _hits(n: int, wrong: list[int]) -> np.ndarray:
    h = np.ones(n)
    h[wrong] = 0
    return h


def test_paired_standard_error_is_that_of_the_per_sample_difference():
    a, b = _hits(256, [0, 1, 2]), _hits(256, [3, 4, 5, 6, 7])
    diff, se = paired_difference(_score(a, 0.0), _score(b, 0.0))
    d = a - b
    assert diff == pytest.approx(2 / 256)
    assert se == pytest.approx(np.std(d, ddof=1) / math.sqrt(256))
    # identical hits: no noise at all, and no difference
    assert paired_difference(_score(a, 0.0), _score(a, 1.0)) == (0.0, 0.0)


def test_agreements_within_the_noise_are_decided_by_a_significantly_lower_divergence():
    # a: 3 samples more right than b, 9 discordant samples: 3/256 = 0.0117 is within
    # 2 SE (~0.023), so b's much lower divergence wins although a agrees more
    a = _score(_hits(256, [0, 1, 2]), divergence=0.020, seed=1)
    b = _score(_hits(256, [3, 4, 5, 6, 7, 8]), divergence=0.012, seed=2)
    diff, se = paired_difference(a, b)
    assert 0 < diff < AGREEMENT_SE * se
    kl, kl_se = divergence_difference(b, a)
    assert kl < -AGREEMENT_SE * kl_se
    assert ptq_better(b, a) and not ptq_better(a, b)
    assert best_of({"a": a, "b": b}) == "b" and best_of({"b": b, "a": a}) == "b"
    # the old rule (agreement first) would have taken a
    assert max((a, b), key=lambda s: (s.agreement, -s.error)) is a


def test_within_the_noise_of_both_the_status_quo_stays():
    # 1 % lower mean divergence with a 50 % per-sample spread: not significant
    a = _score(_hits(256, [0, 1, 2]), divergence=0.0099, seed=3)
    b = _score(_hits(256, [3, 4, 5, 6]), divergence=0.0100, seed=4)
    kl, kl_se = divergence_difference(a, b)
    assert kl < 0 and abs(kl) < AGREEMENT_SE * kl_se
    assert not ptq_better(a, b) and not ptq_better(b, a)
    # between alternatives of equal cost (calibration methods) there is no status quo:
    # the lower divergence is the best estimate
    assert ptq_better(a, b, status_quo=False) and not ptq_better(b, a, status_quo=False)
    assert best_of({"b": b, "a": a}) == "a" and best_of({"a": a, "b": b}) == "a"


def test_a_significant_agreement_difference_wins_over_divergence():
    a = _score(_hits(256, []), divergence=0.020)
    b = _score(_hits(256, list(range(30))), divergence=0.001)
    diff, se = paired_difference(a, b)
    assert diff > AGREEMENT_SE * se
    assert ptq_better(a, b) and not ptq_better(b, a)


def test_without_per_sample_hits_agreement_then_error_decides():
    a, b = Score(0.9, 0.2), Score(0.9, 0.1)
    assert ptq_better(b, a) and not ptq_better(a, b)
    assert ptq_better(Score(0.91, 0.5), b)


def test_score_gives_hits_and_softmax_kl_of_the_first_class_output():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 6))
    got = ref + 0.3 * rng.standard_normal((50, 6))
    s = score([ref], [got])
    np.testing.assert_array_equal(s.hits, (ref.argmax(1) == got.argmax(1)).astype(float))
    assert s.divergences.shape == (50,) and s.divergence == pytest.approx(s.divergences.mean())
    assert s.agreement == pytest.approx(s.hits.mean())
    p = np.exp(ref) / np.exp(ref).sum(1, keepdims=True)
    q = np.exp(got) / np.exp(got).sum(1, keepdims=True)
    assert s.divergence == pytest.approx(np.mean(np.sum(p * np.log(p / q), 1)))
    assert mean_kl(p, q) == pytest.approx(s.divergence)     # probabilities taken as given
    assert score([ref], [ref]).divergence == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(score([ref[:, :1]], [got[:, :1]]).divergence)   # no class output
