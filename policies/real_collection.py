"""Collecting experience for real-trained baselines from gymnasium vector environments.

The environments autoreset in the same step (gymnasium's ``SAME_STEP`` mode), so every
row of a chunk is a real transition: where an episode ended, ``next_observations``
holds its final observation (needed to bootstrap a truncated episode) while the
environment already waits in the next episode's first state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import gymnasium as gym
import numpy as np

from tasks.registry import Task


class Chunk(NamedTuple):
    """``T`` steps of ``N`` environments, time-major.

    Attributes:
        observations: ``[T, N, *obs_shape]``, what the policy acted on.
        actions: ``[T, N, ...]``.
        rewards: ``[T, N]``.
        terminations: ``[T, N]``, the episode ended in a terminal state (no bootstrap).
        episode_ends: ``[T, N]``, the episode ended, by termination or truncation.
        next_observations: ``[T, N, *obs_shape]``, the state each step led to (the final
            observation where an episode ended).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    episode_ends: np.ndarray
    next_observations: np.ndarray


def real_vector_env(task: Task, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the task's real environment, autoresetting in the same step."""
    return gym.vector.SyncVectorEnv(
        [task.make_env for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )


class VectorCollector:
    """Steps a vector environment and hands out chunks of transitions.

    Args:
        env: a gymnasium vector environment in ``SAME_STEP`` autoreset mode (the task's
            real environments from `real_vector_env`, or any other, such as a dream).
        seeds: the first reset seed of each environment; later episodes follow from the
            environment's own generator, so a run is reproducible from these.
    """

    def __init__(self, env: gym.vector.VectorEnv, seeds: Sequence[int]):
        if env.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError("collection needs a vector environment that autoresets in the same step "
                             f"(AutoresetMode.SAME_STEP), got {env.metadata.get('autoreset_mode')}")
        if len(seeds) != env.num_envs:
            raise ValueError(f"one first reset seed per environment: {env.num_envs} environments, {len(seeds)} seeds")
        self.env = env
        self.observations, _ = self.env.reset(seed=[int(s) for s in seeds])
        self.steps = 0
        self._running_returns = np.zeros(len(seeds))
        self.finished_returns: list[float] = []

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    def collect(self, act: Callable[[np.ndarray], np.ndarray], steps: int) -> Chunk:
        """Run ``act`` for ``steps`` steps of every environment."""
        rows = []
        for _ in range(steps):
            observations = self.observations
            actions = np.asarray(act(observations))
            next_observations, rewards, terminations, truncations, info = self.env.step(actions)
            ends = terminations | truncations
            true_next = next_observations.copy()
            if ends.any():
                for i in np.flatnonzero(ends):
                    true_next[i] = info["final_obs"][i]
            rows.append((observations, actions, rewards, terminations, ends, true_next))
            self._running_returns += rewards
            self.finished_returns.extend(self._running_returns[ends].tolist())
            self._running_returns[ends] = 0.0
            self.observations = next_observations
        self.steps += steps * self.num_envs
        return Chunk(*(np.stack(column) for column in zip(*rows)))

    def take_finished_returns(self) -> list[float]:
        """Returns of the training episodes that ended since the last call."""
        returns, self.finished_returns = self.finished_returns, []
        return returns

    def close(self) -> None:
        self.env.close()
