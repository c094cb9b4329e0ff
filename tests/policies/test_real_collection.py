"""Chunks of real transitions from gymnasium vector environments (same-step autoreset)."""

from __future__ import annotations

import numpy as np

from policies.real_collection import VectorCollector, real_vector_env
from tasks.recording import RandomPolicy
from tasks.registry import get_task


def test_a_chunk_holds_real_transitions_across_episode_ends():
    task = get_task("cartpole")
    collector = VectorCollector(real_vector_env(task, 2), seeds=[3, 4])
    policy, rng = RandomPolicy(task.action_space), np.random.default_rng(0)

    chunk = collector.collect(lambda observations: policy(observations, rng), 80)

    assert chunk.observations.shape == (80, 2, 4) and chunk.rewards.shape == (80, 2)
    assert collector.steps == 160
    ends = chunk.episode_ends
    assert ends.sum() >= 4  # random CartPole episodes last about 20 steps
    # Within an episode each step starts where the previous one led...
    continuing = ~ends[:-1]
    np.testing.assert_array_equal(chunk.next_observations[:-1][continuing], chunk.observations[1:][continuing])
    # ...and where an episode ended, the next row starts a new episode, not the final state.
    assert not np.allclose(chunk.next_observations[:-1][ends[:-1]], chunk.observations[1:][ends[:-1]])
    # CartPole episodes here end by termination: every end is a terminal state.
    np.testing.assert_array_equal(chunk.terminations, ends)
    # The returns of finished episodes add up to the rewards before each environment's last end.
    finished = collector.take_finished_returns()
    assert len(finished) == ends.sum()
    last_end = [np.flatnonzero(ends[:, i]).max() for i in range(2)]
    assert sum(finished) == sum(chunk.rewards[: last_end[i] + 1, i].sum() for i in range(2))
    assert collector.take_finished_returns() == []
    collector.close()


def test_the_first_reset_seeds_make_collection_reproducible():
    task = get_task("pendulum")
    chunks = []
    for _ in range(2):
        collector = VectorCollector(real_vector_env(task, 1), seeds=[7])
        chunks.append(collector.collect(lambda observations: np.zeros((len(observations), 1), np.float32), 250))
        collector.close()

    np.testing.assert_array_equal(chunks[0].observations, chunks[1].observations)
    # Pendulum truncates at 200 steps: the episode end bootstraps (no termination).
    assert chunks[0].episode_ends[199, 0] and not chunks[0].terminations.any()
