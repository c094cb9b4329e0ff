import jax
import numpy as np

from tasks.episodes import Episode, Episodes
from tasks.sampler import sample_sequences, sequence_data, transition_batch, window_batch

sample = jax.jit(sample_sequences, static_argnums=(2, 3))


def _labelled_episodes(lengths, terminated):
    """Episodes whose observation at time t of episode e is [e, t] and action is t."""
    episodes = []
    for e, (length, ends_terminated) in enumerate(zip(lengths, terminated)):
        t = np.arange(length + 1, dtype=np.float32)
        flags = np.zeros(length, dtype=bool)
        episodes.append(Episode(
            observations=np.stack([np.full_like(t, e), t], axis=1),
            actions=t[:-1, None],
            rewards=t[:-1] + 100 * e,
            terminations=flags | (np.arange(length) == length - 1) & ends_terminated,
            truncations=flags | (np.arange(length) == length - 1) & (not ends_terminated),
            seed=e,
        ))
    return Episodes.from_list(episodes)


def test_windows_follow_their_episode_and_mask_past_its_end():
    lengths = [5, 12, 3, 30]
    episodes = _labelled_episodes(lengths, [True, False, True, False])
    batch = jax.device_get(sample(sequence_data(episodes), jax.random.key(0), 512, 8))
    assert batch.obs.shape == (512, 9, 2) and batch.action.shape == (512, 8, 1)
    for b in range(512):
        e, t0 = int(batch.obs[b, 0, 0]), int(batch.obs[b, 0, 1])
        valid = min(8, lengths[e] - t0)
        np.testing.assert_array_equal(batch.mask[b], np.arange(8) < valid)
        np.testing.assert_array_equal(batch.obs[b, :, 0], e)  # never crosses into another episode
        np.testing.assert_array_equal(batch.obs[b, : valid + 1, 1], t0 + np.arange(valid + 1))
        np.testing.assert_array_equal(batch.action[b, :valid, 0], t0 + np.arange(valid))
        np.testing.assert_array_equal(batch.reward[b, :valid], t0 + np.arange(valid) + 100 * e)
        assert not batch.reward[b, valid:].any()


def test_termination_is_flagged_only_on_the_last_step_of_terminated_episodes():
    lengths = [4, 4]
    episodes = _labelled_episodes(lengths, [True, False])
    batch = jax.device_get(sample(sequence_data(episodes), jax.random.key(1), 256, 6))
    for b in range(256):
        e, t0 = int(batch.obs[b, 0, 0]), int(batch.obs[b, 0, 1])
        last = lengths[e] - 1 - t0
        expected = np.zeros(6, dtype=bool)
        if e == 0:
            expected[last] = True  # the truncated episode 1 never shows a termination
        np.testing.assert_array_equal(batch.terminated[b], expected)


def test_every_step_can_start_a_window_and_padding_is_never_drawn():
    episodes = _labelled_episodes([7, 9], [False, False])
    data = sequence_data(episodes, step_capacity=64, episode_capacity=8)
    batch = jax.device_get(sample(data, jax.random.key(2), 4096, 1))
    starts = {(int(e), int(t)) for e, t in batch.obs[:, 0]}
    assert starts == {(0, t) for t in range(7)} | {(1, t) for t in range(9)}


def test_growing_data_at_a_fixed_capacity_does_not_recompile():
    traces = []

    def counting_sampler(*args):
        traces.append(1)
        return sample_sequences(*args)

    sampler = jax.jit(counting_sampler, static_argnums=(2, 3))
    small = sequence_data(_labelled_episodes([5, 6], [True, True]), step_capacity=128, episode_capacity=16)
    large = sequence_data(_labelled_episodes([5, 6, 20, 40], [True, True, False, True]), 128, 16)
    sampler(small, jax.random.key(0), 32, 4)
    sampler(large, jax.random.key(0), 32, 4)
    assert len(traces) == 1


def test_same_key_gives_the_same_batch():
    data = sequence_data(_labelled_episodes([10, 10], [True, False]))
    a, b = sample(data, jax.random.key(7), 64, 5), sample(data, jax.random.key(7), 64, 5)
    np.testing.assert_array_equal(a.obs, b.obs)


def test_validation_windows_tile_every_episode_once():
    lengths = [5, 2, 7]
    episodes = _labelled_episodes(lengths, [True, False, True])
    batch = jax.device_get(window_batch(episodes, 3))
    starts = [(0, 0), (0, 3), (1, 0), (2, 0), (2, 3), (2, 6)]  # (episode, first step) of each window
    assert batch.obs.shape == (8, 4, 2)  # 6 windows, padded to 8
    for row, (e, t0) in enumerate(starts):
        valid = min(3, lengths[e] - t0)
        np.testing.assert_array_equal(batch.mask[row], np.arange(3) < valid)
        np.testing.assert_array_equal(batch.obs[row, :, 0], e)
        np.testing.assert_array_equal(batch.obs[row, : valid + 1, 1], t0 + np.arange(valid + 1))
        np.testing.assert_array_equal(batch.action[row, :valid, 0], t0 + np.arange(valid))
        assert batch.terminated[row].any() == (e != 1 and t0 + valid == lengths[e])
    assert not batch.mask[6:].any() and not batch.reward[6:].any()
    # Windows of one step are every transition once, in order.
    single = jax.device_get(transition_batch(episodes))
    assert int(single.mask.sum()) == sum(lengths)
    np.testing.assert_array_equal(single.obs[: sum(lengths), 0, 1], np.concatenate([np.arange(n) for n in lengths]))
