"""`dreamer evaluate`: a saved policy's real return, acting deterministically from fresh reset seeds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from policies.acting import ActorPolicy
from policies.saving import load_policy
from tasks.recording import EVALUATION_STREAM, RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.traces import write_traces


def evaluate(cli, policy, *extra) -> dict:
    code, out, err = cli("evaluate", "--policy", policy, "--episodes", 3, "--json", *extra)
    assert code == 0, err
    assert len(out.splitlines()) == 1
    return json.loads(out)


def deterministic_returns(policy_dir, seeds) -> np.ndarray:
    """The returns of the saved actor's mode from each reset seed, recorded here."""
    actor, task, _ = load_policy(policy_dir)
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
