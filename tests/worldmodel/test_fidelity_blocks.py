"""`fidelity_report` measures held-out windows block by block: the blocks' summed errors
are the errors over all windows, and a held-out set that fits in one block is measured
exactly as all its windows at once."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tasks.splits import fitting_episodes, heldout_episodes
from tasks.traces import read_traces
from worldmodel.fidelity import (
    FidelityConfig,
    fidelity_metrics,
    fidelity_report,
    model_predictions,
    observation_scale,
    open_loop_windows,
    rollouts_per_block,
)
from worldmodel.saving import load


@pytest.fixture(scope="module")
def pendulum_split(pendulum_traces):
    episodes = read_traces(pendulum_traces).episodes
    return fitting_episodes(episodes, 0)[0], heldout_episodes(episodes, 0)


def test_a_held_out_set_in_one_block_is_measured_as_all_its_windows_at_once(pendulum_run, pendulum_split):
    train, heldout = pendulum_split
    model = load(pendulum_run)
    config = FidelityConfig(horizon=5, start_every=3)

    report = fidelity_report(model, heldout, train, config, jax.random.key(4))

    windows = open_loop_windows(heldout, 5, 3)
    assert rollouts_per_block(heldout, 5, 0, config.block_megabytes, len(windows.valid)) == len(windows.valid)
    whole = fidelity_metrics(model_predictions(model, windows, jax.random.key(4)), windows,
                             observation_scale(train), config.min_samples, terminates=False)
    for measure in ("obs_rmse", "reward_mae", "return_error", "samples"):
        np.testing.assert_allclose(report["predictors"]["model"][measure], whole[measure], rtol=1e-12)
    assert report["obs_units"] == "standard deviations of the training split"


def test_blocks_add_up_to_the_errors_over_every_window(pendulum_run, pendulum_split):
    train, heldout = pendulum_split
    model = load(pendulum_run)
    whole = fidelity_report(model, heldout, train, FidelityConfig(horizon=5, start_every=3), jax.random.key(0))
    # Per window: 6 real observations of 3 float32 values, 5 predicted ones with their float64
    # errors. Blocks of 7 windows, the last padded with windows that count for nothing.
    assert heldout.observations.dtype == np.float32
    config = FidelityConfig(horizon=5, start_every=3, block_megabytes=7 * (6 * 3 * 4 + 5 * 3 * 12) / 2**20)
    assert rollouts_per_block(heldout, 5, 0, config.block_megabytes, whole["rollouts"]) == 7
    assert whole["rollouts"] % 7

    blocks = fidelity_report(model, heldout, train, config, jax.random.key(0))

    assert blocks["rollouts"] == whole["rollouts"]
    for name in ("nothing_changes", "linear"):  # predictors that draw nothing
        for measure in ("obs_rmse", "reward_mae", "return_error", "samples"):
            np.testing.assert_allclose(blocks["predictors"][name][measure], whole["predictors"][name][measure],
                                       rtol=1e-9, err_msg=f"{name} {measure}")
    assert blocks["predictors"]["model"]["samples"] == whole["predictors"]["model"]["samples"]
    assert all(np.isfinite(blocks["predictors"]["model"]["obs_rmse"]))
