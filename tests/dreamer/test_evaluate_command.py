"""`dreamer evaluate`: a saved policy's real return, acting deterministically from fresh reset seeds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from policies.acting import ActorPolicy
from policies.saving import load_actor
from tasks.recording import EVALUATION_STREAM, RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.splits import fitting_episodes, heldout_episodes
from tasks.traces import read_traces, write_traces


def evaluate(cli, policy, *extra) -> dict:
    code, out, err = cli("evaluate", "--policy", policy, "--episodes", 3, "--json", *extra)
    assert code == 0, err
    assert len(out.splitlines()) == 1
    return json.loads(out)


def deterministic_returns(policy_dir, seeds) -> np.ndarray:
    """The returns of the saved actor's mode from each reset seed, recorded here."""
    actor, task, _ = load_actor(policy_dir)
    return record_episodes(task, ActorPolicy(actor), seeds, num_envs=len(seeds), progress=False).returns()


def test_evaluate_reports_the_mean_and_spread_of_fresh_episodes(cli, dreamed_pendulum_policy):
    summary = evaluate(cli, dreamed_pendulum_policy)

    assert summary["episodes"] == 3 and summary["eval_steps"] == 3 * 200
    assert summary["task"] == "pendulum"
    returns = deterministic_returns(dreamed_pendulum_policy, reset_seeds(0, 3, EVALUATION_STREAM))
    assert summary["mean_return"] == pytest.approx(returns.mean(), rel=1e-6)
    assert summary["std_return"] == pytest.approx(returns.std(), rel=1e-6)
    assert summary["std_return"] > 0
    # fresh seeds have no recorded behaviour and no dream to compare with
    assert summary["behaviour_mean_return"] is None
    assert summary["dream_mean_return"] is None
    assert summary["dream_real_gap"] is None


def test_evaluating_twice_gives_the_same_numbers(cli, dreamed_pendulum_policy):
    first = evaluate(cli, dreamed_pendulum_policy)
    second = evaluate(cli, dreamed_pendulum_policy)

    assert first == second


def test_the_seed_chooses_the_reset_seeds(cli, dreamed_pendulum_policy):
    default = evaluate(cli, dreamed_pendulum_policy)
    other = evaluate(cli, dreamed_pendulum_policy, "--seed", 1)

    returns = deterministic_returns(dreamed_pendulum_policy, reset_seeds(1, 3, EVALUATION_STREAM))
    assert other["mean_return"] == pytest.approx(returns.mean(), rel=1e-6)
    assert other["mean_return"] != default["mean_return"]


def test_evaluating_a_directory_without_a_policy_fails_in_one_line(cli, tmp_path, pendulum_world_model):
    for directory in (tmp_path, pendulum_world_model, tmp_path / "missing"):
        code, out, err = cli("evaluate", "--policy", directory, "--episodes", 3, "--json")

        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1 and err.startswith("dreamer: error: "), err
        assert str(directory) in err and "policy.json" in err


def test_evaluate_refuses_seeds_the_policys_run_recorded_training_episodes_from(cli, tmp_path, dreamed_pendulum_policy):
    run = tmp_path / "run"
    shutil.copytree(dreamed_pendulum_policy, run)
    task = get_task("pendulum")
    used = reset_seeds(0, 3, EVALUATION_STREAM)[1:2]
    write_traces(run / "traces", record_episodes(task, RandomPolicy(task.action_space), used, progress=False), task)

    code, out, err = cli("evaluate", "--policy", run, "--episodes", 3, "--json")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "--seed" in err, err

    assert evaluate(cli, run, "--seed", 1)["episodes"] == 3


# -- the held-out form: replaying the episodes of a trace file --------------------------


def evaluate_heldout(cli, policy, traces, *extra) -> dict:
    code, out, err = cli("evaluate", "--policy", policy, "--traces", traces, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_replaying_the_behaviour_policy_reproduces_its_recorded_returns(cli, tmp_path, dreamed_pendulum_policy):
    traces = tmp_path / "behaviour"
    code, _, err = cli("collect", "--task", "pendulum", "--policy", dreamed_pendulum_policy, "--episodes", 5,
                       "--out", traces)
    assert code == 0, err

    result = evaluate_heldout(cli, dreamed_pendulum_policy, traces, "--split", "all")["heldout"]

    recorded = read_traces(traces).episodes
    assert [e["seed"] for e in result["episodes"]] == recorded.seeds.tolist()
    for episode in result["episodes"]:
        assert episode["real_return"] == pytest.approx(episode["behaviour_return"], rel=1e-5)
    assert result["summary"]["improvement"] == pytest.approx(0.0, abs=1e-3)


def test_the_heldout_form_replays_heldout_episodes_only(cli, tmp_path, dreamed_pendulum_policy, pendulum_world_model):
    task = get_task("pendulum")
    traces = tmp_path / "random"
    write_traces(traces, record_episodes(task, RandomPolicy(task.action_space), reset_seeds(3, 20), progress=False), task)

    summary = evaluate_heldout(cli, dreamed_pendulum_policy, traces, "--world-model", pendulum_world_model)

    episodes = read_traces(traces).episodes
    heldout = heldout_episodes(episodes)
    train, validation = fitting_episodes(episodes)
    replayed = [e["seed"] for e in summary["heldout"]["episodes"]]
    assert replayed == heldout.seeds.tolist()
    assert set(replayed).isdisjoint(train.seeds.tolist() + validation.seeds.tolist())
    assert [e["behaviour_return"] for e in summary["heldout"]["episodes"]] == pytest.approx(heldout.returns().tolist())
    real = deterministic_returns(dreamed_pendulum_policy, heldout.seeds)
    assert [e["real_return"] for e in summary["heldout"]["episodes"]] == pytest.approx(real.tolist(), rel=1e-5)
    dream = [e["dream_return"] for e in summary["heldout"]["episodes"]]
    assert all(np.isfinite(dream))
    gap = np.abs(np.array(dream) - real)
    assert summary["dream_real_gap"] == pytest.approx(gap.mean(), rel=1e-5)
    low, high = summary["heldout"]["summary"]["gap_abs_ci95"]
    assert low <= gap.mean() <= high


def test_a_trace_file_without_heldout_episodes_fails_in_one_line(cli, tmp_path, dreamed_pendulum_policy):
    task = get_task("pendulum")
    traces = tmp_path / "tiny"
    write_traces(traces, record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 1), progress=False), task)
    assert heldout_episodes(read_traces(traces).episodes) is None

    code, out, err = cli("evaluate", "--policy", dreamed_pendulum_policy, "--traces", traces)

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "held-out" in err and "--split all" in err


def test_replaying_the_episodes_a_policy_trained_on_is_refused(cli, online_pendulum_run):
    run, _ = online_pendulum_run

    code, out, err = cli("evaluate", "--policy", run, "--traces", run / "traces", "--split", "all")

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "trained on" in err


def test_a_world_model_of_another_task_is_refused(cli, tmp_path, dreamed_pendulum_policy, online_cartpole_run):
    task = get_task("pendulum")
    traces = tmp_path / "random"
    write_traces(traces, record_episodes(task, RandomPolicy(task.action_space), reset_seeds(3, 20), progress=False), task)

    code, out, err = cli("evaluate", "--policy", dreamed_pendulum_policy, "--traces", traces,
                         "--world-model", online_cartpole_run)

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "cartpole" in err and "pendulum" in err
