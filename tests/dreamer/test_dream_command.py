"""`dreamer dream`: a policy trained purely in a fitted world model, from a fixed trace file."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from policies.saving import load_actor
from tasks.splits import fitting_episodes, recorded_split
from tasks.traces import read_traces
from worldmodel.saving import load


def test_dream_refuses_a_directory_without_a_fitted_model_in_one_line(cli, tmp_path, dream_argv, pendulum_trace_file):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()

    for world_model in (not_a_model, pendulum_trace_file, tmp_path / "missing"):
        code, out, err = cli(*dream_argv(world_model, tmp_path / "out", 30))

        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1 and err.startswith("dreamer: error: "), err
        assert str(world_model) in err and "model.json" in err
    assert not (tmp_path / "out").exists()


def test_a_dream_writes_a_policy_and_a_summary_with_no_real_steps(dreamed_pendulum_policy):
    summary = json.loads((dreamed_pendulum_policy / "summary.json").read_text())
    actor, task, spec = load_actor(dreamed_pendulum_policy)

    assert summary["real_steps"] == 0 and summary["eval_steps"] == 0
    assert summary["updates"] == 30 and summary["task"] == "pendulum"
    assert np.isfinite(summary["final_dream_return"])
    assert task.name == "pendulum" and spec["trained_by"] == "dreamer dream"
    assert (dreamed_pendulum_policy / "config.yaml").is_file()
    assert [line["step"] for line in map(json.loads, (dreamed_pendulum_policy / "metrics.jsonl").read_text().splitlines())] == [10, 20, 30]


def test_dreams_halt_by_default_at_twice_the_largest_disagreement_on_training_transitions(dreamed_pendulum_policy, pendulum_world_model):
    summary = json.loads((dreamed_pendulum_policy / "summary.json").read_text())

    model = load(pendulum_world_model)
    spec = json.loads((pendulum_world_model / "model.json").read_text())
    split_seed, fractions = recorded_split(spec, "model.json")
    train, _ = fitting_episodes(read_traces(spec["traces"]).episodes, split_seed, fractions)
    before, _ = train.transitions()
    disagreement = jax.jit(lambda obs, act: model.uncertainty(model.initial_state(obs), act))(
        jnp.asarray(train.observations[before], jnp.float32), jnp.asarray(train.actions)
    )

    assert summary["halt_threshold"] > 0
    assert summary["halt_threshold"] == pytest.approx(2.0 * float(np.max(disagreement)), rel=1e-5)
    # HALT earns less than any step that goes on: the lowest reward, less the largest penalty
    assert summary["halt_reward"] == pytest.approx(float(np.min(train.rewards)) - 1.0 * summary["halt_threshold"])
    assert summary["uncertainty_penalty"] == 1.0


def test_a_dream_reading_its_traces_in_blocks_halts_where_one_reading_them_whole_does(
        cli, tmp_path, dream_argv, pendulum_world_model, dreamed_pendulum_policy):
    code, out, err = cli(*dream_argv(pendulum_world_model, tmp_path / "run", 10, "--block-steps", 300, "--json"))

    assert code == 0, err
    whole = json.loads((dreamed_pendulum_policy / "summary.json").read_text())
    streamed = json.loads(out)
    # Blocks of 300 steps hold one or two 200-step episodes: the largest disagreement and
    # the lowest reward are taken over many blocks, and come out as over the whole split.
    assert streamed["halt_threshold"] == pytest.approx(whole["halt_threshold"], rel=1e-6)
    assert streamed["halt_reward"] == pytest.approx(whole["halt_reward"], rel=1e-6)


def test_halt_multiple_zero_turns_halting_off(cli, tmp_path, dream_argv, pendulum_world_model):
    code, out, err = cli(*dream_argv(pendulum_world_model, tmp_path / "run", 10, "--halt-multiple", "0", "--json"))

    assert code == 0, err
    summary = json.loads(out)
    assert summary["halt_threshold"] == 0.0 and summary["real_steps"] == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["halt_threshold"] == 0.0
    assert (tmp_path / "run" / "policy.json").is_file()


def test_a_dream_resumes_on_other_devices_which_are_not_among_its_settings(cli, tmp_path, dream_argv,
                                                                           pendulum_world_model, dreamed_pendulum_policy):
    run = tmp_path / "run"
    shutil.copytree(dreamed_pendulum_policy, run)
    config_file = run / "config.yaml"
    config_file.write_text(yaml.safe_dump({**yaml.safe_load(config_file.read_text()), "out": str(run)}, sort_keys=False))

    code, _, err = cli(*dream_argv(pendulum_world_model, run, 30, "--resume", "--devices", "1"))

    assert code == 0, err
    assert "devices" not in yaml.safe_load(config_file.read_text())
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [10, 20, 30]
