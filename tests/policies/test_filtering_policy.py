"""A policy on a world model's latent state: in the real environment each slot's model
state filters every observation with the action applied before it, and starts over when
the slot's episode does."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from policies.filtering import FilteringPolicy
from policies.networks import Actor, NetworkConfig
from tasks.recording import StatefulPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from worldmodel.rssm import RSSMConfig
from worldmodel.saving import build_model_for_spaces


@pytest.fixture(scope="module")
def pendulum_rssm_and_actor():
    task = dataclasses.replace(get_task("pendulum"), horizon=40)  # short episodes, so slots start over
    model = build_model_for_spaces("rssm", task.observation_space, task.action_space, RSSMConfig(size="tiny"), seed=0)
    features = model.features(model.initial_state(jnp.zeros((1, 3))))
    actor = Actor(features.shape[-1], task.action_space, NetworkConfig(hidden_size=16, hidden_layers=1), nnx.Rngs(1))
    return task, model, actor


def _actions_of_a_filter_watching(model, actor, episode) -> np.ndarray:
    """What the actor does at each step of ``episode`` if the model filters it from its start."""

    @jax.jit
    def replay(observations, actions):
        def step(state, inputs):
            action, next_obs = inputs
            chosen = actor.mode(model.features(state))
            return model.observe(state, action[None], next_obs[None]), chosen[0]

        _, chosen = jax.lax.scan(step, model.initial_state(observations[:1]), (actions, observations[1:]))
        return chosen

    return np.asarray(replay(jnp.asarray(episode.observations), jnp.asarray(episode.actions)))


def test_each_slot_filters_its_own_episode_from_its_start(pendulum_rssm_and_actor):
    task, model, actor = pendulum_rssm_and_actor
    policy = FilteringPolicy(model, actor)
    assert isinstance(policy, StatefulPolicy)
    # Five episodes on three environments: slots start over mid-run and the running set shrinks.
    episodes = record_episodes(task, policy, reset_seeds(0, 5), num_envs=3, progress=False)
    assert len(episodes) == 5
    for episode in episodes:
        np.testing.assert_allclose(episode.actions, _actions_of_a_filter_watching(model, actor, episode),
                                   rtol=1e-4, atol=1e-5)


def test_without_a_start_call_it_refuses_to_guess_which_episodes_began(pendulum_rssm_and_actor):
    _, model, actor = pendulum_rssm_and_actor
    policy = FilteringPolicy(model, actor)
    with pytest.raises(RuntimeError, match="call start"):
        policy(np.zeros((2, 3), np.float32), np.random.default_rng(0), np.array([0, 1]))
