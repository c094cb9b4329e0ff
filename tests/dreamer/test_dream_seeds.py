"""Several seeds of the dream trainer in one vmapped call equal the same seeds trained
one by one: the networks after a few updates, and every metric."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from dreamer.actor_critic import DreamConfig, make_dream_trainer, make_dream_trainer_for_seeds, make_networks
from dreamer.start_states import start_states
from policies.networks import NetworkConfig
from tasks.registry import get_task
from worldmodel.ensemble import EnsembleConfig
from worldmodel.saving import build_model

TINY = DreamConfig(horizon=4, batch_size=16, updates_per_call=3, network=NetworkConfig(hidden_size=16, hidden_layers=1))
TINY_ENSEMBLE = EnsembleConfig(members=2, elites=1, hidden_size=16, hidden_layers=1, termination_hidden=4)
SEEDS = (0, 1)


def tiny_model(seed: int):
    return build_model("ensemble", (3,), 1, False, TINY_ENSEMBLE, seed=seed)


def assert_trees_close(got, want, rtol=1e-5, atol=1e-6):
    for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(got_leaf), np.asarray(want_leaf), rtol=rtol, atol=atol)


@pytest.mark.parametrize("world_model_per_seed", [True])  # shared (False) is the same vmap with in_axes None
def test_seeds_trained_in_one_call_equal_seeds_trained_one_by_one(pendulum_episodes, world_model_per_seed):
    action_space = get_task("pendulum").action_space
    models = [tiny_model(seed if world_model_per_seed else 0) for seed in SEEDS]
    networks = [make_networks(3, action_space, TINY, seed) for seed in SEEDS]
    starts = start_states(pendulum_episodes)
    keys = [jax.random.key(10 + seed) for seed in SEEDS]

    one_by_one = []
    for model, (actor, critic), key in zip(models, networks, keys):
        init, train = make_dream_trainer(nnx.graphdef(model), actor, critic, TINY)
        one_by_one.append(train(init(), nnx.state(model), starts, key))

    init, train = make_dream_trainer_for_seeds(nnx.graphdef(models[0]), [a for a, _ in networks],
                                               [c for _, c in networks], TINY, world_model_per_seed=world_model_per_seed)
    model_state = (jax.tree.map(lambda *leaves: np.stack(leaves), *[nnx.state(m) for m in models])
                   if world_model_per_seed else nnx.state(models[0]))
    states, metrics = train(init(), model_state, starts, jax.numpy.stack(keys))

    for i, (state, seed_metrics) in enumerate(one_by_one):
        assert_trees_close(jax.tree.map(lambda leaf: leaf[i], states), state)
        assert_trees_close({k: v[i] for k, v in metrics.items()}, seed_metrics, rtol=1e-4)
    np.testing.assert_array_equal(states.updates, TINY.updates_per_call)
    # the seeds did learn apart: their actors differ
    assert not np.allclose(np.asarray(jax.tree.leaves(states.actor)[-1][0]),
                           np.asarray(jax.tree.leaves(states.actor)[-1][1]))
