"""A trace file's episodes known without their data: lengths and content ids.

Plans that read a file in parts (fitting from trace sets larger than memory,
`worldmodel.streaming`) need each episode's length and split before reading any of it.
Both come from the episodes' metadata: Minari records each episode's length, and our
writers record its content id (`tasks.traces.CONTENT_ID_KEY`), so opening an index
reads a small file per episode, not the data. Episodes written elsewhere, or before ids
were recorded, are read once, one part at a time, to hash them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from minari.dataset.minari_storage import MinariStorage

from tasks.episodes import Episodes, content_id
from tasks.errors import InputError
from tasks.registry import Task, check_spaces_match
from tasks.splits import SplitFractions, split_indices_of_ids
from tasks.traces import (APPEND_JOURNAL, CONTENT_ID_KEY, finish_interrupted_writes, open_storage, read_episodes,
                          recorded_task, resolve_data_path)
from tasks.validation import check_supported_spaces

HASH_CHUNK_STEPS = 1 << 18  # steps read at a time to hash episodes that carry no content id


@dataclasses.dataclass(frozen=True)
class TraceIndex:
    """A trace file's episodes by length and content id, read from their metadata.

    Attributes:
        storage: the open Minari dataset.
        shown: how the file is named in messages.
        task: the task that recorded it, if known.
        lengths: ``[num_episodes]`` int64 steps of each episode.
        content_ids: each episode's `tasks.episodes.content_id`.
    """

    storage: MinariStorage
    shown: str
    task: Task | None
    lengths: np.ndarray
    content_ids: tuple[str, ...]

    @property
    def observation_space(self) -> gym.Space:
        return self.storage.observation_space

    @property
    def action_space(self) -> gym.Space:
        return self.storage.action_space

    @property
    def num_episodes(self) -> int:
        return len(self.lengths)

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def split_indices(self, split_seed: int = 0, fractions: SplitFractions = SplitFractions()) -> dict[str, np.ndarray]:
        """Episode indices of each split: the same split `tasks.splits.split_indices` gives the whole file."""
        return split_indices_of_ids(self.content_ids, split_seed, fractions)

    def read(self, indices: Sequence[int] | np.ndarray) -> Episodes:
        """The episodes at ``indices``, in that order, checked as `tasks.traces.read_traces` checks them.

        Raises:
            InputError: an episode is missing, damaged or unusable.
        """
        return Episodes.from_list(read_episodes(self.storage, indices, self.shown))


def open_index(location: str | os.PathLike, task: Task | None = None) -> TraceIndex:
    """The index of the trace file at ``location`` (a dataset folder, its data/ folder, or an id).

    Args:
        location: where the trace file is.
        task: if given, the file's spaces must be this task's.

    Raises:
        InputError: the file is missing, unreadable or empty, or its spaces are not the task's.
    """
    data_path = resolve_data_path(location).absolute()
    shown = str(location)
    if (data_path.parent / APPEND_JOURNAL).is_file():
        finish_interrupted_writes(data_path.parent)  # waits for the writer, or undoes a killed append
    storage = open_storage(data_path, shown)
    check_supported_spaces(storage.observation_space, storage.action_space, shown)
    if task is not None:
        check_spaces_match(task, storage.observation_space, storage.action_space, shown)
    total = int(storage.total_episodes)
    if total == 0:
        raise InputError(shown, "the dataset holds no episodes")
    try:
        metadata = list(storage.get_episode_metadata(range(total)))
    except Exception as error:  # h5py and json each fail their own way
        raise InputError(shown, f"corrupt or truncated dataset ({type(error).__name__}: {error})") from None
    if len(metadata) != total:
        raise InputError(shown, f"the metadata says {total} episodes but {len(metadata)} could be read "
                                "(episode data missing or damaged)")
    lengths = [entry.get("total_steps") for entry in metadata]
    ids = [entry.get(CONTENT_ID_KEY) for entry in metadata]
    unknown = [index for index in range(total) if ids[index] is None or lengths[index] is None]
    if unknown:
        print(f"{shown}: {len(unknown)} of {total} episodes carry no content id in their metadata; reading them "
              "once to hash them", file=sys.stderr)
        # An episode whose length is unknown too is taken for a 64th of a part.
        assumed = np.array([HASH_CHUNK_STEPS // 64 if length is None else length for length in lengths])
        for part in cut_into_blocks(np.asarray(unknown), assumed, HASH_CHUNK_STEPS):
            for index, episode in zip(part, read_episodes(storage, part, shown)):
                ids[index], lengths[index] = content_id(episode), len(episode)
    return TraceIndex(storage=storage, shown=shown, task=task or recorded_task(storage.metadata),
                      lengths=np.asarray(lengths, dtype=np.int64), content_ids=tuple(ids))


def cut_into_blocks(order: np.ndarray, lengths: np.ndarray, block_steps: int,
                    min_episodes: int = 1) -> list[np.ndarray]:
    """``order``'s episodes cut into consecutive runs of at most ``block_steps`` steps.

    A run holds at least ``min_episodes`` episodes (one per episode shard) even if they
    pass ``block_steps`` (`worldmodel.streaming.block_capacity` bounds every run).
    Trailing episodes too few for a run of their own join the last one.
    """
    blocks, current, steps = [], [], 0
    for episode in order:
        length = int(lengths[episode])
        if len(current) >= min_episodes and steps + length > block_steps:
            blocks.append(current)
            current, steps = [], 0
        current.append(int(episode))
        steps += length
    if current and len(current) < min_episodes and blocks:
        blocks[-1].extend(current)
    elif current:
        blocks.append(current)
    return [np.asarray(block, dtype=np.int64) for block in blocks]
