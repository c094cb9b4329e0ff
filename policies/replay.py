"""A replay buffer that lives on the device, as pure functions of its arrays.

Off-policy trainers keep it inside their jitted state: a chunk of new transitions is
written in place (as a ring) and minibatches are drawn from it by index, so no
transition crosses back to the host once collected.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class ReplayBuffer(NamedTuple):
    """Transitions in fixed-capacity arrays; ``size`` of them are filled.

    Attributes:
        observations: ``[C, *obs_shape]``.
        actions: ``[C, ...]``.
        rewards: ``[C]``.
        terminations: ``[C]``, 1.0 where the next state is terminal.
        next_observations: ``[C, *obs_shape]``.
        position: where the next transition is written.
        size: how many slots hold transitions.
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    terminations: jax.Array
    next_observations: jax.Array
    position: jax.Array
    size: jax.Array


def empty_buffer(capacity: int, observation_shape: tuple[int, ...], action_shape: tuple[int, ...],
                 action_dtype=jnp.float32) -> ReplayBuffer:
    # Every field its own array: a trainer may donate the buffer, and a buffer cannot be donated twice.
    return ReplayBuffer(
        observations=jnp.zeros((capacity, *observation_shape), jnp.float32),
        actions=jnp.zeros((capacity, *action_shape), action_dtype),
        rewards=jnp.zeros(capacity, jnp.float32),
        terminations=jnp.zeros(capacity, jnp.float32),
        next_observations=jnp.zeros((capacity, *observation_shape), jnp.float32),
        position=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def insert(buffer: ReplayBuffer, observations, actions, rewards, terminations, next_observations) -> ReplayBuffer:
    """Write a batch of ``K`` transitions after the newest, overwriting the oldest when full."""
    capacity = buffer.rewards.shape[0]
    count = rewards.shape[0]
    index = (buffer.position + jnp.arange(count)) % capacity
    return ReplayBuffer(
        observations=buffer.observations.at[index].set(observations),
        actions=buffer.actions.at[index].set(actions.astype(buffer.actions.dtype)),
        rewards=buffer.rewards.at[index].set(rewards),
        terminations=buffer.terminations.at[index].set(terminations.astype(jnp.float32)),
        next_observations=buffer.next_observations.at[index].set(next_observations),
        position=(buffer.position + count) % capacity,
        size=jnp.minimum(buffer.size + count, capacity),
    )


def sample(buffer: ReplayBuffer, batch_size: int, key: jax.Array) -> tuple[jax.Array, ...]:
    """A uniform minibatch ``(obs, actions, rewards, terminations, next_obs)`` of filled slots."""
    index = jax.random.randint(key, (batch_size,), 0, buffer.size)
    return (buffer.observations[index], buffer.actions[index], buffer.rewards[index],
            buffer.terminations[index], buffer.next_observations[index])
