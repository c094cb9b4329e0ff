"""Importers bring other logs in unchanged: npz round trips, D4RL npz, Parquet and CSV tables.

Episodes are recorded in the real gymnasium environments (pendulum: continuous, always
truncated at 200 steps; cartpole: discrete, ends in terminations), so an imported episode
can be compared array for array with the one that was recorded.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import pytest

from dreamer.cli import main
from tasks.episodes import UNKNOWN_SEED, Episodes
from tasks.importers import conform_to_spaces, export_npz, import_npz, import_table
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task

TASKS = ("pendulum", "cartpole")


def record(task_name: str, count: int = 4, seed: int = 0) -> Episodes:
    task = get_task(task_name)
    episodes = record_episodes(
        task, RandomPolicy(task.action_space), reset_seeds(seed, count), num_envs=count, progress=False
    )
    assert episodes.num_episodes == count
    if task_name == "cartpole":
        # The discrete task must exercise terminations, or the flags are not tested.
        assert episodes.terminations[episodes.step_offsets[1:] - 1].all()
    else:
        assert episodes.truncations[episodes.step_offsets[1:] - 1].all()
    return episodes


def conformed(episodes: Episodes, task_name: str) -> Episodes:
    task = get_task(task_name)
    return conform_to_spaces(episodes, task.observation_space, task.action_space)


def assert_same_episodes(actual: Episodes, expected: Episodes) -> None:
    for field in ("observations", "actions", "rewards", "terminations", "truncations", "step_offsets", "seeds"):
        got, want = getattr(actual, field), getattr(expected, field)
        assert got.dtype == want.dtype, f"{field}: dtype {got.dtype}, expected {want.dtype}"
        np.testing.assert_array_equal(got, want, err_msg=field, strict=True)
    assert actual.content_ids() == expected.content_ids()


# --------------------------------------------------------------------------- npz


@pytest.mark.parametrize("task_name", TASKS)
def test_npz_export_then_import_round_trips_exactly(tmp_path, task_name):
    recorded = record(task_name)
    path = export_npz(recorded, tmp_path / "log.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.npz"], "staging file left behind"

    imported = conformed(import_npz(path), task_name)

    assert_same_episodes(imported, recorded)
    assert (imported.seeds != UNKNOWN_SEED).all()


@pytest.mark.parametrize("task_name", TASKS)
def test_d4rl_npz_without_next_observations_drops_each_last_row(tmp_path, capsys, task_name):
    recorded = record(task_name)
    last_steps = recorded.step_offsets[1:] - 1
    timeouts = np.zeros(recorded.num_steps, dtype=bool)
    timeouts[last_steps] = ~recorded.terminations[last_steps]
    path = tmp_path / "d4rl.npz"
    np.savez(
        path,
        observations=np.concatenate([e.observations[:-1] for e in recorded]),
        actions=recorded.actions,
        rewards=recorded.rewards,
        terminals=recorded.terminations,
        timeouts=timeouts,
    )

    imported = conformed(import_npz(path), task_name)

    assert imported.num_episodes == recorded.num_episodes
    np.testing.assert_array_equal(imported.lengths, recorded.lengths - 1)
    for got, want in zip(imported, recorded):
        steps = len(want) - 1
        np.testing.assert_array_equal(got.observations, want.observations[: steps + 1], strict=True)
        np.testing.assert_array_equal(got.actions, want.actions[:steps], strict=True)
        np.testing.assert_array_equal(got.rewards, want.rewards[:steps], strict=True)
        assert not got.terminations.any()
        np.testing.assert_array_equal(got.truncations, np.arange(steps) == steps - 1)
        assert got.seed == UNKNOWN_SEED
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {path}: no next observations")
    assert f"({recorded.num_episodes} rows) was dropped" in err
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------- tables


def table_of(episodes: Episodes, rng: np.random.Generator) -> tuple[pa.Table, list[int]]:
    """One row per transition, rows shuffled; also the episode order of first appearance."""
    columns: dict[str, list] = {"episode": [], "step": []}
    obs_dim = episodes.observations.shape[1]
    actions = episodes.actions.reshape(episodes.num_steps, -1)
    rows = []
    for index, episode in enumerate(episodes):
        start = episodes.step_offsets[index]
        for step in range(len(episode)):
            rows.append((index, step, episode.observations[step], actions[start + step], episode.rewards[step],
                         episode.terminations[step], episode.truncations[step], episode.observations[step + 1]))
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    columns["episode"] = np.array([r[0] for r in rows], dtype=np.int64)
    columns["step"] = np.array([r[1] for r in rows], dtype=np.int64)
    for k in range(obs_dim):
        columns[f"obs_{k}"] = np.array([r[2][k] for r in rows])
    for k in range(actions.shape[1]):
        columns[f"action_{k}"] = np.array([r[3][k] for r in rows])
    columns["reward"] = np.array([r[4] for r in rows])
    columns["terminated"] = np.array([r[5] for r in rows])
    columns["truncated"] = np.array([r[6] for r in rows])
    for k in range(obs_dim):
        columns[f"next_obs_{k}"] = np.array([r[7][k] for r in rows])
    # Shuffled for real: rows of an episode are neither together nor in step order.
    assert (np.diff(columns["episode"]) != 0).sum() > episodes.num_episodes
    first_seen = list(dict.fromkeys(columns["episode"].tolist()))
    return pa.table(columns), first_seen


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
@pytest.mark.parametrize("task_name", TASKS)
def test_shuffled_table_imports_as_the_recorded_episodes(tmp_path, task_name, suffix):
    recorded = record(task_name)
    table, first_seen = table_of(recorded, np.random.default_rng(1))
    path = tmp_path / f"log.{suffix}"
    if suffix == "csv":
        pyarrow.csv.write_csv(table, path)
    else:
        pyarrow.parquet.write_table(table, path)

    imported = conformed(import_table(path), task_name)

    # Episodes come out in order of first appearance, each in step order.
    expected = recorded.select(first_seen)
    seeds_unknown = dict(seeds=np.full(recorded.num_episodes, UNKNOWN_SEED, dtype=np.int64))
    assert_same_episodes(imported, dataclasses.replace(expected, **seeds_unknown))


def test_table_seed_column_sets_the_episode_seeds(tmp_path):
    recorded = record("cartpole")
    table, first_seen = table_of(recorded, np.random.default_rng(2))
    seeds = recorded.seeds[table.column("episode").to_numpy()]
    path = tmp_path / "log.parquet"
    pyarrow.parquet.write_table(table.append_column("seed", pa.array(seeds)), path)

    imported = conformed(import_table(path), "cartpole")

    assert_same_episodes(imported, recorded.select(first_seen))


# --------------------------------------------------------------------------- command line


def test_cli_import_then_info_reports_episode_and_step_counts(tmp_path, capsys):
    recorded = record("cartpole")
    source = export_npz(recorded, tmp_path / "log.npz")
    out = tmp_path / "traces"

    capsys.readouterr()
    assert main(["traces", "import", str(source), "--task", "cartpole", "--out", str(out), "--json"]) == 0
    stdout, stderr = capsys.readouterr()
    assert stderr == ""
    imported = json.loads(stdout)  # stdout is exactly one JSON object
    assert stdout.count("\n") == 1 and stdout.startswith("{")
    assert (imported["episodes"], imported["steps"]) == (recorded.num_episodes, recorded.num_steps)

    assert main(["traces", "info", str(out), "--json"]) == 0
    stdout, stderr = capsys.readouterr()
    assert stderr == ""
    assert stdout.count("\n") == 1 and stdout.startswith("{")
    info = json.loads(stdout)
    assert info["task"] == "cartpole"
    assert info["episodes"] == recorded.num_episodes
    assert info["steps"] == recorded.num_steps
    assert info["terminated_episodes"] == recorded.num_episodes
    assert info["truncated_episodes"] == 0
    assert info["episodes_with_seed"] == recorded.num_episodes
    assert info["mean_return"] == pytest.approx(float(recorded.returns().mean()))
    assert sum(info["splits"].values()) == recorded.num_episodes
