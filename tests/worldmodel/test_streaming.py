"""Fitting from trace files read in blocks: the plan covers every episode, the index
agrees with reading the file whole, and a streamed fit learns."""

from __future__ import annotations

import json
import logging

import jax
import numpy as np
import pytest
from flax import nnx

from tasks.registry import get_task
from tasks.sampler import sequence_data
from tasks.splits import SplitFractions, fitting_episodes, split_indices
from tasks.trace_index import cut_into_blocks, open_index
from tasks.traces import append_traces, read_traces, write_traces
from worldmodel.ensemble import EnsembleConfig, EnsembleModel
from worldmodel.fit import FitConfig, fit_world_model
from worldmodel.sharding import data_mesh
from worldmodel.streaming import StreamedFitData, TraceStream, block_capacity

# A size no other test fits, so this file sees its own compilations.
TINY = EnsembleConfig(members=3, elites=2, hidden_size=24, hidden_layers=2, termination_hidden=16)


@pytest.mark.parametrize("min_episodes", [1, 2, 3])
def test_blocks_hold_every_episode_once_within_their_capacity(min_episodes):
    rng = np.random.default_rng(min_episodes)
    for _ in range(50):
        lengths = rng.integers(1, 400, size=rng.integers(min_episodes, 60))
        block_steps = int(rng.integers(1, 1500))
        order = rng.permutation(len(lengths))
        blocks = cut_into_blocks(order, lengths, block_steps, min_episodes)
        assert np.array_equal(np.concatenate(blocks), order)  # each once, in the order given
        steps, episodes = block_capacity(lengths, block_steps, min_episodes)
        assert all(len(block) >= min_episodes for block in blocks)
        assert max(int(lengths[block].sum()) for block in blocks) <= steps
        assert max(len(block) for block in blocks) <= episodes
        # Runs are cut only where the next episode would pass the block size.
        for block, after in zip(blocks[:-1], blocks[1:]):
            assert len(block) == min_episodes or lengths[block].sum() + lengths[after[0]] > block_steps


def test_the_index_agrees_with_reading_the_file_whole(cartpole_traces):
    index, whole = open_index(cartpole_traces), read_traces(cartpole_traces).episodes
    assert np.array_equal(index.lengths, whole.lengths)
    assert index.content_ids == tuple(whole.content_ids())
    fractions = SplitFractions(0.6, 0.2, 0.2)
    for seed in (0, 3):
        expected = split_indices(whole, seed, fractions)
        assert all(np.array_equal(index.split_indices(seed, fractions)[name], expected[name]) for name in expected)
    stream = TraceStream.from_split(index, 0, SplitFractions(), block_steps=100)
    train, validation = fitting_episodes(whole, 0)
    assert stream.train_steps == train.num_steps and len(stream.validation) == validation.num_episodes


@pytest.mark.parametrize("data_format", ["hdf5", "arrow"])
@pytest.mark.parametrize("task_name", ["pendulum", "cartpole"])
def test_stored_content_ids_are_those_of_the_episodes_as_read_back(tmp_path, record_random, task_name, data_format):
    episodes = record_random(task_name, 3)
    path = tmp_path / "traces"
    write_traces(path, episodes, get_task(task_name), data_format=data_format)
    append_traces(path, episodes.select([0]))  # the same episode again: the same id
    ids = open_index(path).content_ids
    assert ids == tuple(read_traces(path).episodes.content_ids())
    assert ids[3] == ids[0] and len(set(ids[:3])) == 3


def test_episodes_without_a_stored_id_are_hashed_once_with_a_notice(tmp_path, cartpole_episodes, capsys):
    path = tmp_path / "old"
    write_traces(path, cartpole_episodes, get_task("cartpole"), data_format="arrow")
    for metadata_file in (path / "data").glob("*/metadata.json"):
        metadata = json.loads(metadata_file.read_text())
        metadata.pop("content_id")
        metadata_file.write_text(json.dumps(metadata))
    index = open_index(path)
    assert f"{cartpole_episodes.num_episodes} of {cartpole_episodes.num_episodes} episodes carry no content id" \
        in capsys.readouterr().err
    assert index.content_ids == tuple(cartpole_episodes.content_ids())


