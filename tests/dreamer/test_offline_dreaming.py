"""Dreaming from a fixed trace file works: a policy trained only in a world model fitted
on ten random Pendulum episodes swings up far better than the random behaviour did."""

from __future__ import annotations

import numpy as np
import pytest

from dreamer.actor_critic import DreamConfig
from dreamer.offline import dream_offline
from policies.networks import NetworkConfig
from policies.real_training import evaluation_episodes
from tasks.recording import EVALUATION_STREAM, RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.splits import fitting_episodes
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fit import FitConfig, fit_world_model
from worldmodel.saving import build_model_for_spaces


@pytest.mark.slow
def test_dreaming_from_a_fixed_pendulum_trace_beats_its_behaviour_by_300():
    task = get_task("pendulum")
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(3, 10), num_envs=10,
                               rng=np.random.default_rng(3), progress=False)
    train, validation = fitting_episodes(episodes, split_seed=0)
    model = build_model_for_spaces("ensemble", task.observation_space, task.action_space,
                                   EnsembleConfig(members=5, elites=4, hidden_size=64, hidden_layers=2), seed=0)
    fit_world_model(model, train, validation, FitConfig(max_updates=1000, updates_per_call=250), seed=0,
                    progress=False)
    dream = DreamConfig(uncertainty_penalty=1.0, network=NetworkConfig(hidden_size=64))
    policy, result = dream_offline(model, task, train, dream, updates=600, seed=0)

    behaviour = float(episodes.returns().mean())
    real = float(evaluation_episodes(task, policy.actor, reset_seeds(0, 10, EVALUATION_STREAM)).returns().mean())
    assert result["halt_threshold"] > 0
    assert result["halt_reward"] == pytest.approx(float(np.min(train.rewards)) - 1.0 * result["halt_threshold"])
    assert real >= behaviour + 300, (behaviour, real)
