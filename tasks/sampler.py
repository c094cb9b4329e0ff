"""Sequence batches drawn on the device.

`SequenceData` holds the episodes' flat arrays on the device, padded to a fixed capacity
so that a growing trace set keeps the same shapes (and jitted code never recompiles
until the capacity doubles). `sample_sequences` is a pure function of that data and a
key: it draws ``[B, T]`` windows with index arithmetic, no Python loop over samples.

A window may run past its episode's end; those steps are masked. A terminated step
keeps its flag (its successor observation is the terminal one); a truncated episode
simply ends, with no termination, so a model learns that time limits are not deaths.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tasks.episodes import Episodes


class SequenceBatch(NamedTuple):
    """A batch of windows of ``T`` steps.

    Attributes:
        obs: ``[B, T + 1, *obs_shape]``, the observation before each step and after the last.
        action: ``[B, T, *action_shape]``.
        reward: ``[B, T]``.
        terminated: ``[B, T]``, true where the environment ended the episode at that step.
        mask: ``[B, T]``, false for steps past the end of the window's episode.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    mask: jax.Array


class SequenceData(NamedTuple):
    """Episodes as padded device arrays, ready for `sample_sequences`.

    Attributes:
        observations: ``[step_capacity + episode_capacity, *obs_shape]``.
        actions: ``[step_capacity, *action_shape]``.
        rewards: ``[step_capacity]``.
        terminations: ``[step_capacity]``.
        episode_of_step: ``[step_capacity]``, the ordinal of each step's episode; a step's
            observation sits at ``step + episode_of_step[step]``.
        episode_end: ``[step_capacity]``, one past the last step of each step's episode.
        num_steps: scalar, how many steps are real (the rest is padding).
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    terminations: jax.Array
    episode_of_step: jax.Array
    episode_end: jax.Array
    num_steps: jax.Array

    @property
    def step_capacity(self) -> int:
        return self.rewards.shape[0]


def sequence_data(
    episodes: Episodes,
    step_capacity: int | None = None,
    episode_capacity: int | None = None,
) -> SequenceData:
    """Put episodes on the device, padded to the given capacities.

    Args:
        episodes: the episodes windows are drawn from (only fitting splits, usually).
        step_capacity: room for this many steps; default the next power of two.
        episode_capacity: room for this many episodes; default the next power of two.
    """
    steps, count = episodes.num_steps, episodes.num_episodes
    step_capacity = step_capacity or _next_power_of_two(steps)
    episode_capacity = episode_capacity or _next_power_of_two(count)
    if step_capacity < steps or episode_capacity < count:
        raise ValueError(
            f"capacity ({step_capacity} steps, {episode_capacity} episodes) is below "
            f"the data ({steps} steps, {count} episodes)"
        )
    lengths = episodes.lengths
    episode_of_step = np.repeat(np.arange(count), lengths)
    episode_end = np.repeat(episodes.step_offsets[1:], lengths)

    def padded(values: np.ndarray, rows: int) -> jax.Array:
        pad = [(0, rows - len(values))] + [(0, 0)] * (values.ndim - 1)
        return jnp.asarray(np.pad(values, pad, mode="edge"))

    return SequenceData(
        observations=padded(episodes.observations, step_capacity + episode_capacity),
        actions=padded(episodes.actions, step_capacity),
        rewards=padded(episodes.rewards.astype(np.float32), step_capacity),
        terminations=padded(episodes.terminations, step_capacity),
        episode_of_step=padded(episode_of_step.astype(np.int32), step_capacity),
        episode_end=padded(episode_end.astype(np.int32), step_capacity),
        num_steps=jnp.asarray(steps, dtype=jnp.int32),
    )


def sample_sequences(data: SequenceData, key: jax.Array, batch_size: int, length: int) -> SequenceBatch:
    """Draw ``batch_size`` windows of ``length`` steps, each starting at a uniform step.

    Pure and jittable with ``batch_size`` and ``length`` static.
    """
    starts = jax.random.randint(key, (batch_size,), 0, data.num_steps)
    offsets = jnp.arange(length)
    steps = starts[:, None] + offsets[None, :]
    end = data.episode_end[starts][:, None]
    mask = steps < end
    steps = jnp.minimum(steps, end - 1)
    # Observation rows: the observation before each step, then the one after the last
    # step of the window, never reaching into the next episode.
    obs_steps = jnp.minimum(starts[:, None] + jnp.arange(length + 1)[None, :], end)
    obs_rows = obs_steps + data.episode_of_step[starts][:, None]
    return SequenceBatch(
        obs=data.observations[obs_rows],
        action=data.actions[steps],
        reward=jnp.where(mask, data.rewards[steps], 0.0),
        terminated=mask & data.terminations[steps],
        mask=mask,
    )


def transition_batch(episodes: Episodes, capacity: int | None = None) -> SequenceBatch:
    """Every transition of ``episodes`` as one batch of windows of length one (`window_batch`)."""
    return window_batch(episodes, 1, capacity)


def window_batch(episodes: Episodes, length: int, capacity: int | None = None) -> SequenceBatch:
    """Every episode cut into consecutive windows of ``length`` steps, as one batch.

    An episode's last window is masked past its end. Rows past the real windows (padding
    up to ``capacity``, by default the next power of two) are masked too, so evaluating a
    growing validation set keeps one shape. Models that filter through time are validated
    on these; for one-step models (length one) it is every transition once.
    """
    lengths = episodes.lengths
    windows_per_episode = -(-lengths // length)
    count = int(windows_per_episode.sum())
    capacity = capacity or _next_power_of_two(count)
    if capacity < count:
        raise ValueError(f"capacity {capacity} is below the {count} windows")
    episode = np.repeat(np.arange(episodes.num_episodes), windows_per_episode)
    first_window = np.cumsum(windows_per_episode) - windows_per_episode
    start = episodes.step_offsets[:-1][episode] + (np.arange(count) - first_window[episode]) * length
    end = episodes.step_offsets[1:][episode][:, None]
    steps = start[:, None] + np.arange(length)[None, :]
    mask = steps < end
    steps = np.minimum(steps, end - 1)
    # A step's observation sits at step + episode (each episode keeps its reset observation).
    obs_rows = np.minimum(start[:, None] + np.arange(length + 1)[None, :], end) + episode[:, None]

    def padded(values: np.ndarray) -> jax.Array:
        pad = [(0, capacity - len(values))] + [(0, 0)] * (values.ndim - 1)
        return jnp.asarray(np.pad(values, pad, mode="edge"))

    mask = padded(mask) & jnp.asarray(np.arange(capacity) < count)[:, None]
    return SequenceBatch(
        obs=padded(episodes.observations[obs_rows]),
        action=padded(episodes.actions[steps]),
        reward=jnp.where(mask, padded(episodes.rewards.astype(np.float32)[steps]), 0.0),
        terminated=mask & padded(episodes.terminations[steps]),
        mask=mask,
    )


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())
