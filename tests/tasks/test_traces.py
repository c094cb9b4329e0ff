import gymnasium as gym
import minari
import numpy as np
import pytest

from tasks.errors import InputError
from tasks.registry import get_task
from tasks.traces import append_traces, read_traces, write_traces


@pytest.fixture(params=["hdf5", "arrow"])
def data_format(request):
    return request.param


def _record_with_data_collector(env_id, data_format, datasets_root, monkeypatch, episodes=3):
    """A dataset made by minari's own DataCollector, exactly as a user of minari would."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets_root))
    env = minari.DataCollector(gym.make(env_id), data_format=data_format)
    for seed in range(episodes):
        env.reset(seed=100 + seed)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    dataset_id = f"ours/collector-{data_format}-v0"
    env.create_dataset(dataset_id=dataset_id, algorithm_name="random")
    env.close()
    return dataset_id


def test_data_collector_dataset_loads_by_folder_data_folder_and_id(tmp_path, monkeypatch, data_format):
    dataset_id = _record_with_data_collector("CartPole-v1", data_format, tmp_path, monkeypatch)
    folder = tmp_path / dataset_id
    reference = minari.load_dataset(dataset_id)
    for location in (folder, folder / "data", dataset_id):
        traces = read_traces(location)
        assert traces.task.name == "cartpole"
        assert traces.episodes.num_episodes == reference.total_episodes == 3
        assert traces.episodes.num_steps == reference.total_steps
        assert list(traces.episodes.seeds) == [100, 101, 102]
        for ours, theirs in zip(traces.episodes, reference.iterate_episodes()):
            np.testing.assert_array_equal(ours.observations, theirs.observations)
            np.testing.assert_array_equal(ours.actions, theirs.actions)
            np.testing.assert_array_equal(ours.rewards, theirs.rewards)
            np.testing.assert_array_equal(ours.terminations, theirs.terminations)


def test_written_traces_read_back_identically_and_load_in_minari(tmp_path, cartpole_episodes, data_format):
    task = get_task("cartpole")
    write_traces(tmp_path / "traces", cartpole_episodes, task, data_format)
    traces = read_traces(tmp_path / "traces")
    assert traces.data_format == data_format
    assert traces.episodes.content_ids() == cartpole_episodes.content_ids()
    np.testing.assert_array_equal(traces.episodes.seeds, cartpole_episodes.seeds)
    dataset = minari.MinariDataset(tmp_path / "traces" / "data")
    assert dataset.total_episodes == cartpole_episodes.num_episodes
    assert dataset.recover_environment().spec.max_episode_steps == task.horizon


def test_appending_keeps_old_episodes_untouched(tmp_path, pendulum_episodes, data_format):
    task = get_task("pendulum")
    old, new = pendulum_episodes.select([0, 1, 2]), pendulum_episodes.select([3, 4])
    write_traces(tmp_path / "traces", old, task, data_format)
    before = read_traces(tmp_path / "traces").episodes
    assert append_traces(tmp_path / "traces", new) == 5
    after = read_traces(tmp_path / "traces").episodes
    assert after.content_ids()[:3] == before.content_ids() == old.content_ids()
    assert after.content_ids()[3:] == new.content_ids()
    np.testing.assert_array_equal(after.seeds, pendulum_episodes.seeds[:5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces"]


def test_write_refuses_an_existing_dataset_and_leaves_it_alone(tmp_path, pendulum_episodes):
    task = get_task("pendulum")
    write_traces(tmp_path / "traces", pendulum_episodes.select([0]), task)
    with pytest.raises(InputError, match="already exists"):
        write_traces(tmp_path / "traces", pendulum_episodes, task)
    assert read_traces(tmp_path / "traces").episodes.num_episodes == 1


def test_a_failed_append_keeps_the_old_file(tmp_path, pendulum_episodes, cartpole_episodes):
    write_traces(tmp_path / "traces", pendulum_episodes.select([0]), get_task("pendulum"))
    with pytest.raises(InputError, match="episode 0"):
        append_traces(tmp_path / "traces", cartpole_episodes.select([0]))
    assert read_traces(tmp_path / "traces").episodes.content_ids() == pendulum_episodes.select([0]).content_ids()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces"]
