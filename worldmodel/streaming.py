"""Fitting from trace files larger than memory: episodes stream from disk in blocks.

The training split is cut into blocks of about ``block_steps`` steps. Each fitting call
(`worldmodel.fit`, ``updates_per_call`` updates) draws its minibatches on the device from
one block; the next call's block is read from disk on a background thread meanwhile.
Every epoch deals the episodes into blocks afresh (a permutation seeded by the epoch), so
windows from any two episodes meet in some block, and a call's block depends only on the
seed and the call's index: a resumed fit reads the blocks an uninterrupted one reads.

Validation runs over the validation split in blocks of `VALIDATION_STEPS` steps, and
their losses are averaged weighted by their real steps (without validation episodes, on
the normalisers' sample). Normalisers are fitted on a seeded sample of the training
episodes of one block's size. Resident memory is thus bounded by the block size (the
block being trained on, the one being read, a validation block), whatever the size of
the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from tasks.episodes import Episodes
from tasks.errors import InputError
from tasks.sampler import SequenceBatch, SequenceData, window_batch
from tasks.splits import SplitFractions
from tasks.trace_index import TraceIndex, cut_into_blocks
from worldmodel.sharding import replicate, sharded_sequence_data

# Validation steps read and evaluated at once: a model's activations on them (an
# ensemble's are members x steps x hidden units) outweigh the data many times over. An
# episode longer than this is read whole and evaluated in parts of this size.
VALIDATION_STEPS = 8192


@dataclasses.dataclass(frozen=True)
class TraceStream:
    """A trace file's training and validation episodes, to be read in blocks while fitting.

    Attributes:
        index: the file's episodes by length and content id.
        train: indices of the training episodes.
        validation: indices of the validation episodes (may be empty).
        block_steps: steps per block, about (an episode longer than that is a block alone).
    """

    index: TraceIndex
    train: np.ndarray
    validation: np.ndarray
    block_steps: int

    @classmethod
    def from_split(cls, index: TraceIndex, split_seed: int, fractions: SplitFractions,
                   block_steps: int) -> TraceStream:
        """The split of ``index`` under ``split_seed``: the episodes `tasks.splits.fitting_episodes` gives."""
        if block_steps < 1:
            raise ValueError(f"block_steps must be positive, got {block_steps}")
        splits = index.split_indices(split_seed, fractions)
        return cls(index, splits["train"], splits["validation"], block_steps)

    @property
    def train_steps(self) -> int:
        return int(self.index.lengths[self.train].sum())

    def sample(self, seed: int) -> Episodes:
        """A seeded draw of training episodes, about one block's worth, in file order."""
        order = np.random.default_rng([seed, 0]).permutation(self.train)
        steps = np.cumsum(self.index.lengths[order])
        return self.index.read(np.sort(order[: max(int(np.searchsorted(steps, self.block_steps, side="right")), 1)]))

    def blocks(self) -> Iterator[Episodes]:
        """The training episodes in file order, one block at a time (`read_in_blocks`)."""
        return read_in_blocks(self.index, self.train, self.block_steps)


def read_in_blocks(index: TraceIndex, episodes: np.ndarray, block_steps: int) -> Iterator[Episodes]:
    """The episodes at ``episodes``, in that order, one block of about ``block_steps``
    steps at a time, the next block read ahead on a background thread."""
    blocks = cut_into_blocks(episodes, index.lengths, block_steps)
    reader = ReadAhead(lambda number: index.read(blocks[number]),
                       lambda number: number + 1 if number + 1 < len(blocks) else None)
    try:
        for number in range(len(blocks)):
            yield reader.get(number)
    finally:
        reader.close()


def block_capacity(lengths: np.ndarray, block_steps: int, min_episodes: int = 1) -> tuple[int, int]:
    """Steps and episodes that hold any block `tasks.trace_index.cut_into_blocks` makes
    from these episodes."""
    longest = int(lengths.max())
    # Joining the last run adds fewer than `min_episodes` episodes to a full one.
    steps = max(block_steps, min_episodes * longest) + (min_episodes - 1) * longest
    smallest_first = np.cumsum(np.sort(lengths))
    episodes = max(int(np.searchsorted(smallest_first, steps, side="right")), 1) + min_episodes - 1
    return steps, min(episodes, len(lengths))


class ReadAhead:
    """Reads on one background thread, one read ahead of its use.

    ``read(name)`` reads the part ``name`` stands for; ``following(name)`` names the part
    most likely asked for next, which is read while the caller works on this one. Asked
    for anything else, it waits for the read under way and reads what was asked.
    """

    def __init__(self, read: Callable[[Any], Any], following: Callable[[Any], Any]):
        self._read, self._following = read, following
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._pending: tuple[Any, Future] | None = None

    def get(self, name):
        if self._pending is not None and self._pending[0] == name:
            value = self._pending[1].result()
        else:
            if self._pending is not None:
                self._pending[1].result()  # not wanted; its memory is freed before the next read
            self._pending = None
            value = self._read(name)
        upcoming = self._following(name)
        self._pending = None if upcoming is None else (upcoming, self._pool.submit(self._read, upcoming))
        return value

    def close(self) -> None:
        self._pending = None
        self._pool.shutdown(wait=True, cancel_futures=True)


