"""Recording real episodes with a behaviour policy.

Each episode is reset with its own seed, drawn from the recording seed, and the seed is
stored with the episode so it can be replayed from the same initial state. Several
environments run side by side so a policy is queried once per step for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from tasks.episodes import Episode, Episodes
from tasks.registry import Task


class BehaviourPolicy(Protocol):
    """Maps a batch of observations to a batch of actions, drawing noise from ``rng``."""

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@runtime_checkable
class StatefulPolicy(Protocol):
    """A behaviour policy with a memory per environment slot (a world model's latent state
    that filters each observation with the action applied before it).

    `record_episodes` calls ``start(slots, num_slots)`` with the slots whose environment
    was just reset, then ``policy(observations, rng, slots)`` with the observations of the
    running slots only (the set shrinks as episodes end); the actions it returns are the
    ones applied.
    """

    def start(self, slots: np.ndarray, num_slots: int) -> None: ...

    def __call__(self, observations: np.ndarray, rng: np.random.Generator, slots: np.ndarray) -> np.ndarray: ...


class RandomPolicy:
    """Uniform actions over a Box (finite bounds) or Discrete action space."""

    def __init__(self, action_space: gym.Space):
        if isinstance(action_space, gym.spaces.Box) and not action_space.is_bounded():
            raise ValueError(f"a random policy needs a bounded action space, got {action_space}")
        self.action_space = action_space

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        batch = len(observations)
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return space.start + rng.integers(0, space.n, size=batch)
        return rng.uniform(space.low, space.high, size=(batch, *space.shape)).astype(space.dtype)


# Streams of reset seeds: recording, evaluation and each online round draw from their
# own, so an evaluation never starts from a state a training episode started from.
COLLECT_STREAM = 1
EVALUATION_STREAM = 2
REAL_TRAINING_STREAM = 3  # first resets of a real-trained baseline's environments
HELDOUT_STREAM = 4  # episodes a comparison records as its held-out set
ONLINE_ROUND_STREAM = 1000  # round r uses ONLINE_ROUND_STREAM + r


def reset_seeds(seed: int, count: int, stream: int = 0) -> np.ndarray:
    """``count`` distinct-looking 31-bit reset seeds for ``stream`` of a run seeded ``seed``.

    Streams keep seeds apart: recording, each online round and evaluation use different
    streams, so evaluation never starts from a state a training episode started from.
    """
    sequence = np.random.SeedSequence([seed, stream])
    return (sequence.generate_state(count, dtype=np.uint32) >> 1).astype(np.int64)


def record_episodes(
    task: Task,
    policy: BehaviourPolicy,
    seeds: Sequence[int],
    num_envs: int = 8,
    rng: np.random.Generator | None = None,
    max_steps: int | None = None,
    min_steps: int | None = None,
    progress: bool = True,
) -> Episodes:
    """Run ``policy`` in the real environment for one episode per reset seed.

    Args:
        task: the environment to run.
        policy: queried once per step with the observations of all running environments
            (a `StatefulPolicy` also learns which slots run and which just started).
        seeds: one reset seed per episode; the number of seeds is the number of episodes.
        num_envs: environments stepped side by side.
        rng: the policy's source of noise; seeded from the first reset seed if omitted.
        max_steps: stop after this many steps in total, cutting the last episodes short
            (recorded as truncated). Episodes with no step are dropped.
        min_steps: start no new episode once this many steps are recorded; the running
            ones finish. Fewer episodes than seeds may then be recorded.
        progress: show a progress bar on stderr.

    Returns:
        The recorded episodes, in the order of ``seeds``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no episodes to record")
    rng = rng or np.random.default_rng(seeds[0])
    budget = np.inf if max_steps is None else max_steps
    enough = np.inf if min_steps is None else min_steps
    envs = [task.make_env() for _ in range(min(num_envs, len(seeds)))]
    recorders: list[_EpisodeRecorder | None] = [None] * len(envs)
    finished: dict[int, Episode] = {}
    next_episode = 0
    steps_taken = 0
    stateful = isinstance(policy, StatefulPolicy)
    bar = tqdm(total=len(seeds), unit="ep", desc=f"collect {task.name}", disable=not progress, leave=False)
    try:
        while True:
            started = []
            for slot, env in enumerate(envs):
                starting = next_episode < len(seeds) and steps_taken < min(budget, enough)
                if recorders[slot] is None and starting:
                    observation, _ = env.reset(seed=seeds[next_episode])
                    recorders[slot] = _EpisodeRecorder(next_episode, seeds[next_episode], observation)
                    next_episode += 1
                    started.append(slot)
            active = [slot for slot, recorder in enumerate(recorders) if recorder is not None]
            if not active:
                break
            observations = np.stack([recorders[slot].last_observation for slot in active])
            if stateful:
                if started:
                    policy.start(np.asarray(started), len(envs))
                actions = np.asarray(policy(observations, rng, np.asarray(active)))
            else:
                actions = np.asarray(policy(observations, rng))
            for slot, action in zip(active, actions):
                recorder = recorders[slot]
                observation, reward, terminated, truncated, _ = envs[slot].step(action)
                steps_taken += 1
                truncated = truncated or steps_taken >= budget
                recorder.add(action, observation, reward, terminated, truncated)
                if terminated or truncated:
                    finished[recorder.index] = recorder.episode()
                    recorders[slot] = None
                    bar.update(1)
                    bar.set_postfix(steps=steps_taken)
            if steps_taken >= budget:
                for slot, recorder in enumerate(recorders):
                    if recorder is not None and len(recorder.rewards):
                        recorder.truncations[-1] = True
                        finished[recorder.index] = recorder.episode()
                    recorders[slot] = None
                break
    finally:
        bar.close()
        for env in envs:
            env.close()
    return Episodes.from_list([finished[i] for i in sorted(finished)])


class _EpisodeRecorder:
    """The growing lists of one episode being recorded."""

    def __init__(self, index: int, seed: int, observation: np.ndarray):
        self.index, self.seed = index, seed
        self.observations = [observation]
        self.actions, self.rewards, self.terminations, self.truncations = [], [], [], []

    @property
    def last_observation(self) -> np.ndarray:
        return self.observations[-1]

    def add(self, action, observation, reward, terminated, truncated) -> None:
        self.actions.append(action)
        self.observations.append(observation)
        self.rewards.append(reward)
        self.terminations.append(bool(terminated))
        self.truncations.append(bool(truncated) and not terminated)

    def episode(self) -> Episode:
        return Episode(
            observations=np.stack(self.observations),
            actions=np.stack(self.actions),
            rewards=np.asarray(self.rewards, dtype=np.float32),
            terminations=np.asarray(self.terminations),
            truncations=np.asarray(self.truncations),
            seed=self.seed,
        )
