"""Several seeds of the dream trainer in one vmapped call equal the same seeds trained
one by one: the networks after a few updates, and every metric."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dreamer.actor_critic import DreamConfig, make_dream_trainer, make_dream_trainer_for_seeds, make_networks
from dreamer.start_states import start_states
from policies.networks import NetworkConfig
from policies.seeds import one_seed
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


def test_seeds_trained_in_one_call_equal_seeds_trained_one_by_one(pendulum_episodes):
    action_space = get_task("pendulum").action_space
    models = [tiny_model(seed) for seed in SEEDS]  # each seed dreams in its own model
    networks = [make_networks(3, action_space, TINY, seed) for seed in SEEDS]
    starts = start_states(pendulum_episodes)
    keys = jnp.stack([jax.random.key(10 + seed) for seed in SEEDS])

    init, train = make_dream_trainer_for_seeds(nnx.graphdef(models[0]), [a for a, _ in networks],
                                               [c for _, c in networks], TINY, world_model_per_seed=True)
    first_states = init()
    model_states = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[nnx.state(m) for m in models])
    states, metrics = train(first_states, model_states, starts, keys)

    # One seed's trainer trains any seed's networks of its shape: its program reads them as arguments.
    alone_init, alone_train = make_dream_trainer(nnx.graphdef(models[0]), *networks[0], TINY)
    assert_trees_close(one_seed(first_states, 0), alone_init(), rtol=0, atol=0)
    for index, model in enumerate(models):
        alone_state, alone_metrics = alone_train(one_seed(first_states, index), nnx.state(model), starts, keys[index])
        assert_trees_close(one_seed(states, index), alone_state)
        assert_trees_close({name: value[index] for name, value in metrics.items()}, alone_metrics, rtol=1e-4)
    np.testing.assert_array_equal(states.updates, TINY.updates_per_call)
    assert not np.allclose(jax.tree.leaves(states.actor)[-1][0], jax.tree.leaves(states.actor)[-1][1])
