"""`dreamer run`: learning on the job within a hard budget of real steps.

Both runs are tiny but real (gymnasium environments, Minari trace files, orbax
checkpoints); each takes 20-40 s on a 2-core CPU, mostly compiling, so they are slow.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from policies.saving import load_actor
from tasks.recording import EVALUATION_STREAM, ONLINE_ROUND_STREAM, reset_seeds
from tasks.traces import read_traces
from worldmodel.saving import load

pytestmark = pytest.mark.slow

RUN_FILES = ("policy.json", "model.json", "config.yaml", "summary.json", "metrics.jsonl")


def test_real_steps_is_a_hard_cap_that_cuts_the_last_episode(online_pendulum_run):
    run, _ = online_pendulum_run
    summary = json.loads((run / "summary.json").read_text())
    episodes = read_traces(run / "traces").episodes

    assert summary["real_steps"] == 450
    assert episodes.num_steps == 450
    assert list(episodes.lengths) == [200, 200, 50]
    # the cut episode is recorded as truncated, not terminated
    assert episodes.truncations[-1] and not episodes.terminations.any()
    # the first round's random steps and each later round come from their own seed streams
    assert list(episodes.seeds) == [reset_seeds(0, 1, ONLINE_ROUND_STREAM + r)[0] for r in range(3)]


def test_evaluation_episodes_are_counted_apart_and_never_recorded(online_pendulum_run, eval_episodes):
    run, _ = online_pendulum_run
    summary = json.loads((run / "summary.json").read_text())
    episodes = read_traces(run / "traces").episodes

    assert summary["rounds"] == 3
    # the random policy's evaluation (the grid's value at 0), then one after each round
    assert summary["eval_steps"] == (summary["rounds"] + 1) * eval_episodes * 200
    evaluation_seeds = set(reset_seeds(0, eval_episodes, EVALUATION_STREAM).tolist())
    assert evaluation_seeds.isdisjoint(episodes.seeds.tolist())
    # the protocol's grid up to the 450-step budget: rounds end at 200, 400 and 450
    assert [e["real_steps"] for e in summary["evaluations"]] == [0, 200, 400]


def test_the_grid_holds_the_policy_in_force_at_each_point(online_pendulum_run, read_metrics):
    run, _ = online_pendulum_run
    summary = json.loads((run / "summary.json").read_text())
    per_round = [line["real_return"] for line in read_metrics(run)]  # after rounds ending at 200, 400, 450
    assert [e["mean_return"] for e in summary["evaluations"][1:]] == per_round[:2]
    assert summary["final_mean_return"] == per_round[-1]


def test_a_run_logs_one_metrics_line_per_round(online_pendulum_run, read_metrics):
    run, _ = online_pendulum_run
    lines = read_metrics(run)

    assert [line["step"] for line in lines] == [200, 400, 450]
    for line in lines:
        for name in ("real_return", "dream_return", "world_model_validation_loss"):
            assert math.isfinite(line[name]), (name, line)
    assert [line["episodes"] for line in lines] == [1, 2, 3]


def test_a_run_writes_a_loadable_policy_and_world_model(online_pendulum_run):
    run, _ = online_pendulum_run

    for name in RUN_FILES:
        assert (run / name).is_file(), name
    actor, task, spec = load_actor(run)
    assert task.name == "pendulum" and spec["trained_by"] == "dreamer run" and not actor.discrete
    model = load(run)
    assert model.observation_shape == (3,) and not model.discrete_actions


def test_evaluating_a_runs_policy_on_its_evaluation_seeds_reproduces_its_final_evaluation(
    cli, online_pendulum_run, eval_episodes
):
    run, _ = online_pendulum_run
    summary = json.loads((run / "summary.json").read_text())

    code, out, err = cli("evaluate", "--policy", run, "--episodes", eval_episodes, "--json")

    assert code == 0, err
    assert json.loads(out)["mean_return"] == summary["final_mean_return"]


def test_run_json_prints_exactly_one_object_on_stdout(online_pendulum_run):
    run, stdout = online_pendulum_run

    assert len(stdout.splitlines()) == 1 and stdout.endswith("\n")
    printed = json.loads(stdout)
    assert isinstance(printed, dict)
    assert printed["real_steps"] == 450 and printed["eval_steps"] == 1600
    assert isinstance(printed["wall_seconds"], float) and printed["wall_seconds"] > 0
    assert printed == json.loads((run / "summary.json").read_text())


def test_a_run_on_a_discrete_task_writes_the_same_files(online_cartpole_run, read_metrics, eval_episodes):
    run = online_cartpole_run
    summary = json.loads((run / "summary.json").read_text())
    episodes = read_traces(run / "traces").episodes

    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert summary["real_steps"] == episodes.num_steps == 300
    assert summary["rounds"] == len(read_metrics(run)) >= 2
    # CartPole episodes end early, so evaluation lasts between one and 500 steps an episode
    evaluations = summary["rounds"] + 1  # the random policy's, then one after each round
    assert evaluations * eval_episodes <= summary["eval_steps"] <= evaluations * eval_episodes * 500
    assert set(reset_seeds(0, eval_episodes, EVALUATION_STREAM).tolist()).isdisjoint(episodes.seeds.tolist())
    actor, task, _ = load_actor(run)
    assert task.name == "cartpole" and actor.discrete
    assert load(run).discrete_actions
    assert np.isin(episodes.actions, [0, 1]).all()
