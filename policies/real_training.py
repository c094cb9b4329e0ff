"""The loop every real-trained baseline shares: collect a chunk, learn from it, evaluate.

A learner (PPO, SAC) decides how it acts and what one chunk of real transitions
teaches it; this loop steps the real environments, counts real steps, and measures the
deterministic policy on fixed fresh reset seeds where the evaluation protocol
(`policies.protocol`) needs it: the same grid every arm is measured on.
`train_seeds_on_real` is the same loop for several seeds at once, their learners acting
and learning as one (`policies.seeds`).
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
from policies.seeds import LearnerSeeds
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
    grid = _GridEvaluations(task, evaluation_seeds, total_steps, eval_every, seed)
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
            grid.after_chunk(before, collector.steps, lambda: learner.actor, metrics)
            if "real_return" in metrics:
                bar.set_postfix(real_return=f"{metrics['real_return']:.1f}")
            metrics["wall_seconds"] = time.perf_counter() - started
            if log is not None:
                log(collector.steps, metrics)
    finally:
        bar.close()
        if owned:
            collector.close()
    return grid.result(collector.steps)


def train_seeds_on_real(
    task: Task,
    learners: LearnerSeeds,
    total_steps: int,
    training_seeds: Sequence[Sequence[int]],
    evaluation_seeds: Sequence[Sequence[int]],
    seeds: Sequence[int],
    eval_every: int = DEFAULT_EVAL_EVERY,
    logs: Sequence[Callable[[int, dict], None]] | None = None,
    progress: bool | None = None,
) -> list[RealTraining]:
    """`train_on_real` for several seeds at once: their environments step side by side,
    they act in one forward pass and learn in one vmapped call (`policies.seeds`).

    Each seed steps its own environments from its own reset seeds and is measured on its
    own grid, as a run of that seed alone would be, so each result equals that run's to
    float tolerance.

    Args:
        task, total_steps, eval_every, progress: as for `train_on_real` (steps per seed).
        learners: the seeds' learners, as one.
        training_seeds: per seed, the first reset seed of each of its training environments.
        evaluation_seeds: per seed, its evaluation episodes' reset seeds.
        seeds: each seed's seed of the random policy's actions.
        logs: per seed, called as ``log(real_steps, metrics)`` after every chunk.
    """
    num_seeds = learners.num_seeds
    if not len(training_seeds) == len(evaluation_seeds) == len(seeds) == num_seeds:
        raise ValueError(f"{num_seeds} learners need as many lists of training and evaluation seeds, and seeds")
    progress = sys.stderr.isatty() if progress is None else progress
    started = time.perf_counter()
    every_seeds_environments = [reset for per_seed in training_seeds for reset in per_seed]
    collector = VectorCollector(real_vector_env(task, len(every_seeds_environments)), every_seeds_environments)
    grids = [_GridEvaluations(task, evaluation, total_steps, eval_every, seed)
             for evaluation, seed in zip(evaluation_seeds, seeds)]
    running_returns = np.zeros(collector.num_envs)
    steps = 0
    bar = tqdm(total=total_steps * num_seeds, unit="step", desc=f"train-real {task.name} x {num_seeds} seeds",
               disable=not progress, file=sys.stderr)
    try:
        while steps < total_steps:
            before = steps
            chunk = collector.collect(learners.act, learners.steps_per_chunk)
            collector.take_finished_returns()  # counted per seed below
            chunks = split_by_seed(chunk, num_seeds)
            every_metrics = learners.learn(chunks)
            steps = collector.steps // num_seeds
            bar.update(chunk.rewards.size)
            finished = _finished_returns_by_seed(chunk, running_returns, num_seeds)
            for index, (grid, metrics) in enumerate(zip(grids, every_metrics)):
                if finished[index]:
                    metrics["episode_return"] = float(np.mean(finished[index]))
                grid.after_chunk(before, steps, lambda: learners.actor(index), metrics)
                metrics["wall_seconds"] = time.perf_counter() - started
                if logs is not None:
                    logs[index](steps, metrics)
    finally:
        bar.close()
        collector.close()
    return [grid.result(steps) for grid in grids]


def split_by_seed(chunk: Chunk, num_seeds: int) -> list[Chunk]:
    """A chunk of every seed's environments (seed by seed along the environment axis)
    cut into one chunk per seed."""
    return [Chunk(*(np.split(field, num_seeds, axis=1)[index] for field in chunk)) for index in range(num_seeds)]


class _GridEvaluations:
    """One run's evaluations on the protocol's grid, as its chunks come in."""

    def __init__(self, task: Task, evaluation_seeds: Sequence[int], total_steps: int, eval_every: int, seed: int):
        self.task, self.evaluation_seeds = task, evaluation_seeds
        self.total_steps, self.eval_every = total_steps, eval_every
        # The random policy's return is the grid's value before any learning; its steps count as evaluation.
        self.random_return, self.eval_steps = random_policy_return(task, evaluation_seeds, seed)
        self.changes: list[dict] = []
        self.final_return = self.random_return

    def after_chunk(self, before: int, steps: int, current_actor: Callable[[], Actor], metrics: dict) -> None:
        """Evaluate the policy learned up to ``steps`` if a grid point falls where it is
        in force (and always the final one), adding what it measured to ``metrics``."""
        last = steps >= self.total_steps
        in_force_until = self.total_steps + 1 if last else 2 * steps - before  # the next chunk's end
        if not (last or covers(steps, in_force_until, self.eval_every)):
            return
        episodes = evaluation_episodes(self.task, current_actor(), self.evaluation_seeds)
        returns = episodes.returns()
        self.eval_steps += episodes.num_steps
        self.final_return = float(returns.mean())
        self.changes.append({"real_steps": steps, "mean_return": self.final_return})
        metrics["real_return"] = self.final_return
        metrics["real_return_std"] = float(returns.std())

    def result(self, real_steps: int) -> RealTraining:
        return RealTraining(on_grid(self.changes, self.total_steps, self.eval_every, self.random_return), real_steps,
                            self.eval_steps, self.final_return)


def _finished_returns_by_seed(chunk: Chunk, running_returns: np.ndarray, num_seeds: int) -> list[list[float]]:
    """Returns of the episodes that ended in ``chunk``, per seed; ``running_returns`` (one
    per environment) carries the unfinished ones to the next chunk."""
    finished: list[list[float]] = [[] for _ in range(num_seeds)]
    per_seed = len(running_returns) // num_seeds
    for rewards, ends in zip(chunk.rewards, chunk.episode_ends):
        running_returns += rewards
        for environment in np.flatnonzero(ends):
            finished[environment // per_seed].append(float(running_returns[environment]))
        running_returns[ends.astype(bool)] = 0.0
    return finished
