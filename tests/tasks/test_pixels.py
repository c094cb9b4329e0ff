"""Camera-frame tasks: the classic-control environments seen through 64 x 64 renders,
with the environment's own rewards and terminations, stored losslessly in trace files."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.errors import InputError
from tasks.pixels import shrink_frame
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.traces import read_traces, write_traces
from worldmodel.ensemble import EnsembleConfig
from worldmodel.saving import build_model_for_spaces


class ReplayActions:
    """Acts with the actions of a recorded episode, step by step (one environment)."""

    def __init__(self, actions: np.ndarray):
        self.actions, self.step = actions, 0

    def __call__(self, observations, rng):
        action = self.actions[min(self.step, len(self.actions) - 1)]
        self.step += 1
        return action[None]


@pytest.mark.parametrize("name, vector_name", [("pendulum-pixels", "pendulum"), ("cartpole-pixels", "cartpole")])
def test_frames_replace_the_state_and_the_environment_still_scores(name, vector_name):
    pixels, vector = get_task(name), get_task(vector_name)
    assert pixels.observation_kind == "image" and pixels.horizon == vector.horizon
    assert pixels.observation_space.shape == (64, 64, 3) and pixels.observation_space.dtype == np.uint8
    seeds = reset_seeds(0, 1)
    seen = record_episodes(pixels, RandomPolicy(pixels.action_space), seeds, num_envs=1, progress=False)
    assert seen.observations.dtype == np.uint8 and seen.observations.shape[1:] == (64, 64, 3)
    assert len(np.unique(seen.observations.reshape(len(seen.observations), -1), axis=0)) > 1  # the frames move
    # The same reset seed and actions in the state environment: the same rewards and ends.
    states = record_episodes(vector, ReplayActions(seen.actions), seeds, num_envs=1, progress=False)
    np.testing.assert_allclose(states.rewards, seen.rewards, rtol=1e-6)
    np.testing.assert_array_equal(states.terminations, seen.terminations)


def test_frames_are_stored_losslessly_and_a_reset_seed_replays_them(tmp_path):
    task = get_task("pendulum-pixels", {"g": 5.0})
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(1, 2), progress=False)
    for data_format in ("hdf5", "arrow"):
        write_traces(tmp_path / data_format, episodes, task, data_format=data_format)
        traces = read_traces(tmp_path / data_format)
        assert traces.task == task  # the frames' task and its arguments come back with them
        assert traces.episodes.observations.dtype == np.uint8
        np.testing.assert_array_equal(traces.episodes.observations, episodes.observations)
    env = task.make_env()
    first, _ = env.reset(seed=int(episodes.seeds[0]))
    np.testing.assert_array_equal(first, episodes.observations[0])
    assert env.unwrapped.g == 5.0
    env.close()


def test_a_frame_shrinks_by_averaging_its_kept_centre():
    frame = np.zeros((400, 600, 3), np.uint8)
    frame[:, 300:] = 255  # right half white
    small = shrink_frame(frame, size=4)
    assert small.shape == (4, 4, 3) and small.dtype == np.uint8
    assert (small[:, :2] == 0).all() and (small[:, 2:] == 255).all()
    centre = shrink_frame(frame, size=2, keep=0.5)  # columns 150-450: half black, half white
    assert (centre[:, 0] == 0).all() and (centre[:, 1] == 255).all()


def test_the_ensemble_refuses_camera_frames():
    task = get_task("pendulum-pixels")
    with pytest.raises(InputError, match="are camera frames"):
        build_model_for_spaces("ensemble", task.observation_space, task.action_space, EnsembleConfig())
