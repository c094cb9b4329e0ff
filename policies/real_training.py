"""The loop every real-trained baseline shares: collect a chunk, learn from it, evaluate.

A learner (PPO, SAC) decides how it acts and what one chunk of real transitions
teaches it; this loop steps the real environments, counts real steps, and measures the
deterministic policy on fixed fresh reset seeds where the evaluation protocol
(`policies.protocol`) needs it: the same grid every arm is measured on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from policies.acting import ActorPolicy
from policies.networks import Actor
from policies.protocol import DEFAULT_EVAL_EVERY, covers, on_grid, random_policy_return
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


class RealTraining(NamedTuple):
    """What training on the real environment measured, through the evaluation protocol.

    Attributes:
        evaluations: ``{"real_steps", "mean_return"}`` at every grid point up to the budget.
        real_steps: real steps learned from (whole chunks, so at least the budget).
        eval_steps: real steps spent only on evaluation.
        final_mean_return: the final policy's mean return.
    """

    evaluations: list[dict]
    real_steps: int
    eval_steps: int
    final_mean_return: float


def train_on_real(
    task: Task,
    learner: Learner,
    total_steps: int,
    training_seeds: Sequence[int],
    evaluation_seeds: Sequence[int],
    eval_every: int = DEFAULT_EVAL_EVERY,
    log: Callable[[int, dict], None] | None = None,
    progress: bool | None = None,
    environments: gym.vector.VectorEnv | None = None,
    seed: int = 0,
) -> RealTraining:
    """Train ``learner`` for ``total_steps`` steps (rounded up to whole chunks).

    The policy learned from the chunks up to real step ``c`` is in force until the next
    chunk ends; it is evaluated when a point of the protocol's grid falls in that span
    (and the final policy always), so every grid point gets the policy in force there.

    Args:
        task: the real environment, always the one evaluations run in.
        learner: the trainer.
        total_steps: steps to collect, over all environments.
        training_seeds: first reset seed of each training environment (their number is
            the number of environments).
        evaluation_seeds: reset seeds of the evaluation episodes, disjoint from training.
        eval_every: the grid's spacing in real steps.
        log: called as ``log(real_steps, metrics)`` after every chunk.
        progress: show a progress bar on stderr (default: when stderr is a terminal).
        environments: where to learn, in ``SAME_STEP`` autoreset mode (default: the
            task's real environments); a dream environment trains a policy in a world
            model while it is still measured in reality.
        seed: seed of the random policy's actions, the grid's value before any learning.
    """
    progress = sys.stderr.isatty() if progress is None else progress
    started = time.perf_counter()
    owned = environments is None  # close only the environments made here
    environments = environments or real_vector_env(task, len(training_seeds))
    collector = VectorCollector(environments, training_seeds)
    random_return, eval_steps = random_policy_return(task, evaluation_seeds, seed)  # real steps spent measuring
    changes: list[dict] = []
    final_return = random_return
    bar = tqdm(total=total_steps, unit="step", desc=f"train-real {task.name}", disable=not progress, file=sys.stderr)
    try:
        while collector.steps < total_steps:
            before = collector.steps
            chunk = collector.collect(learner.act, learner.steps_per_chunk)
            metrics = learner.learn(chunk)
            bar.update(chunk.rewards.size)
            finished = collector.take_finished_returns()
            if finished:
                metrics["episode_return"] = float(np.mean(finished))
            last = collector.steps >= total_steps
            in_force_until = total_steps + 1 if last else 2 * collector.steps - before  # the next chunk's end
            if last or covers(collector.steps, in_force_until, eval_every):
                episodes = evaluation_episodes(task, learner.actor, evaluation_seeds)
                returns = episodes.returns()
                eval_steps += episodes.num_steps
                final_return = float(returns.mean())
                changes.append({"real_steps": collector.steps, "mean_return": final_return})
                metrics["real_return"] = final_return
                metrics["real_return_std"] = float(returns.std())
                bar.set_postfix(real_return=f"{returns.mean():.1f}")
            metrics["wall_seconds"] = time.perf_counter() - started
            if log is not None:
                log(collector.steps, metrics)
    finally:
        bar.close()
        if owned:
            collector.close()
    return RealTraining(on_grid(changes, total_steps, eval_every, random_return), collector.steps, eval_steps,
                        final_return)
