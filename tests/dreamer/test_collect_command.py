"""`dreamer collect` with a saved policy: real episodes recorded with the actor plus exploration noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies.saving import load_actor
from tasks.recording import COLLECT_STREAM, reset_seeds
from tasks.traces import read_traces


def collect(cli, out, policy, noise, *extra):
    code, stdout, err = cli("collect", "--task", "pendulum", "--policy", policy, "--noise", noise,
                            "--episodes", 2, "--out", out, "--json", *extra)
    assert code == 0, err
    return json.loads(stdout), read_traces(out)


def mode_on_recorded_observations(policy_dir, episodes) -> np.ndarray:
    actor, _, _ = load_actor(policy_dir)
    before, _ = episodes.transitions()
    return np.asarray(actor.mode(episodes.observations[before].astype(np.float32)))


def test_collect_records_the_asked_episodes_with_a_saved_policy(cli, tmp_path, dreamed_pendulum_policy):
    summary, traces = collect(cli, tmp_path / "traces", dreamed_pendulum_policy, 0.3)

    assert summary["episodes"] == summary["episodes_in_file"] == 2 and summary["steps"] == 400
    assert traces.task.name == "pendulum"
    assert traces.episodes.num_episodes == 2 and list(traces.episodes.lengths) == [200, 200]
    assert list(traces.episodes.seeds) == list(reset_seeds(0, 2, COLLECT_STREAM))
    assert np.all(traces.episodes.truncations[traces.episodes.step_offsets[1:] - 1])


def test_without_noise_the_recorded_actions_are_the_actors_mode(cli, tmp_path, dreamed_pendulum_policy):
    _, traces = collect(cli, tmp_path / "traces", dreamed_pendulum_policy, 0)
    episodes = traces.episodes

    np.testing.assert_allclose(episodes.actions, mode_on_recorded_observations(dreamed_pendulum_policy, episodes),
                               rtol=1e-5, atol=1e-6)


def test_noise_perturbs_the_actions_within_the_action_bounds(cli, tmp_path, dreamed_pendulum_policy):
    _, traces = collect(cli, tmp_path / "traces", dreamed_pendulum_policy, 0.3)
    episodes = traces.episodes
    offsets = episodes.actions - mode_on_recorded_observations(dreamed_pendulum_policy, episodes)

    low, high = traces.action_space.low, traces.action_space.high
    assert np.all(episodes.actions >= low) and np.all(episodes.actions <= high)
    inside = (episodes.actions > low) & (episodes.actions < high)  # not clipped
    # sigma 0.3 in units of half the action range (2 for Pendulum's [-2, 2])
    assert np.std(offsets[inside]) == pytest.approx(0.3 * 2.0, rel=0.25)


def test_collect_with_a_missing_policy_directory_fails_in_one_line(cli, tmp_path):
    code, out, err = cli("collect", "--task", "pendulum", "--policy", "/no/such/dir", "--noise", 0.3,
                         "--episodes", 2, "--out", tmp_path / "traces")

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("dreamer: error: /no/such/dir: "), err
    assert not (tmp_path / "traces").exists()


def test_a_pendulum_policy_cannot_collect_cartpole_episodes(cli, tmp_path, dreamed_pendulum_policy):
    code, out, err = cli("collect", "--task", "cartpole", "--policy", dreamed_pendulum_policy,
                         "--episodes", 2, "--out", tmp_path / "traces")

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "does not match task cartpole" in err, err
    assert not (tmp_path / "traces").exists()


@pytest.mark.slow  # needs a CartPole policy: a tiny online CartPole run (~25 s cold on a 2-core CPU)
def test_a_cartpole_policy_cannot_collect_pendulum_episodes(cli, tmp_path, online_cartpole_run):
    code, out, err = cli("collect", "--task", "pendulum", "--policy", online_cartpole_run, "--noise", 0.3,
                         "--episodes", 2, "--out", tmp_path / "traces")

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("dreamer: error: "), err
    assert "does not match task pendulum" in err
    assert not (tmp_path / "traces").exists()
