"""Behaviour cloning imitates the controller that wrote a trace file."""

from __future__ import annotations

import numpy as np

from policies.behaviour_cloning import BehaviourCloningConfig, clone_behaviour
from policies.networks import NetworkConfig
from policies.real_training import evaluation_episodes
from tasks.recording import EVALUATION_STREAM, RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task


class LeanController:
    """Push the cart the way the pole leans (and is falling): balances CartPole for long."""

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (observations[:, 2] + 0.5 * observations[:, 3] > 0).astype(np.int64)


def test_a_clone_of_a_good_controller_balances_far_longer_than_chance():
    task = get_task("cartpole")
    traces = record_episodes(task, LeanController(), reset_seeds(0, 10), num_envs=10, progress=False)
    assert traces.returns().mean() > 150, "the controller should balance the pole for long"

    actor = clone_behaviour(task, traces, BehaviourCloningConfig(updates=500, network=NetworkConfig(hidden_size=32)),
                            seed=0)

    seeds = reset_seeds(0, 10, EVALUATION_STREAM)
    cloned = evaluation_episodes(task, actor, seeds).returns().mean()
    chance = record_episodes(task, RandomPolicy(task.action_space), seeds, num_envs=10,
                             rng=np.random.default_rng(0), progress=False).returns().mean()
    assert cloned > 100 > 3 * chance, (cloned, chance)
