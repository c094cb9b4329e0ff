"""The evaluation protocol: one grid for every arm, the policy in force at each point,
and a threshold that counts only where it is seen to hold."""

from __future__ import annotations

import pytest

from policies.protocol import covers, grid, lost_after_reaching, on_grid, steps_to_threshold
from dreamer.seed_statistics import interquartile_mean, iqm_with_interval, probability_of_fewer


def curve(*returns, every=200) -> list[dict]:
    return [{"real_steps": i * every, "mean_return": value} for i, value in enumerate(returns)]


def test_the_grid_starts_at_zero_and_stops_at_the_budget():
    assert grid(1000, 200) == [0, 200, 400, 600, 800, 1000]
    assert grid(900, 200) == [0, 200, 400, 600, 800]
    with pytest.raises(ValueError):
        grid(1000, 0)


def test_each_grid_point_gets_the_policy_in_force_there():
    changes = [{"real_steps": 450, "mean_return": 1.0},   # in force for 450..699: grid point 600
               {"real_steps": 700, "mean_return": 2.0},   # 700..749: no grid point sees it
               {"real_steps": 750, "mean_return": 3.0}]   # 750..: grid points 800, 1000
    evaluations = on_grid(changes, budget=1000, every=200, random_return=-1.0)
    assert [e["real_steps"] for e in evaluations] == [0, 200, 400, 600, 800, 1000]
    assert [e["mean_return"] for e in evaluations] == [-1.0, -1.0, -1.0, 1.0, 3.0, 3.0]


def test_a_policy_that_changes_exactly_at_a_grid_point_is_the_one_in_force_there():
    assert [e["mean_return"] for e in on_grid([{"real_steps": 200, "mean_return": 5.0}], 400, 200, 0.0)] == [0.0, 5.0, 5.0]


def test_covers_says_whether_a_grid_point_sees_a_policy():
    assert covers(450, 700, 200)       # 600
    assert not covers(700, 750, 200)
    assert covers(800, 801, 200)       # the start itself
    assert not covers(801, 1000, 200)


def test_steps_to_threshold_needs_five_later_evaluations_and_twice_the_steps():
    # Holds from 400 with 8 later points up to 2000: counts.
    assert steps_to_threshold(curve(-9, -9, 1, 1, 1, 1, 1, 1, 1, 1, 1), 0.0) == 400
    # Crosses at the very last evaluation: nothing shows that it holds.
    assert steps_to_threshold(curve(-9, -9, -9, -9, 1), 0.0) is None
    # Five later evaluations, but the run ends before twice the crossing's steps.
    assert steps_to_threshold(curve(*([-9] * 10), 1, 1, 1, 1, 1, 1), 0.0) is None
    # Reached, lost, reached again: counts from the last time it was reached.
    assert steps_to_threshold(curve(-9, 1, -9, 1, 1, 1, 1, 1, 1, 1), 0.0) == 600
    assert steps_to_threshold(curve(1, 1, 1), None) is None


def test_losing_the_threshold_after_reaching_it_is_reported():
    assert lost_after_reaching(curve(-9, 1, -9, 1), 0.0)
    assert not lost_after_reaching(curve(-9, -9, 1, 1), 0.0)
    assert not lost_after_reaching(curve(-9, -9), 0.0)


def test_the_interquartile_mean_ignores_the_extreme_quarters():
    assert interquartile_mean([0, 10, 10, 10000]) == pytest.approx(10.0)
    value, (low, high) = iqm_with_interval([600, 800, 1000, 1200, 2200, 400, 600, 3100, 900, 1000])
    assert low <= value <= high
    assert iqm_with_interval([7, 7, 7]) == (7.0, [7.0, 7.0])


def test_the_probability_of_needing_fewer_steps_counts_pairs():
    assert probability_of_fewer([1, 2], [3, 4]) == 1.0
    assert probability_of_fewer([3, 4], [1, 2]) == 0.0
    assert probability_of_fewer([1, 3], [2, 3]) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
