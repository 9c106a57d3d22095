"""Percentile bootstrap intervals for per-prompt metrics, plain and paired.

Every evaluation metric here is a mean over prompts of a per-prompt value (1 if refused, a rubric
score, a reply length, a win of 1 / tie 0.5 / loss 0). The interval resamples prompts with
replacement `resamples` times and takes the 2.5th and 97.5th percentiles of the resampled means
(Efron's percentile interval). For policy minus baseline on the same prompts, the prompt is resampled
as a unit, so each resample keeps both replies to a prompt together (a paired bootstrap): prompts that
are hard for both models do not widen the interval of the difference.

Resampling is seeded (numpy's PCG64), so the same values and seed give the same interval. With very
few prompts the percentile interval is too narrow; it is what the gates read, so report `n` with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from align.core.errors import AlignError


@dataclass(frozen=True)
class Interval:
    mean: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


def bootstrap_mean(values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Mean of `values` with a percentile bootstrap interval over its elements."""
    x = _as_array(values)
    means = _resampled_means(x, resamples, seed)
    return _interval(float(x.mean()), means, level, len(x))


def bootstrap_paired_difference(
    policy: Sequence[float],
    baseline: Sequence[float],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Mean of policy[i] - baseline[i] with an interval that resamples the pairs i together."""
    a, b = _as_array(policy), _as_array(baseline)
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs equal lengths, got {len(a)} and {len(b)}")
    diff = a - b
    return _interval(float(diff.mean()), _resampled_means(diff, resamples, seed), level, len(diff))


def _as_array(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise AlignError("a bootstrap interval needs at least one value (the prompt set is empty)")
    return x


def _resampled_means(x: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    if resamples < 1:
        raise AlignError(f"'bootstrap.resamples' must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    return x[idx].mean(axis=1)


def _interval(mean: float, means: np.ndarray, level: float, n: int) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), n)


@dataclass
class BootstrapSettings:
    """Percentile bootstrap over prompts."""

    resamples: int = 1000
    """Resamples per interval."""
    seed: int = 0
    """Seed of the resampling (same values and seed, same interval)."""
    level: float = 0.95
    """Coverage of the interval."""

    def __post_init__(self):
        if self.resamples < 1:
            raise AlignError(f"'bootstrap.resamples' must be >= 1, got {self.resamples}")
        if not 0 < self.level < 1:
            raise AlignError(f"'bootstrap.level' must be in (0, 1), got {self.level}")
