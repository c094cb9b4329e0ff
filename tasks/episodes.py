"""Episodes in memory: one flat array per field plus episode offsets.

Observations keep the N+1 convention: an episode of N steps holds N+1 observations,
the reset observation first and the observation after the last action last. Steps of
episode ``e`` are ``step_offsets[e]:step_offsets[e + 1]``; its observations are
``step_offsets[e] + e`` to ``step_offsets[e + 1] + e`` inclusive.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

UNKNOWN_SEED = -1
NO_POLICY_VERSION = -1  # the episode was not recorded by a numbered policy version


@dataclasses.dataclass(frozen=True)
class Episode:
    """One episode's arrays; ``observations`` has one more row than the other fields."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int = UNKNOWN_SEED
    policy_version: int = NO_POLICY_VERSION

    def __len__(self) -> int:
        return len(self.rewards)


@dataclasses.dataclass(frozen=True)
class Episodes:
    """A set of episodes as a structure of arrays.

    Attributes:
        observations: ``[num_steps + num_episodes, *obs_shape]``.
        actions: ``[num_steps, *action_shape]``.
        rewards: ``[num_steps]`` float32.
        terminations: ``[num_steps]`` bool, true where the environment ended the episode.
        truncations: ``[num_steps]`` bool, true where a time limit or budget cut it.
        step_offsets: ``[num_episodes + 1]`` int64, where each episode's steps start.
        seeds: ``[num_episodes]`` int64 reset seeds, ``UNKNOWN_SEED`` where not recorded.
        policy_versions: ``[num_episodes]`` int64, the version of a run's policy (`dreamer
            learn`) that recorded each episode, ``NO_POLICY_VERSION`` where none did.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    step_offsets: np.ndarray
    seeds: np.ndarray
    policy_versions: np.ndarray

    @classmethod
    def from_list(cls, episodes: Sequence[Episode]) -> Episodes:
        """Concatenate single episodes into one structure of arrays."""
        if not episodes:
            raise ValueError("no episodes to gather")
        lengths = np.array([len(episode) for episode in episodes], dtype=np.int64)
        return cls(
            observations=np.concatenate([e.observations for e in episodes]),
            actions=np.concatenate([e.actions for e in episodes]),
            rewards=np.concatenate([e.rewards for e in episodes]).astype(np.float32),
            terminations=np.concatenate([e.terminations for e in episodes]).astype(bool),
            truncations=np.concatenate([e.truncations for e in episodes]).astype(bool),
            step_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            seeds=np.array([e.seed for e in episodes], dtype=np.int64),
            policy_versions=np.array([e.policy_version for e in episodes], dtype=np.int64),
        )

    @property
    def num_episodes(self) -> int:
        return len(self.step_offsets) - 1

    @property
    def num_steps(self) -> int:
        return int(self.step_offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.step_offsets)

    def __len__(self) -> int:
        return self.num_episodes

    def episode(self, index: int) -> Episode:
        """Episode ``index`` as its own arrays (views, not copies)."""
        start, stop = self.step_offsets[index], self.step_offsets[index + 1]
        return Episode(
            observations=self.observations[start + index : stop + index + 1],
            actions=self.actions[start:stop],
            rewards=self.rewards[start:stop],
            terminations=self.terminations[start:stop],
            truncations=self.truncations[start:stop],
            seed=int(self.seeds[index]),
            policy_version=int(self.policy_versions[index]),
        )

    def __iter__(self):
        return (self.episode(i) for i in range(self.num_episodes))

    def transitions(self) -> tuple[np.ndarray, np.ndarray]:
        """Row indices into ``observations`` of each step's observation and of its successor."""
        before = np.arange(self.num_steps) + np.repeat(np.arange(self.num_episodes), self.lengths)
        return before, before + 1

    def first_observations(self) -> np.ndarray:
        """Each episode's initial observation, ``[num_episodes, *obs_shape]``."""
        return self.observations[self.step_offsets[:-1] + np.arange(self.num_episodes)]

    def acted_observations(self) -> np.ndarray:
        """Every observation an action was taken from (all but each episode's last)."""
        return self.observations[self.transitions()[0]]

    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode, ``[num_episodes]`` float64."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.step_offsets[:-1])

    def select(self, indices: Sequence[int] | np.ndarray) -> Episodes:
        """The episodes at ``indices``, in that order."""
        return Episodes.from_list([self.episode(int(i)) for i in indices])

    def concatenate(self, other: Episodes) -> Episodes:
        """These episodes followed by ``other``'s."""
        return Episodes.from_list([*self, *other])

    def content_ids(self) -> list[str]:
        """A digest of each episode's data, equal for equal episodes wherever they sit."""
        return [content_id(episode) for episode in self]


def content_id(episode: Episode) -> str:
    """Hex digest of an episode's observations, actions, rewards and end flags.

    Splits hash this rather than an integer id, so an episode keeps its split when
    trace files are appended to, merged or re-imported.
    """
    digest = hashlib.blake2b(digest_size=16)
    for field in (episode.observations, episode.actions, episode.rewards):
        array = np.ascontiguousarray(field)
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.tobytes())
    digest.update(np.asarray(episode.terminations, dtype=bool).tobytes())
    digest.update(np.asarray(episode.truncations, dtype=bool).tobytes())
    return digest.hexdigest()
