"""Behaviour cloning: the baseline every offline result is read against.

The same `Actor` the dreams train is fitted by maximum likelihood to the actions of a
fixed trace file (the tanh-Gaussian's density of each recorded action, or the
categorical's probability), with minibatches drawn on the device and all updates fused
into one jitted `lax.scan`. A policy trained in dreams from the same file should beat it;
if it does not, the world model added nothing the data did not already say.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from policies.networks import Actor, NetworkConfig
from tasks.config import config, option
from tasks.episodes import Episodes
from tasks.registry import Task


@config
class BehaviourCloningConfig:
    """How the actor is fitted to the recorded actions.

    Attributes:
        updates: gradient steps in all.
        batch_size: transitions per step.
        learning_rate: Adam step size.
        network: the actor's size (the dreams' default).
    """

    updates: int = option(2000, min=1)
    batch_size: int = option(256, min=1)
    learning_rate: float = option(1e-3, min=0)
    network: NetworkConfig = option(NetworkConfig())


def clone_behaviour(task: Task, episodes: Episodes, config: BehaviourCloningConfig, seed: int) -> Actor:
    """An actor fitted to imitate the actions of ``episodes`` in ``task``."""
    before, _ = episodes.transitions()
    observations = np.asarray(episodes.observations[before], np.float32).reshape(len(before), -1)
    actions = np.asarray(episodes.actions)
    if not hasattr(task.action_space, "n"):
        # Recorded actions may sit exactly on a bound, where the tanh density is zero.
        low, high = task.action_space.low, task.action_space.high
        margin = 1e-3 * (high - low)
        actions = np.clip(actions, low + margin, high - margin).astype(np.float32)
    actor = Actor(observations.shape[1], task.action_space, config.network, nnx.Rngs(seed))
    actor.input_norm.fit(observations)
    graph, params, rest = nnx.split(actor, nnx.Param, ...)
    optimizer = optax.adam(config.learning_rate)

    def negative_log_likelihood(params, batch_observations, batch_actions):
        return -jnp.mean(nnx.merge(graph, params, rest).log_prob(batch_observations, batch_actions))

    @jax.jit
    def fit(params, opt_state, observations, actions, key):
        def update(carry, step_key):
            params, opt_state = carry
            index = jax.random.randint(step_key, (config.batch_size,), 0, observations.shape[0])
            loss, grads = jax.value_and_grad(negative_log_likelihood)(params, observations[index], actions[index])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(update, (params, opt_state), jax.random.split(key, config.updates))
        return params, losses

    params, _ = fit(params, optimizer.init(params), jnp.asarray(observations), jnp.asarray(actions),
                    jax.random.key(seed))
    return nnx.merge(graph, params, rest)
