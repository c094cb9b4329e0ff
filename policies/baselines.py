"""A baseline trained on the real environment (PPO or SAC), measured through the protocol.

The project's own JAX PPO and SAC are the default; ``sb3:SAC``, ``sb3:PPO`` and
``sbx:SAC`` train Stable-Baselines3's or SBX's with RL-Zoo's settings
(`policies.stable_baselines`, the optional ``[baselines]`` extra).

It is measured exactly as a dream-trained policy is: the deterministic actor on the same
fresh reset seeds (for the same seed), at every point of the evaluation grid. Environment
states cannot be checkpointed, so a killed baseline starts over: its run directory stays
pending until the summary, and the next run in that folder clears it.
`dreamer train-real` and the real arm of `dreamer compare` are both `train_baseline`.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np

from policies.ppo import PPO, PPOConfig
from policies.protocol import DEFAULT_EVAL_EVERY, protocol_summary
from policies.real_training import train_on_real
from policies.sac import SAC, SACConfig
from policies.saving import save_policy
from policies.stable_baselines import is_stable_baselines, train_stable_baselines
from tasks.config import config, option
from tasks.errors import InputError
from tasks.recording import EVALUATION_STREAM, REAL_TRAINING_STREAM, reset_seeds
from tasks.registry import ENV_KWARGS_HELP, TASK_HELP, get_task
from tasks.run_directory import RunDirectory


Algorithm = Literal["ppo", "sac", "sb3:SAC", "sb3:PPO", "sbx:SAC"]


@config
class TrainRealConfig:
    """A real-trained baseline: which algorithm, how many real steps, how it is evaluated."""

    task: str = option(help=TASK_HELP)
    out: str = option(help="run directory to write")
    env_kwargs: dict = option({}, help=ENV_KWARGS_HELP)
    algo: Algorithm | None = option(None, help="ppo or sac (default: sac for continuous actions, ppo for discrete); "
                                               "sb3:SAC, sb3:PPO or sbx:SAC with the [baselines] extra")
    steps: int = option(20000, min=1, help="real environment steps to train for (rounded up to whole rollouts)")
    eval_every: int = option(DEFAULT_EVAL_EVERY, min=1, help="the evaluation grid's spacing in real steps")
    eval_episodes: int = option(10, min=1, help="deterministic evaluation episodes on fresh seeds")
    sac: SACConfig = option(SACConfig(), help="SAC settings")
    ppo: PPOConfig = option(PPOConfig(), help="PPO settings")
    seed: int = option(0, help="seed of the weights, the exploration and the reset seeds")


def default_algorithm(task) -> str:
    return "ppo" if hasattr(task.action_space, "n") else "sac"


def chosen_algorithm(task, algo: str | None) -> str:
    """``algo``, or the task's default; an InputError if it cannot act in the task."""
    algo = algo or default_algorithm(task)
    if algo.lower().endswith("sac") and hasattr(task.action_space, "n"):
        raise InputError(task.name, f"has discrete actions; {algo} needs continuous ones (use --algo ppo)")
    return algo


def algo_label(algo: str) -> str:
    """How reports name an algorithm: SAC, PPO, SB3 SAC, SBX SAC."""
    return algo.upper().replace(":", " ")


def train_baseline(config: TrainRealConfig) -> dict:
    """Train, evaluate on the grid, save the policy into ``config.out``; the run's summary.

    A Stable-Baselines3 or SBX policy is not saved (they save with pickle, which this
    project never loads): its run keeps the summary and the log.
    """
    started = time.perf_counter()
    task = get_task(config.task, config.env_kwargs)
    algo = chosen_algorithm(task, config.algo)
    evaluation_seeds = reset_seeds(config.seed, config.eval_episodes, EVALUATION_STREAM)
    with RunDirectory(config.out, config, resumable=False) as run_dir:
        if is_stable_baselines(algo):
            trained = train_stable_baselines(
                task, algo, config.steps,
                training_seeds=lambda count: reset_seeds(config.seed, count, REAL_TRAINING_STREAM),
                evaluation_seeds=evaluation_seeds, eval_every=config.eval_every, log=run_dir.log, seed=config.seed,
            )
        else:
            learner, num_envs = _own_learner(task, algo, config)
            trained = train_on_real(
                task, learner, config.steps,
                training_seeds=reset_seeds(config.seed, num_envs, REAL_TRAINING_STREAM),
                evaluation_seeds=evaluation_seeds, eval_every=config.eval_every, log=run_dir.log, seed=config.seed,
            )
            save_policy(config.out, learner.actor, task, {"trained_by": f"dreamer train-real ({algo})"})
        summary = {
            "algorithm": algo,
            "task": task.name,
            "real_steps": trained.real_steps,
            "eval_steps": trained.eval_steps,
            "wall_seconds": time.perf_counter() - started,
            **protocol_summary(trained.evaluations, trained.final_mean_return, task.reward_threshold),
        }
        run_dir.write_summary(summary)
    return summary


def _own_learner(task, algo: str, config: TrainRealConfig):
    """The project's SAC or PPO for ``task``, and how many environments it steps."""
    observation_size = int(np.prod(task.observation_space.shape))
    if algo == "sac":
        return SAC(observation_size, task.action_space, config.sac, config.steps, config.seed), 1
    return PPO(observation_size, task.action_space, config.ppo, config.steps, config.seed), config.ppo.num_envs
