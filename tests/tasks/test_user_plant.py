"""A user's own plant: ``gym:MODULE:ENV_ID`` imports MODULE, ``--env-kwargs`` reaches
``gym.make``, and trace files and saved policies record both, so a fresh process that
reads them makes the same environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import nnx

from policies.networks import Actor, NetworkConfig
from policies.saving import save_policy
from tasks.errors import InputError
from tasks.registry import get_task, task_from_record
from tasks.traces import read_traces

PLANT = "gym:dreamer_test_plant:DreamerTestPlant-v0"


@pytest.fixture()
def plant_path(tmp_path_factory, monkeypatch):
    """A folder holding ``dreamer_test_plant.py``, a Pendulum with a friction argument, on sys.path."""
    folder = tmp_path_factory.mktemp("plant")
    (folder / "dreamer_test_plant.py").write_text(textwrap.dedent('''
        import gymnasium as gym
        from gymnasium.envs.classic_control.pendulum import PendulumEnv

        class Plant(PendulumEnv):
            def __init__(self, g=10.0, friction=0.0, render_mode=None):
                super().__init__(render_mode=render_mode, g=g)
                self.friction = friction

        gym.register("DreamerTestPlant-v0", entry_point="dreamer_test_plant:Plant", max_episode_steps=200)
    '''))
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_the_module_is_imported_and_the_arguments_reach_the_environment(plant_path):
    task = get_task(PLANT, {"g": 5.0, "friction": 0.1})
    env = task.make_env()
    assert (env.unwrapped.g, env.unwrapped.friction) == (5.0, 0.1)
    assert env.spec.max_episode_steps == 200
    env.close()
    assert task.record() == {"task": PLANT, "env_kwargs": {"friction": 0.1, "g": 5.0}}
    assert task_from_record(task.record()) == task
    assert get_task(PLANT).record() == {"task": PLANT}  # no arguments, nothing recorded
    assert get_task("pendulum", {"g": 2.0}).make_env().unwrapped.g == 2.0  # registered tasks take them too


def test_bad_modules_and_arguments_are_input_errors(plant_path):
    with pytest.raises(InputError, match="cannot import no_such_plant_module"):
        get_task("gym:no_such_plant_module:Plant-v0")
    with pytest.raises(InputError, match="does not take them.*speed"):
        get_task(PLANT, {"speed": 3})
    with pytest.raises(InputError, match="JSON object"):
        get_task(PLANT, [5.0])


def test_a_fresh_process_reads_the_plant_back_from_traces_and_policies(plant_path, tmp_path, cli_env):
    environment = {**cli_env, "PYTHONPATH": os.pathsep.join([str(plant_path), cli_env.get("PYTHONPATH", "")])}

    def dreamer(*argv):
        done = subprocess.run([sys.executable, "-m", "dreamer.cli", *map(str, argv)], env=environment,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    traces = tmp_path / "traces"
    dreamer("collect", "--task", PLANT, "--env-kwargs", '{"g": 5.0}', "--episodes", 2, "--out", traces, "--json")
    recorded = read_traces(traces)
    assert recorded.task.name == PLANT and recorded.task.env_kwargs == {"g": 5.0}
    assert recorded.episodes.num_episodes == 2

    task = get_task(PLANT, {"g": 5.0})
    run_dir = tmp_path / "policy"
    save_policy(run_dir, Actor(3, task.action_space, NetworkConfig(hidden_size=8), nnx.Rngs(0)), task)
    assert json.loads((run_dir / "policy.json").read_text())["env_kwargs"] == {"g": 5.0}
    evaluated = dreamer("evaluate", "--policy", run_dir, "--episodes", 2, "--json")
    assert evaluated["task"] == PLANT and np.isfinite(evaluated["mean_return"])


def test_a_comparisons_reproduce_command_gives_back_its_arguments():
    import shlex

    from dreamer.cli import build_parser
    from dreamer.comparison import CompareConfig, command_line
    from dreamer.config import config_from_args

    config = CompareConfig(task=PLANT, env_kwargs={"g": 5.0, "name": "a b"}, out="reports/my plant", seeds=2)
    words = shlex.split(command_line(config))
    assert words[:2] == ["dreamer", "compare"]
    parsed = config_from_args(CompareConfig, build_parser().parse_args(words[1:]))
    assert parsed.env_kwargs == config.env_kwargs and parsed.out == config.out