class StreamedFitData:
    """What `worldmodel.fit.fit_world_model` fits from, read from a `TraceStream` in blocks."""

    def __init__(self, stream: TraceStream, sequence_length: int, shards: int, mesh: Mesh, seed: int):
        index = stream.index
        if len(stream.train) < shards:
            raise InputError(index.shown, f"its training split has {len(stream.train)} episodes, too few for "
                                          f"{shards} episode shards (one per process; record more episodes)")
        self.stream, self.sequence_length, self.shards, self.mesh = stream, sequence_length, shards, mesh
        self.seed = seed
        train_lengths = index.lengths[stream.train]
        self._capacity = block_capacity(train_lengths, stream.block_steps, shards)
        # Validation is read in blocks of one part's size: a few episodes per read cost the
        # disk what many do, and two large blocks (one validated, one read ahead) would
        # hold more memory than the training block does.
        validation_steps = min(stream.block_steps, VALIDATION_STEPS)
        self._validation_blocks = cut_into_blocks(stream.validation, index.lengths, validation_steps)
        if self._validation_blocks:
            steps, episodes = block_capacity(index.lengths[stream.validation], validation_steps)
            self._validation_rows = max(1, VALIDATION_STEPS // sequence_length)
            windows = steps // sequence_length + episodes
            self._validation_capacity = -(-windows // self._validation_rows) * self._validation_rows
        self._block_counts: list[int] = []
        self._kept_plan: tuple[int, list[np.ndarray]] = (-1, [])
        self._reader = ReadAhead(self._read, self._following)
        self._last_call = 0
        self.statistics = stream.sample(seed)
        # Without validation episodes, elites are chosen on the sample (as `fit_world_model`
        # chooses them on the training episodes), and the fit runs to its last update.
        self._fallback = [] if self._validation_blocks else [
            (replicate(window_batch(self.statistics, sequence_length), mesh), 1.0)]

    @property
    def has_validation(self) -> bool:
        return bool(self._validation_blocks)

    def training_data(self, call: int) -> SequenceData:
        """Call ``call``'s block of training episodes, on the mesh as `sharded_sequence_data` puts it."""
        self._last_call = call
        return self._reader.get(("train", call))

    def validation_batches(self) -> Iterator[tuple[SequenceBatch, float]]:
        """Each validation block's windows in parts of one shape, replicated on the mesh,
        each with its count of real steps."""
        for block in range(len(self._validation_blocks)):
            yield from self._reader.get(("validation", block))
        yield from self._fallback

    def close(self) -> None:
        self._reader.close()

    # -- reading ------------------------------------------------------------------------

    def _read(self, name):
        kind, number = name
        index = self.stream.index
        if kind == "train":
            episodes = index.read(self.stream.train[self._training_block(number)])
            steps, count = self._capacity
            return sharded_sequence_data(episodes, self.shards, self.mesh, _next_power_of_two(steps),
                                         _next_power_of_two(count))
        episodes = index.read(self._validation_blocks[number])
        batch = jax.tree.map(np.asarray, window_batch(episodes, self.sequence_length, self._validation_capacity))
        rows = self._validation_rows
        parts = [jax.tree.map(lambda field: field[start:start + rows], batch)
                 for start in range(0, self._validation_capacity, rows)]
        return [(replicate(part, self.mesh), float(part.mask.sum())) for part in parts]

    def _following(self, name):
        kind, number = name
        if kind == "train":
            return ("validation", 0) if self._validation_blocks else ("train", number + 1)
        if number + 1 < len(self._validation_blocks):
            return ("validation", number + 1)
        return ("train", self._last_call + 1)

    def _training_block(self, call: int) -> np.ndarray:
        """Positions in the training split of call ``call``'s block: epoch by epoch, each dealt afresh."""
        epoch = 0
        while call >= self._blocks_in(epoch):
            call -= self._blocks_in(epoch)
            epoch += 1
        return self._plan(epoch)[call]

    def _blocks_in(self, epoch: int) -> int:
        while len(self._block_counts) <= epoch:
            self._block_counts.append(len(self._plan(len(self._block_counts))))
        return self._block_counts[epoch]

    def _plan(self, epoch: int) -> list[np.ndarray]:
        """Epoch ``epoch``'s blocks; the last plan made is kept (calls walk the epochs in order)."""
        if self._kept_plan[0] != epoch:
            order = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.stream.train))
            lengths = self.stream.index.lengths[self.stream.train]
            self._kept_plan = (epoch, cut_into_blocks(order, lengths, self.stream.block_steps, self.shards))
        return self._kept_plan[1]


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())
