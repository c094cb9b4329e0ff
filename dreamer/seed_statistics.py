"""Figures over seeds: the interquartile mean with a bootstrap interval, and the
probability that one arm needs fewer real steps than another.

Few seeds (ten or so) and a run that never reaches the threshold make means and
medians fragile; the interquartile mean (the mean of the middle half, as in `rliable`)
keeps most of the data while ignoring the extremes. Intervals are percentile bootstraps
from `scipy.stats.bootstrap`, seeded so a report is reproducible.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

RESAMPLES = 5000


def interquartile_mean(values) -> float:
    """The mean of the middle 50% of ``values`` (a quarter trimmed from each end)."""
    return float(stats.trim_mean(np.asarray(values, dtype=np.float64), 0.25))


def iqm_with_interval(values, level: float = 0.95, seed: int = 0) -> tuple[float, list[float]]:
    """The interquartile mean of ``values`` and its percentile-bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values")
    if values.size == 1 or np.all(values == values[0]):
        return float(values[0]), [float(values[0]), float(values[0])]
    result = stats.bootstrap((values,), lambda sample, axis: stats.trim_mean(sample, 0.25, axis=axis),
                             confidence_level=level, n_resamples=RESAMPLES, method="percentile", rng=seed)
    interval = result.confidence_interval
    return interquartile_mean(values), [float(interval.low), float(interval.high)]


def probability_of_fewer(a, b) -> float:
    """P(X < Y) for X drawn from ``a`` and Y from ``b``, ties counting one half."""
    a, b = np.asarray(a, dtype=np.float64)[:, None], np.asarray(b, dtype=np.float64)[None, :]
    return float(np.mean((a < b) + 0.5 * (a == b)))


def probability_of_fewer_with_interval(a, b, level: float = 0.95, seed: int = 0) -> tuple[float, list[float]]:
    """`probability_of_fewer` and its percentile-bootstrap interval (each arm resampled on its own)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    point = probability_of_fewer(a, b)
    if a.size < 2 or b.size < 2:
        return point, [point, point]

    def statistic(x, y, axis):
        return np.mean((x[..., :, None] < y[..., None, :]) + 0.5 * (x[..., :, None] == y[..., None, :]), axis=(-2, -1))

    result = stats.bootstrap((a, b), statistic, confidence_level=level, n_resamples=RESAMPLES,
                             method="percentile", rng=seed)
    interval = result.confidence_interval
    return point, [float(interval.low), float(interval.high)]
