"""Dream starts: a model with memory starts each dream from the state it would hold after
watching the real steps before it; a model without starts from the observation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.start_states import capacities, filtered_starts, start_states
from tasks.registry import get_task
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fidelity import filtered_state
from worldmodel.rssm import RSSMConfig
from worldmodel.saving import build_model_for_spaces

CONTEXT = 4


@pytest.fixture(scope="module")
def rssm():
    task = get_task("cartpole")
    return build_model_for_spaces("rssm", task.observation_space, task.action_space, RSSMConfig(size="tiny"), seed=0)


def _states_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_a_start_deep_in_an_episode_is_filtered_over_the_steps_before_it(rssm, cartpole_episodes):
    starts = start_states(cartpole_episodes)
    episode_index = int(np.argmax(cartpole_episodes.lengths > CONTEXT + 2))
    episode = cartpole_episodes.episode(episode_index)
    step = CONTEXT + 1  # the start's step in its episode: a full context before it
    row = int(cartpole_episodes.step_offsets[episode_index]) + step  # its index among all acted steps
    got = filtered_starts(rssm, starts, jnp.array([row]), CONTEXT)
    context_obs = episode.observations[None, step - CONTEXT:step]
    context_actions = episode.actions[None, step - CONTEXT:step]
    want = filtered_state(rssm, jnp.asarray(context_obs), jnp.asarray(context_actions),
                          jnp.asarray(episode.observations[None, step]))
    _states_equal(got, want)


def test_near_an_episodes_start_the_context_is_what_the_episode_has(rssm, cartpole_episodes):
    starts = start_states(cartpole_episodes)
    episode_index = 3  # not the first: its context must not reach into episode 2
    episode = cartpole_episodes.episode(episode_index)
    first_row = int(cartpole_episodes.step_offsets[episode_index])
    # At the reset the state is the model's initial state for the first observation.
    got = filtered_starts(rssm, starts, jnp.array([first_row]), CONTEXT)
    _states_equal(got, rssm.initial_state(jnp.asarray(episode.observations[:1])))
    # Two steps in, only those two steps are filtered.
    got = filtered_starts(rssm, starts, jnp.array([first_row + 2]), CONTEXT)
    want = filtered_state(rssm, jnp.asarray(episode.observations[None, :2]), jnp.asarray(episode.actions[None, :2]),
                          jnp.asarray(episode.observations[None, 2]))
    _states_equal(got, want)


def test_a_model_without_memory_starts_from_the_acted_observations(cartpole_episodes):
    task = get_task("cartpole")
    model = build_model_for_spaces("ensemble", task.observation_space, task.action_space,
                                   EnsembleConfig(members=2, elites=1, hidden_size=8, hidden_layers=1), seed=0)
    starts = start_states(cartpole_episodes)
    index = jnp.arange(int(starts.count))
    got = filtered_starts(model, starts, index, 0)
    want = model.initial_state(jnp.asarray(cartpole_episodes.acted_observations(), jnp.float32))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_the_buffers_pad_to_powers_of_two_and_refuse_capacities_smaller_than_the_data(cartpole_episodes):
    starts = start_states(cartpole_episodes)
    rows, steps = len(cartpole_episodes.observations), cartpole_episodes.num_steps
    assert capacities(starts) == (1 << (rows - 1).bit_length(), 1 << (steps - 1).bit_length())
    assert int(starts.count) == steps
    held = start_states(cartpole_episodes.select([0, 1]), capacities(starts))
    assert capacities(held) == capacities(starts)
    with pytest.raises(ValueError, match="smaller than the data"):
        start_states(cartpole_episodes, (rows - 1, steps))
