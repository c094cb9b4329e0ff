"""Means with bootstrap confidence intervals, for per-episode figures."""

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
