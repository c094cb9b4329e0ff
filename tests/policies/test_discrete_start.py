"""Discrete action spaces that do not start at 0 (``Discrete(n, start=s)``) are acted in,
modelled and explored in their own units: s .. s + n - 1."""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies.acting import ActorPolicy
from policies.networks import Actor, NetworkConfig
from worldmodel.ensemble import EnsembleConfig
from worldmodel.saving import build_model_for_spaces

SPACE = gym.spaces.Discrete(3, start=-1)


def test_the_actor_samples_and_scores_actions_in_the_spaces_own_units():
    actor = Actor(2, SPACE, NetworkConfig(hidden_size=8, hidden_layers=1), nnx.Rngs(0))
    features = jnp.zeros((512, 2))
    actions, log_probs = actor.sample(features, jax.random.key(0))
    assert set(np.asarray(actions).tolist()) == {-1, 0, 1}
    np.testing.assert_allclose(actor.log_prob(features, actions), log_probs, rtol=1e-6)
    assert int(actor.mode(features[:1])[0]) in (-1, 0, 1)


def test_exploring_picks_random_actions_inside_the_space():
    actor = Actor(2, SPACE, NetworkConfig(hidden_size=8, hidden_layers=1), nnx.Rngs(0))
    policy = ActorPolicy(actor, mode="noisy", noise=1.0)  # always a random action
    actions = policy(np.zeros((300, 2), np.float32), np.random.default_rng(0))
    assert set(actions.tolist()) == {-1, 0, 1}


def test_the_world_model_one_hot_encodes_from_the_first_action():
    model = build_model_for_spaces("ensemble", gym.spaces.Box(-1, 1, (2,)), SPACE,
                                   EnsembleConfig(members=2, elites=1, hidden_size=8, hidden_layers=1,
                                                  termination_hidden=4))
    np.testing.assert_array_equal(model.encode_action(jnp.array([-1, 0, 1])), np.eye(3))
