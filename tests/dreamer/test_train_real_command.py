"""`dreamer train-real`: a baseline trained on the real environment, measured as the dream arm is."""

from __future__ import annotations

import json

import pytest

from policies.saving import load_actor


@pytest.fixture(scope="module")
def ppo_cartpole_run(tmp_path_factory):
    from dreamer.cli import main

    out = tmp_path_factory.mktemp("real") / "ppo-cartpole"
    code = main(["train-real", "--task", "cartpole", "--steps", "2048", "--eval-every", "1024",
                 "--eval-episodes", "3", "--out", str(out), "--json"])
    assert code == 0
    return out


def test_train_real_writes_a_run_directory_with_its_learning_curve(ppo_cartpole_run, read_metrics):
    summary = json.loads((ppo_cartpole_run / "summary.json").read_text())

    assert summary["algorithm"] == "ppo" and summary["task"] == "cartpole"
    # the protocol's grid: the random policy at 0, then the policy in force at each point
    assert [e["real_steps"] for e in summary["evaluations"]] == [0, 1024, 2048]
    assert summary["real_steps"] == 2048
    assert summary["final_mean_return"] == summary["evaluations"][-1]["mean_return"]
    # evaluation steps are counted apart from the 2048 learned from: the random policy's
    # and two evaluations (chunks of 256 steps end at 1024 and 2048), 3 episodes of 8+ steps each
    assert summary["eval_steps"] >= 3 * 3 * 8
    assert summary["reward_threshold"] == 475
    evaluated = [line for line in read_metrics(ppo_cartpole_run) if "real_return" in line]
    assert [line["step"] for line in evaluated] == [1024, 2048]
    assert [line["real_return"] for line in evaluated] == [e["mean_return"] for e in summary["evaluations"][1:]]
    _, task, spec = load_actor(ppo_cartpole_run)
    assert task.name == "cartpole" and spec["trained_by"] == "dreamer train-real (ppo)"
    assert spec["network"]["activation"] == "tanh"


def test_the_saved_policy_scores_what_its_last_evaluation_reported(cli, ppo_cartpole_run):
    """`evaluate` with the same seed replays the same fresh reset seeds the run evaluated on."""
    summary = json.loads((ppo_cartpole_run / "summary.json").read_text())

    code, out, err = cli("evaluate", "--policy", ppo_cartpole_run, "--episodes", 3, "--json")

    assert code == 0, err
    assert json.loads(out)["mean_return"] == pytest.approx(summary["final_mean_return"])


def test_sac_on_discrete_actions_fails_in_one_line(cli, tmp_path):
    code, out, err = cli("train-real", "--task", "cartpole", "--algo", "sac", "--out", tmp_path / "run")

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "--algo ppo" in err
    assert not (tmp_path / "run").exists()


def test_an_unknown_algorithm_fails_in_one_line(cli, tmp_path):
    code, out, err = cli("train-real", "--task", "pendulum", "--algo", "dqn", "--out", tmp_path / "run")

    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "ppo, sac" in err


def test_an_existing_run_directory_is_refused_without_suggesting_a_resume(cli, ppo_cartpole_run):
    code, out, err = cli("train-real", "--task", "cartpole", "--steps", 2048, "--out", ppo_cartpole_run)

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "choose another --out" in err and "--resume" not in err
