"""``dreamer train-real``: a baseline trained on the real environment (PPO or SAC).

It is measured exactly as the dream-trained policy is: the deterministic actor on the
same fresh reset seeds (for the same ``--seed``), every ``--eval-every`` real steps.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np

from dreamer.online import outcome_text, steps_to_threshold
from policies.ppo import PPO, PPOConfig
from policies.real_training import train_on_real
from policies.sac import SAC, SACConfig
from policies.saving import save_policy
from tasks.config import config, option
from tasks.errors import InputError
from tasks.recording import EVALUATION_STREAM, REAL_TRAINING_STREAM, reset_seeds
from tasks.registry import get_task
from tasks.run_directory import RunDirectory


@config
class TrainRealConfig:
    task: str = option(help="task name or gym:ENV_ID")
    out: str = option(help="run directory to write")
    algo: Literal["ppo", "sac"] | None = option(None, help="ppo or sac (default: sac for continuous actions, ppo for discrete)")
    steps: int = option(20000, min=1, help="real environment steps to train for (rounded up to whole rollouts)")
    eval_every: int = option(1000, min=1, help="real steps between evaluations")
    eval_episodes: int = option(10, min=1, help="deterministic evaluation episodes on fresh seeds")
    sac: SACConfig = option(SACConfig(), help="SAC settings")
    ppo: PPOConfig = option(PPOConfig(), help="PPO settings")
    seed: int = option(0, help="seed of the weights, the exploration and the reset seeds")


def default_algorithm(task) -> str:
    return "ppo" if hasattr(task.action_space, "n") else "sac"


def chosen_algorithm(task, algo: str | None) -> str:
    """``algo``, or the task's default; an InputError if it cannot act in the task."""
    algo = algo or default_algorithm(task)
    if algo == "sac" and hasattr(task.action_space, "n"):
        raise InputError(task.name, "has discrete actions; SAC needs continuous ones (use --algo ppo)")
    return algo


def run(config: TrainRealConfig) -> tuple[dict, str]:
    started = time.perf_counter()
    task = get_task(config.task)
    algo = chosen_algorithm(task, config.algo)
    observation_size = int(np.prod(task.observation_space.shape))
    if algo == "sac":
        learner, num_envs = SAC(observation_size, task.action_space, config.sac, config.steps, config.seed), 1
    else:
        learner = PPO(observation_size, task.action_space, config.ppo, config.steps, config.seed)
        num_envs = config.ppo.num_envs
    # Environments' states cannot be checkpointed, so a killed baseline starts over: its run
    # stays pending until the summary, and the next command in its folder clears it.
    with RunDirectory(config.out, config, resumable=False) as run_dir:
        evaluations = train_on_real(
            task, learner, config.steps,
            training_seeds=reset_seeds(config.seed, num_envs, REAL_TRAINING_STREAM),
            evaluation_seeds=reset_seeds(config.seed, config.eval_episodes, EVALUATION_STREAM),
            evaluate_every=config.eval_every, log=run_dir.log,
        )
        save_policy(config.out, learner.actor, task, {"trained_by": f"dreamer train-real ({algo})"})
        summary = {
            "algorithm": algo,
            "task": task.name,
            "real_steps": evaluations[-1]["real_steps"],
            "eval_steps": evaluations[-1]["eval_steps"],
            "wall_seconds": time.perf_counter() - started,
            "final_mean_return": evaluations[-1]["mean_return"],
            "reward_threshold": task.reward_threshold,
            "steps_to_threshold": steps_to_threshold(evaluations, task.reward_threshold),
            "evaluations": evaluations,
        }
        run_dir.write_summary(summary)
    text = (
        f"{task.name} {algo.upper()}: {summary['real_steps']} real steps (+{summary['eval_steps']} for evaluation), "
        f"{summary['wall_seconds']:.0f} s\n" + outcome_text(summary, config.eval_episodes, config.out)
    )
    return summary, text
