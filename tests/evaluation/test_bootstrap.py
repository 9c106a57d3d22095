"""Percentile bootstrap: hand-worked intervals on small arrays, pairing, seeding, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from align.core.errors import AlignError
from align.evaluation.bootstrap import bootstrap_mean, bootstrap_paired_difference


def test_constant_data_has_a_zero_width_interval():
    ci = bootstrap_mean([0.25] * 12)
    assert (ci.mean, ci.ci_low, ci.ci_high) == pytest.approx((0.25, 0.25, 0.25)) and ci.n == 12


def test_three_values_interval_is_min_to_max():
    """n=3: a resample is all-1s (or all-3s) with probability 1/27 = 3.7% > 2.5%, so the 2.5th and
    97.5th percentiles of the resampled means are exactly the smallest and largest value."""
    ci = bootstrap_mean([1.0, 2.0, 3.0], resamples=10_000)
    assert ci.mean == pytest.approx(2.0)
    assert (ci.ci_low, ci.ci_high) == (1.0, 3.0)


def test_one_in_ten_interval_by_hand():
    """Nine 0s and one 1: the resampled mean is k/10 with k ~ Binomial(10, 0.1).
    P(k = 0) = 0.349 > 2.5%, so the low end is 0; P(k <= 2) = 0.930 and P(k <= 3) = 0.987, so the
    97.5th percentile is 0.3."""
    ci = bootstrap_mean([0.0] * 9 + [1.0], resamples=10_000)
    assert ci.mean == pytest.approx(0.1)
    assert ci.ci_low == 0.0 and ci.ci_high == pytest.approx(0.3)


def test_paired_difference_removes_the_between_prompt_spread():
    """The policy beats the baseline by exactly 0.1 on every prompt, while prompts differ widely: the
    paired interval is [0.1, 0.1]; the two unpaired intervals overlap almost entirely."""
    baseline = np.linspace(0.0, 0.8, 20)
    policy = baseline + 0.1
    diff = bootstrap_paired_difference(policy, baseline)
    assert (diff.mean, diff.ci_low, diff.ci_high) == pytest.approx((0.1, 0.1, 0.1))
    p, b = bootstrap_mean(policy), bootstrap_mean(baseline)
    assert p.ci_low < b.ci_high  # unpaired, the gain would not be resolved


def test_paired_difference_of_rates():
    """Refusals on 4 prompts: policy refuses 3, baseline 1; the difference is +0.5 with an interval
    that contains it and stays within the possible range [-1, 1]."""
    diff = bootstrap_paired_difference([1, 1, 1, 0], [0, 1, 0, 0], resamples=2000)
    assert diff.mean == pytest.approx(0.5)
    assert -1 <= diff.ci_low <= 0.5 <= diff.ci_high <= 1
    # Per-prompt differences are {1, 0, 1, 0}: a resample mean can only be 0, .25, .5, .75 or 1.
    assert diff.ci_low in (0.0, 0.25) and diff.ci_high in (0.75, 1.0)


def test_seeded_and_configurable():
    values = np.random.default_rng(3).normal(size=30)
    assert bootstrap_mean(values, seed=5) == bootstrap_mean(values, seed=5)
    assert bootstrap_mean(values, seed=5) != bootstrap_mean(values, seed=6)
    narrow, wide = bootstrap_mean(values, level=0.5), bootstrap_mean(values, level=0.99)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_interval_covers_the_true_rate_about_95_percent_of_the_time():
    """Property: over 300 samples of 80 Bernoulli(0.3) draws, the interval covers 0.3 in 90-99% of them."""
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(300):
        ci = bootstrap_mean(rng.random(80) < 0.3, resamples=400, seed=i)
        covered += ci.ci_low <= 0.3 <= ci.ci_high
    assert 0.90 <= covered / 300 <= 0.99


def test_bad_input():
    with pytest.raises(AlignError, match="empty"):
        bootstrap_mean([])
    with pytest.raises(AlignError, match="resamples"):
        bootstrap_mean([1.0], resamples=0)
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap_paired_difference([1.0, 2.0], [1.0])
