"""The gymnasium export end to end: the project's PPO learns in `dreamer/Dream-v0`,
knowing nothing of world models, and the policy holds up in the real CartPole."""

from __future__ import annotations

import gymnasium as gym
import pytest

from policies.ppo import PPO, PPOConfig
from policies.real_training import evaluation_episodes, train_on_real
from tasks.recording import EVALUATION_STREAM, reset_seeds
from tasks.registry import get_task
from worldmodel.registration import DREAM_ENV_ID  # importing worldmodel registers it

DREAM_STEPS = 50_000


@pytest.mark.slow
def test_ppo_trained_in_the_dream_balances_the_real_cartpole(cli, tmp_path):
    traces, model = tmp_path / "random", tmp_path / "wm-cartpole"
    assert cli("collect", "--task", "cartpole", "--episodes", 200, "--out", traces)[0] == 0
    assert cli("fit", "--traces", traces, "--out", model, "--ensemble.members", 5, "--ensemble.elites", 3,
               "--ensemble.hidden-size", 64, "--ensemble.hidden-layers", 2, "--fit.max-updates", 2000)[0] == 0
    task = get_task("cartpole")
    config = PPOConfig()
    dreams = gym.make_vec(DREAM_ENV_ID, num_envs=config.num_envs, world_model=str(model),
                          autoreset_mode="same_step", with_uncertainty=False)
    learner = PPO(4, task.action_space, config, DREAM_STEPS, seed=0)
    evaluation_seeds = reset_seeds(0, 10, EVALUATION_STREAM)
    before = evaluation_episodes(task, learner.actor, evaluation_seeds).returns().mean()

    train_on_real(task, learner, DREAM_STEPS, list(range(config.num_envs)), evaluation_seeds,
                  eval_every=DREAM_STEPS, progress=False, environments=dreams)

    after = evaluation_episodes(task, learner.actor, evaluation_seeds).returns().mean()
    assert before < 100
    assert after >= 400
