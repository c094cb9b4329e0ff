"""A baseline trained on the real environment (PPO or SAC), measured through the protocol.

The project's own JAX PPO and SAC are the default; ``sb3:SAC``, ``sb3:PPO`` and
``sbx:SAC`` train Stable-Baselines3's or SBX's with RL-Zoo's settings
(`policies.stable_baselines`, the optional ``[baselines]`` extra).

It is measured exactly as a dream-trained policy is: the deterministic actor on the same
fresh reset seeds (for the same seed), at every point of the evaluation grid. Environment
states cannot be checkpointed, so a killed baseline starts over: its run directory stays
pending until the summary, and the next run in that folder clears it.
`dreamer train-real` and the real arm of `dreamer compare` are both `train_baseline`;
`train_baselines_in_one_call` trains several seeds of the project's own PPO or SAC as
one program (`policies.seeds`), as the real arm does on an accelerator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Literal

import numpy as np

from policies.ppo import PPO, PPOConfig
from policies.protocol import DEFAULT_EVAL_EVERY, EVAL_EVERY_HELP, grid_presets, protocol_summary
from policies.real_training import train_on_real, train_seeds_on_real
from policies.sac import SAC, SACConfig
from policies.saving import save_policy
from policies.seeds import learner_seeds
from policies.stable_baselines import is_stable_baselines, train_stable_baselines
from tasks.config import config, option
from tasks.errors import InputError
from tasks.recording import EVALUATION_STREAM, REAL_TRAINING_STREAM, reset_seeds
from tasks.registry import ENV_KWARGS_HELP, TASK_HELP, get_task
from tasks.run_directory import RunDirectory


Algorithm = Literal["ppo", "sac", "sb3:SAC", "sb3:PPO", "sbx:SAC"]

# SAC on locomotion as RL-Zoo trains it (Hopper, HalfCheetah): a step size of 3e-4 and
# 10,000 random steps before the first update; our defaults were chosen on Pendulum.
LOCOMOTION_SAC = {"learning_rate": 3e-4, "learning_starts": 10000}
TASK_PRESETS = {task: {**grid, "sac": LOCOMOTION_SAC} for task, grid in grid_presets().items()}


@config
class TrainRealConfig:
    """A real-trained baseline: which algorithm, how many real steps, how it is evaluated."""

    task: str = option(help=TASK_HELP)
    out: str = option(help="run directory to write")
    env_kwargs: dict = option({}, help=ENV_KWARGS_HELP)
    algo: Algorithm | None = option(None, help="ppo or sac (default: sac for continuous actions, ppo for discrete); "
                                               "sb3:SAC, sb3:PPO or sbx:SAC with the [baselines] extra")
    steps: int = option(20000, min=1, help="real environment steps to train for (rounded up to whole rollouts)")
    eval_every: int = option(DEFAULT_EVAL_EVERY, min=1, help=EVAL_EVERY_HELP)
    eval_episodes: int = option(10, min=1, help="deterministic evaluation episodes on fresh seeds")
    sac: SACConfig = option(SACConfig(), help="SAC settings (hopper, halfcheetah: learning rate 3e-4, "
                                              "10000 learning starts)")
    ppo: PPOConfig = option(PPOConfig(), help="PPO settings")
    seed: int = option(0, help="seed of the weights, the exploration and the reset seeds")

    # Defaults that --task changes (`dreamer.config.with_presets`).
    presets = {"task": TASK_PRESETS}


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
        summary = _summary(algo, task, trained, time.perf_counter() - started)
        run_dir.write_summary(summary)
    return summary


def train_baselines_in_one_call(configs: Sequence[TrainRealConfig]) -> list[dict]:
    """`train_baseline` for several seeds of one baseline, as one program: their learners
    act and learn together, vmapped over the seeds (`policies.seeds`).

    Each seed's run directory gets what `train_baseline` writes for it, with results
    equal to float tolerance; its ``wall_seconds`` is the whole call's, shared by all.

    Args:
        configs: one per seed, alike but for ``seed`` and ``out``.

    Raises:
        ValueError: the configs differ in more than seed and run directory, or name a
            Stable-Baselines3 or SBX algorithm (those train one by one).
    """
    started = time.perf_counter()
    first = configs[0]
    for run_config in configs[1:]:
        if dataclasses.replace(run_config, seed=first.seed, out=first.out) != first:
            raise ValueError("seeds trained in one call differ only in seed and run directory")
    task = get_task(first.task, first.env_kwargs)
    algo = chosen_algorithm(task, first.algo)
    if is_stable_baselines(algo):
        raise ValueError(f"{algo} trains its seeds one by one (train_baseline)")
    seeds = [run_config.seed for run_config in configs]
    with contextlib.ExitStack() as stack:
        run_dirs = [stack.enter_context(RunDirectory(run_config.out, run_config, resumable=False))
                    for run_config in configs]
        learners, num_envs = zip(*(_own_learner(task, algo, run_config) for run_config in configs))
        together = learner_seeds(learners)
        trained = train_seeds_on_real(
            task, together, first.steps,
            training_seeds=[reset_seeds(seed, num_envs[0], REAL_TRAINING_STREAM) for seed in seeds],
            evaluation_seeds=[reset_seeds(seed, first.eval_episodes, EVALUATION_STREAM) for seed in seeds],
            seeds=seeds, eval_every=first.eval_every, logs=[run_dir.log for run_dir in run_dirs],
        )
        summaries = []
        for index, (run_config, run_dir) in enumerate(zip(configs, run_dirs)):
            save_policy(run_config.out, together.actor(index), task, {"trained_by": f"dreamer train-real ({algo})"})
            summaries.append(_summary(algo, task, trained[index], time.perf_counter() - started))
            run_dir.write_summary(summaries[-1])
    return summaries


def _summary(algo: str, task, trained, wall_seconds: float) -> dict:
    return {
        "algorithm": algo,
        "task": task.name,
        "real_steps": trained.real_steps,
        "eval_steps": trained.eval_steps,
        "wall_seconds": wall_seconds,
        **protocol_summary(trained.evaluations, trained.final_mean_return, task.reward_threshold),
    }


def _own_learner(task, algo: str, config: TrainRealConfig):
    """The project's SAC or PPO for ``task``, and how many environments it steps."""
    observation_size = int(np.prod(task.observation_space.shape))
    if algo == "sac":
        return SAC(observation_size, task.action_space, config.sac, config.steps, config.seed), 1
    return PPO(observation_size, task.action_space, config.ppo, config.steps, config.seed), config.ppo.num_envs
