"""Bootstrap intervals of per-episode means and ratios."""

from __future__ import annotations

import numpy as np
import pytest

from dreamer.confidence import mean_with_interval, ratio_with_interval


def test_the_interval_surrounds_the_mean_and_narrows_with_more_episodes():
    rng = np.random.default_rng(0)
    few, many = rng.normal(5.0, 2.0, 10), rng.normal(5.0, 2.0, 1000)

    mean, (low, high) = mean_with_interval(few)
    mean_many, (low_many, high_many) = mean_with_interval(many)

    assert mean == pytest.approx(few.mean()) and low < mean < high
    assert high_many - low_many < (high - low) / 3
    assert low_many < 5.0 < high_many
    assert mean_with_interval([3.0]) == (3.0, [3.0, 3.0])


def test_a_ratio_of_sums_is_not_thrown_by_a_denominator_near_zero():
    gaps = np.array([10.0, 10.0, 10.0, 5.0])
    sizes = np.array([100.0, 100.0, 100.0, 0.1])  # one real return near zero

    ratio, (low, high) = ratio_with_interval(gaps, sizes)

    assert ratio == pytest.approx(35.0 / 300.1)
    assert low <= ratio <= high < 1.0  # the mean of per-episode ratios would be 12.6
    with pytest.raises(ValueError):
        ratio_with_interval([1.0, 2.0], [1.0])
