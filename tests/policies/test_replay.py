"""The on-device replay buffer: ring writes and sampling of filled slots only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from policies import replay


def transitions(start: int, count: int):
    values = jnp.arange(start, start + count, dtype=jnp.float32)
    return values[:, None], values[:, None], values, jnp.zeros(count), values[:, None] + 0.5


def test_insert_writes_after_the_newest_and_overwrites_the_oldest_when_full():
    buffer = replay.empty_buffer(8, (1,), (1,))
    buffer = replay.insert(buffer, *transitions(0, 6))
    assert int(buffer.size) == 6 and int(buffer.position) == 6

    buffer = replay.insert(buffer, *transitions(6, 4))

    assert int(buffer.size) == 8 and int(buffer.position) == 2
    np.testing.assert_array_equal(buffer.rewards, [8, 9, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(buffer.next_observations[:, 0], buffer.rewards + 0.5)


def test_samples_come_only_from_filled_slots():
    buffer = replay.insert(replay.empty_buffer(64, (1,), (1,)), *transitions(100, 5))

    observations, actions, rewards, terminations, next_observations = replay.sample(buffer, 512, jax.random.key(0))

    assert set(np.asarray(rewards).tolist()) == {100, 101, 102, 103, 104}
    np.testing.assert_array_equal(observations[:, 0], rewards)
    np.testing.assert_array_equal(next_observations[:, 0], rewards + 0.5)