def test_each_epoch_reads_every_training_episode_once_in_blocks(cartpole_traces):
    stream = TraceStream.from_split(open_index(cartpole_traces), 0, SplitFractions(), block_steps=100)
    data = StreamedFitData(stream, 1, 1, data_mesh(1), seed=0)
    try:
        first_epoch = [data._training_block(call) for call in range(data._blocks_in(0))]
        assert len(first_epoch) > 2
        assert sorted(np.concatenate(first_epoch)) == list(range(len(stream.train)))
        assert not np.array_equal(data._training_block(len(first_epoch)), first_epoch[0])  # dealt afresh
        # A call's block is the same for any reader with the seed: a resumed fit reads what it would have.
        again = StreamedFitData(stream, 1, 1, data_mesh(1), seed=0)
        assert np.array_equal(again._training_block(5), data._training_block(5))
        again.close()
        block = data.training_data(1)
        episodes = stream.index.read(stream.train[first_epoch[1]])
        step_capacity = block.rewards.shape[1]  # [shard, step]
        expected = sequence_data(episodes, step_capacity, block.observations.shape[1] - step_capacity)
        assert int(block.num_steps[0]) == episodes.num_steps
        assert np.array_equal(np.asarray(block.observations[0]), np.asarray(expected.observations))
        batches = list(data.validation_batches())
        assert sum(weight for _, weight in batches) == stream.index.lengths[stream.validation].sum()
    finally:
        data.close()


def test_a_streamed_fit_learns_in_blocks_and_compiles_once(cartpole_traces, caplog):
    stream = TraceStream.from_split(open_index(cartpole_traces), 0, SplitFractions(), block_steps=100)
    _, validation = fitting_episodes(read_traces(cartpole_traces).episodes, 0)
    model = EnsembleModel((4,), 2, True, TINY, nnx.Rngs(0))
    untrained = _mean_error(model, validation)
    config = FitConfig(batch_size=32, updates_per_call=25, max_updates=300, patience=1000)
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        result = fit_world_model(model, stream, None, config, seed=0, progress=False)
    compiles = [r for r in caplog.records if r.getMessage().startswith("Compiling jit(train_calls)")]
    assert result.updates == 300 and len(compiles) == 1  # every block has the same padded shape
    assert _mean_error(model, validation) < 0.3 * untrained


def test_a_streamed_fit_without_validation_episodes_runs_to_its_last_update(cartpole_traces):
    stream = TraceStream.from_split(open_index(cartpole_traces), 0, SplitFractions(0.9, 0.0, 0.1), block_steps=100)
    model = EnsembleModel((4,), 2, True, TINY, nnx.Rngs(0))
    config = FitConfig(batch_size=32, updates_per_call=25, max_updates=50, patience=1)
    result = fit_world_model(model, stream, None, config, seed=0, progress=False)
    assert len(stream.validation) == 0 and result.updates == 50 and not result.stopped_early
    assert np.isfinite(result.validation_loss)


def test_the_fit_command_streams_with_block_steps(tmp_path, cartpole_traces, fit_argv, capfd):
    from dreamer.cli import main
    capfd.readouterr()
    assert main(fit_argv(cartpole_traces, tmp_path / "run", 50, "--block-steps", 100)) == 0
    err = capfd.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    train, validation = fitting_episodes(read_traces(cartpole_traces).episodes, 0)
    assert "streaming 25 training episodes" in err
    assert summary["train_episodes"] == train.num_episodes
    assert summary["validation_episodes"] == validation.num_episodes


def _mean_error(model, episodes) -> float:
    """Mean squared error of the elites' one-step observation predictions on ``episodes``."""
    before, after = episodes.transitions()
    obs = jax.numpy.asarray(episodes.observations[before], dtype=jax.numpy.float32)
    next_obs, _, _ = model.step(model.initial_state(obs), jax.numpy.asarray(episodes.actions), jax.random.key(0))
    return float(np.mean((np.asarray(next_obs) - episodes.observations[after]) ** 2))
