"""Stable-Baselines3 and SBX as real-trained arms: RL-Zoo's settings, the protocol's grid,
the protocol's seeds, no pickled policy. Skipped where the [baselines] extra is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from policies.baselines import TrainRealConfig, train_baseline
from policies.protocol import random_policy_return
from policies.stable_baselines import algorithm_class, rl_zoo_settings
from tasks.errors import InputError
from tasks.recording import EVALUATION_STREAM, reset_seeds
from tasks.registry import get_task


def test_a_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sbx", None)  # makes `import sbx` fail, installed or not
    with pytest.raises(InputError, match=r"sbx:SAC needs sbx: pip install -e \"\.\[baselines\]\""):
        algorithm_class("sbx:SAC")


def test_rl_zoo_settings_are_the_zoos_and_a_fresh_copy():
    cartpole = rl_zoo_settings("sb3:PPO", "CartPole-v1")
    assert {k: cartpole[k] for k in ("n_envs", "n_steps", "batch_size", "n_epochs", "gamma")} == {
        "n_envs": 8, "n_steps": 32, "batch_size": 256, "n_epochs": 20, "gamma": 0.98}
    assert cartpole["learning_rate"](1.0) == pytest.approx(0.001) and cartpole["learning_rate"](0.5) == pytest.approx(0.0005)
    assert rl_zoo_settings("sbx:SAC", "Pendulum-v1") == rl_zoo_settings("sb3:SAC", "Pendulum-v1") == {"learning_rate": 1e-3}
    assert rl_zoo_settings("sb3:SAC", "Hopper-v5") == {}  # not tuned there: the library's defaults
    cartpole.pop("n_envs")
    assert "n_envs" in rl_zoo_settings("sb3:PPO", "CartPole-v1")


def test_first_resets_come_from_the_protocols_training_seeds():
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.vec_env import DummyVecEnv

    from policies.stable_baselines import _FirstResetSeed

    task = get_task("pendulum")
    seeds = [11, 12345]
    environments = DummyVecEnv([lambda s=s: _FirstResetSeed(task.make_env(), s) for s in seeds])
    environments.seed(0)  # what the libraries do with their own seed: overruled on the first reset
    first = environments.reset()
    expected = [task.make_env().reset(seed=s)[0] for s in seeds]
    np.testing.assert_allclose(first, np.stack(expected), rtol=1e-6)
    environments.close()


@pytest.mark.parametrize(("task_name", "algo", "steps"), [("pendulum", "sb3:SAC", 400), ("cartpole", "sb3:PPO", 512),
                                                          ("pendulum", "sbx:SAC", 400)])
def test_library_arms_are_measured_on_the_protocols_grid(tmp_path, task_name, algo, steps):
    pytest.importorskip("stable_baselines3" if algo.startswith("sb3") else "sbx")
    task = get_task(task_name)
    config = TrainRealConfig(task=task_name, out=str(tmp_path / "run"), algo=algo, steps=steps, eval_every=200,
                             eval_episodes=3, seed=7)

    summary = train_baseline(config)

    evaluations = summary["evaluations"]
    assert [e["real_steps"] for e in evaluations] == list(range(0, steps + 1, 200))
    # before any learning every arm of seed 7 shows the same random policy on the same seeds
    random_return, _ = random_policy_return(task, reset_seeds(7, 3, EVALUATION_STREAM), 7)
    assert evaluations[0]["mean_return"] == pytest.approx(random_return)
    assert summary["algorithm"] == algo and summary["real_steps"] >= steps
    assert summary["eval_steps"] > 0 and np.isfinite(summary["final_mean_return"])
    assert not (tmp_path / "run" / "policy.json").exists()  # the libraries pickle: nothing to load
    assert (tmp_path / "run" / "summary.json").exists()
