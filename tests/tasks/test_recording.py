import numpy as np

from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task


def test_each_episode_replays_from_its_recorded_seed(cartpole_episodes):
    task = get_task("cartpole")
    for episode in list(cartpole_episodes)[:5]:
        env = task.make_env()
        observation, _ = env.reset(seed=episode.seed)
        replayed = [observation]
        for action in episode.actions:
            observation, *_ = env.step(int(action))
            replayed.append(observation)
        env.close()
        np.testing.assert_array_equal(np.stack(replayed), episode.observations)


def test_recording_is_deterministic_for_a_seed_and_independent_of_env_count():
    task = get_task("pendulum")
    seeds = reset_seeds(3, 5)
    a = record_episodes(task, _MeanAction(), seeds, num_envs=1, progress=False)
    b = record_episodes(task, _MeanAction(), seeds, num_envs=4, progress=False)
    assert a.content_ids() == b.content_ids()
    np.testing.assert_array_equal(a.seeds, seeds)


def test_episodes_end_with_termination_or_truncation_but_never_both(cartpole_episodes):
    ends = cartpole_episodes.step_offsets[1:] - 1
    assert np.all(cartpole_episodes.terminations[ends] ^ cartpole_episodes.truncations[ends])
    inner = np.ones(cartpole_episodes.num_steps, dtype=bool)
    inner[ends] = False
    assert not cartpole_episodes.terminations[inner].any()
    assert not cartpole_episodes.truncations[inner].any()


def test_pendulum_episodes_are_truncated_at_the_horizon(pendulum_episodes):
    assert np.all(pendulum_episodes.lengths == get_task("pendulum").horizon)
    assert not pendulum_episodes.terminations.any()


def test_step_budget_cuts_the_last_episode_and_marks_it_truncated():
    task = get_task("pendulum")
    episodes = record_episodes(
        task, RandomPolicy(task.action_space), reset_seeds(0, 3), num_envs=1, max_steps=450, progress=False
    )
    assert episodes.num_steps == 450
    assert list(episodes.lengths) == [200, 200, 50]
    assert episodes.truncations[-1] and not episodes.terminations[-1]


def test_reset_seed_streams_do_not_overlap():
    recording, evaluation = set(reset_seeds(0, 1000, stream=1)), set(reset_seeds(0, 1000, stream=2))
    assert len(recording) == 1000 and not recording & evaluation
    np.testing.assert_array_equal(reset_seeds(0, 10, 1), reset_seeds(0, 20, 1)[:10])


class _MeanAction:
    def __call__(self, observations, rng):
        return np.zeros((len(observations), 1), dtype=np.float32)
