"""Confidence intervals by the bootstrap: resample the queries (or held-out clicks) with
replacement and read the spread of the mean.

A comparison of two models uses the *paired* bootstrap: both are scored on the same queries,
and each resample draws the same queries for both, so the interval is that of the difference
(much narrower than two separate intervals, which share the queries' own difficulty).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean and its bootstrap interval, over ``n`` values."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(values)
    picks = rng.integers(0, n, size=(resamples, n))
    return values[picks].mean(axis=1)


def bootstrap(
    values: np.ndarray, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> Estimate:
    """The mean of ``values`` with its percentile bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    means = _resampled_means(values, resamples, seed)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Estimate(float(values.mean()), float(low), float(high), len(values))


def paired_difference(
    candidate: np.ndarray,
    baseline: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Estimate:
    """The mean of ``candidate - baseline`` (per query, same queries) with its interval: when
    ``low > 0`` the candidate is better at that confidence."""
    candidate, baseline = np.asarray(candidate), np.asarray(baseline)
    if candidate.shape != baseline.shape:
        raise ValueError(f"not paired: {candidate.shape} vs {baseline.shape}")
    return bootstrap(candidate - baseline, resamples=resamples, level=level, seed=seed)
