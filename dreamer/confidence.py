"""Means and ratios with bootstrap confidence intervals, for per-episode figures."""

from __future__ import annotations

import numpy as np


def mean_with_interval(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, list[float]]:
    """The mean of ``values`` and a percentile-bootstrap interval around it.

    Episodes are few (ten or so), so the interval comes from resampling them rather
    than from a normal approximation. One value gives a zero-width interval.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to average")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(values.mean()), [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def ratio_with_interval(numerators, denominators, level: float = 0.95, resamples: int = 2000,
                        seed: int = 0) -> tuple[float, list[float]]:
    """``sum(numerators) / sum(denominators)`` over paired values, with a percentile-bootstrap
    interval (pairs resampled together). Unlike a mean of per-pair ratios, one pair with
    a denominator near zero cannot dominate it."""
    numerators = np.asarray(numerators, dtype=np.float64)
    denominators = np.asarray(denominators, dtype=np.float64)
    if numerators.size == 0 or numerators.shape != denominators.shape:
        raise ValueError("need one denominator per numerator, and at least one pair")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, numerators.size, (resamples, numerators.size))
    ratios = numerators[index].sum(axis=1) / np.maximum(denominators[index].sum(axis=1), 1e-12)
    tail = 100 * (1 - level) / 2
    ratio = numerators.sum() / max(denominators.sum(), 1e-12)
    return float(ratio), [float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))]
