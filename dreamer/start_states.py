"""Where dreams start: real training steps, filtered by the model over their recent past.

A model whose state is the observation (the ensemble) starts a dream from one real
observation. A model with memory (the RSSM) must first read what came before, so each
start is the model's posterior after filtering the ``context`` real steps that led to it
with `observe`: the same state it would hold if it had watched the episode. Near an
episode's start the context is shorter: steps before the episode's first observation
restart the filter there instead (the state at a reset is `initial_state`).

The buffer holds every training observation once, flat in episode order, with the action
taken from each; starts are indices into it, so a context costs no copies of frames.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from policies.filtering import filter_or_start
from tasks.episodes import Episodes


class StartStates(NamedTuple):
    """Real steps dreams start from, on the device, padded to power-of-two capacities.

    Attributes:
        observations: ``[M, *obs_shape]``, every observation of the episodes (float32;
            integer frames keep their dtype).
        actions: ``[M, *action_shape]``, the action taken from each observation (zero
            after an episode's last observation, which no context reads).
        starts: ``[N]`` int32, the row of each start (an observation an action was taken from).
        episode_firsts: ``[N]`` int32, the row of the first observation of each start's episode.
        count: how many of the ``N`` starts are real (the rest pad).
    """

    observations: jax.Array
    actions: jax.Array
    starts: jax.Array
    episode_firsts: jax.Array
    count: jax.Array


def start_states(episodes: Episodes, capacities: tuple[int, int] | None = None) -> StartStates:
    """Every acted observation of ``episodes`` as a start, with its episode for context.

    Args:
        episodes: the training episodes.
        capacities: ``(observations, starts)`` rows to pad to, at least the data's;
            default: the next powers of two.
    """
    observations = np.asarray(episodes.observations)
    if not np.issubdtype(observations.dtype, np.integer):
        observations = observations.astype(np.float32)
    before, _ = episodes.transitions()
    actions = np.zeros((len(observations), *episodes.actions.shape[1:]), episodes.actions.dtype)
    actions[before] = episodes.actions
    episode_of_step = np.repeat(np.arange(episodes.num_episodes), episodes.lengths)
    firsts = (episodes.step_offsets[:-1] + np.arange(episodes.num_episodes))[episode_of_step]
    rows, count = len(observations), len(before)
    obs_capacity, start_capacity = capacities or (_power_of_two(rows), _power_of_two(count))
    if obs_capacity < rows or start_capacity < count:
        raise ValueError(f"capacities {(obs_capacity, start_capacity)} are smaller than the data ({rows}, {count})")

    def pad(array, capacity):
        return np.pad(array, [(0, capacity - len(array))] + [(0, 0)] * (array.ndim - 1), mode="edge")

    return StartStates(
        observations=jnp.asarray(pad(observations, obs_capacity)),
        actions=jnp.asarray(pad(actions, obs_capacity)),
        starts=jnp.asarray(pad(before, start_capacity), dtype=jnp.int32),
        episode_firsts=jnp.asarray(pad(firsts, start_capacity), dtype=jnp.int32),
        count=jnp.asarray(count, dtype=jnp.int32),
    )


def capacities(starts: StartStates) -> tuple[int, int]:
    """The padded sizes of ``starts``' buffers."""
    return starts.observations.shape[0], starts.starts.shape[0]


def filtered_starts(world_model, starts: StartStates, index: jax.Array, context: int):
    """The model's states at the starts ``index`` ``[B]``, after filtering up to ``context``
    real steps before each (fewer where its episode began later).

    Call inside `jax.jit`; ``context`` is static (the model's ``context_length``).
    """
    start_rows = starts.starts[index]
    if context == 0:
        return world_model.initial_state(starts.observations[start_rows])
    first_rows = starts.episode_firsts[index][:, None]
    positions = start_rows[:, None] - context + jnp.arange(context + 1)  # [B, C + 1], the start last
    rows = jnp.maximum(positions, first_rows)
    restarts = positions <= first_rows  # the episode has not begun yet, or begins here

    def observe(state, k):
        state = filter_or_start(world_model, state, starts.actions[rows[:, k - 1]], starts.observations[rows[:, k]],
                                restarts[:, k])
        return state, None

    state, _ = jax.lax.scan(observe, world_model.initial_state(starts.observations[rows[:, 0]]),
                            jnp.arange(1, context + 1))
    return state


def _power_of_two(count: int) -> int:
    return 1 << max(0, (count - 1).bit_length())
