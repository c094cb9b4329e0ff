"""The loop every real-trained baseline shares: collect a chunk, learn from it, evaluate.

A learner (PPO, SAC) decides how it acts and what one chunk of real transitions
teaches it; this loop steps the real environments, counts real steps, and measures the
deterministic policy on fixed fresh reset seeds every ``evaluate_every`` steps, the same
protocol the dream-trained arm is measured with.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from policies.acting import ActorPolicy
from policies.networks import Actor
from policies.real_collection import Chunk, VectorCollector, real_vector_env
from tasks.episodes import Episodes
from tasks.recording import record_episodes
from tasks.registry import Task


class Learner(Protocol):
    """What the loop needs from a trainer."""

    steps_per_chunk: int

    def act(self, observations: np.ndarray) -> np.ndarray: ...

    def learn(self, chunk: Chunk) -> dict[str, float]: ...

    @property
    def actor(self) -> Actor: ...


def evaluation_episodes(task: Task, actor: Actor, seeds: Sequence[int]) -> Episodes:
    """The deterministic actor's real episodes, one from each reset seed, all side by side."""
    return record_episodes(task, ActorPolicy(actor), seeds, num_envs=len(seeds), progress=False)


def train_on_real(
    task: Task,
    learner: Learner,
    total_steps: int,
    training_seeds: Sequence[int],
    evaluation_seeds: Sequence[int],
    evaluate_every: int,
    log: Callable[[int, dict], None] | None = None,
    progress: bool | None = None,
    environments: gym.vector.VectorEnv | None = None,
) -> list[dict]:
    """Train ``learner`` for ``total_steps`` steps (rounded up to whole chunks).

    Args:
        task: the real environment, always the one evaluations run in.
        learner: the trainer.
        total_steps: steps to collect, over all environments.
        training_seeds: first reset seed of each training environment (their number is
            the number of environments).
        evaluation_seeds: reset seeds of the evaluation episodes, disjoint from training.
        evaluate_every: real steps between evaluations; the last chunk is always evaluated.
        log: called as ``log(real_steps, metrics)`` after every chunk.
        progress: show a progress bar on stderr (default: when stderr is a terminal).
        environments: where to learn, in ``SAME_STEP`` autoreset mode (default: the
            task's real environments); a dream environment trains a policy in a world
            model while it is still measured in reality.

    Returns:
        The evaluations: ``{"real_steps", "mean_return", "std_return", "eval_steps"}`` each
        (``eval_steps``: all evaluation steps so far).
    """
    progress = sys.stderr.isatty() if progress is None else progress
    started = time.perf_counter()
    owned = environments is None  # close only the environments made here
    environments = environments or real_vector_env(task, len(training_seeds))
    collector = VectorCollector(environments, training_seeds)
    evaluations: list[dict] = []
    eval_steps = 0  # real steps spent measuring, never learned from
    next_evaluation = evaluate_every
    bar = tqdm(total=total_steps, unit="step", desc=f"train-real {task.name}", disable=not progress, file=sys.stderr)
    try:
        while collector.steps < total_steps:
            chunk = collector.collect(learner.act, learner.steps_per_chunk)
            metrics = learner.learn(chunk)
            bar.update(chunk.rewards.size)
            finished = collector.take_finished_returns()
            if finished:
                metrics["episode_return"] = float(np.mean(finished))
            if collector.steps >= next_evaluation or collector.steps >= total_steps:
                episodes = evaluation_episodes(task, learner.actor, evaluation_seeds)
                returns = episodes.returns()
                eval_steps += episodes.num_steps
                evaluations.append({"real_steps": collector.steps, "mean_return": float(returns.mean()),
                                    "std_return": float(returns.std()), "eval_steps": eval_steps})
                metrics["real_return"] = float(returns.mean())
                metrics["real_return_std"] = float(returns.std())
                bar.set_postfix(real_return=f"{returns.mean():.1f}")
                while next_evaluation <= collector.steps:
                    next_evaluation += evaluate_every
            metrics["wall_seconds"] = time.perf_counter() - started
            if log is not None:
                log(collector.steps, metrics)
    finally:
        bar.close()
        if owned:
            collector.close()
    return evaluations
