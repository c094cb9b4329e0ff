"""Bad input of every kind ends in one line on stderr, exit status 2, and nothing written.

Each test drives the real command line entry point, `dreamer.cli.main`, in-process on a
real file made broken in one particular way, and checks the whole contract: return value
2, exactly one stderr line ``dreamer: error: <path>: <problem>`` naming the file at fault,
no traceback, nothing on stdout, no ``--out`` folder and no hidden staging folder left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.dataset.minari_storage import MinariStorage

from dreamer.cli import main
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task

USAGE_ERROR = 2


# --------------------------------------------------------------------------- helpers


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``dreamer ARGV`` in-process; the return value, stdout and stderr it produced."""
    capsys.readouterr()  # drop whatever earlier steps of the test printed
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, argv, path, out: Path) -> str:
    """Check the whole bad-input contract for ``dreamer ARGV``; return the problem text."""
    code, stdout, stderr = run_cli(capsys, *argv)
    assert code == USAGE_ERROR, f"exit {code}, stderr: {stderr!r}"
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {stderr!r}"
    assert stderr.endswith("\n")
    prefix = f"dreamer: error: {path}: "
    assert lines[0].startswith(prefix), f"{lines[0]!r} does not start with {prefix!r}"
    problem = lines[0][len(prefix):]
    assert problem.strip(), "the problem is empty"
    assert stdout == "", f"stdout should be empty on error, got {stdout!r}"
    assert_nothing_written(out)
    return problem


def assert_nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was written although the command failed"
    hidden = sorted(p.name for p in out.parent.iterdir() if p.name.startswith("."))
    assert hidden == [], f"staging folders left next to {out}: {hidden}"
    staging = [
        str(p) for p in out.parent.rglob("*") if ".writing" in p.name or ".replaced-" in p.name
    ]
    assert staging == [], f"staging folders left behind: {staging}"


def collect(capsys, out: Path, task: str = "pendulum", data_format: str = "hdf5", episodes: int = 3) -> Path:
    """A real trace file written by ``dreamer collect``."""
    code, _, stderr = run_cli(
        capsys, "collect", "--task", task, "--out", out, "--episodes", episodes,
        "--num-envs", episodes, "--format", data_format,
    )
    assert code == 0, stderr
    return out


def record(task_name: str, count: int = 3, seed: int = 0):
    task = get_task(task_name)
    return record_episodes(
        task, RandomPolicy(task.action_space), reset_seeds(seed, count), num_envs=count, progress=False
    )


def transitions(episodes) -> dict[str, np.ndarray]:
    """Recorded episodes as the flat D4RL-style arrays (plus next_observations)."""
    last_steps = episodes.step_offsets[1:] - 1
    timeouts = np.zeros(episodes.num_steps, dtype=bool)
    timeouts[last_steps] = ~episodes.terminations[last_steps]
    return {
        "observations": np.concatenate([e.observations[:-1] for e in episodes]),
        "next_observations": np.concatenate([e.observations[1:] for e in episodes]),
        "actions": np.array(episodes.actions),
        "rewards": np.array(episodes.rewards),
        "terminals": np.array(episodes.terminations),
        "timeouts": timeouts,
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture
def pendulum_arrays():
    return transitions(record("pendulum"))


@pytest.fixture
def cartpole_arrays():
    arrays = transitions(record("cartpole"))
    assert arrays["terminals"].any(), "a random cartpole policy should end in a termination"
    return arrays


def import_argv(source: Path, out: Path, task: str = "pendulum") -> list:
    return ["traces", "import", source, "--task", task, "--out", out]


# --------------------------------------------------------------------------- controls


def test_the_untouched_inputs_are_accepted(capsys, tmp_path, pendulum_arrays, cartpole_arrays):
    """The files the other tests break are fine before they are broken."""
    for data_format in ("hdf5", "arrow"):
        dataset = collect(capsys, tmp_path / f"pendulum-{data_format}", data_format=data_format)
        code, _, stderr = run_cli(capsys, "traces", "info", dataset, "--task", "pendulum")
        assert (code, stderr) == (0, "")
    for task, arrays in (("pendulum", pendulum_arrays), ("cartpole", cartpole_arrays)):
        source = write_npz(tmp_path / f"{task}.npz", arrays)
        code, _, stderr = run_cli(capsys, *import_argv(source, tmp_path / f"{task}-imported", task))
        assert (code, stderr) == (0, "")


# --------------------------------------------------------------------------- paths


def test_missing_path_names_the_path(capsys, tmp_path):
    missing = "/nonexistent"
    assert not Path(missing).exists()
    problem = assert_refused(
        capsys, ["traces", "info", missing, "--out", tmp_path / "info"], missing, tmp_path / "info"
    )
    assert "no such file" in problem


def test_folder_that_is_not_a_dataset_is_refused(capsys, tmp_path):
    folder = tmp_path / "just-a-folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a dataset\n")
    problem = assert_refused(
        capsys, ["traces", "info", folder, "--out", tmp_path / "info"], folder, tmp_path / "info"
    )
    assert "not a Minari dataset" in problem


def test_missing_path_through_the_console_script_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "no-such-traces"
    result = subprocess.run(
        [sys.executable, "-m", "dreamer.cli", "traces", "info", str(missing)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "datasets")},
    )
    assert result.returncode == USAGE_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dreamer: error: {missing}: ")
    assert result.stdout == ""


# --------------------------------------------------------------------------- corrupt files


def test_truncated_hdf5_dataset_is_reported_as_corrupt(capsys, tmp_path):
    dataset = collect(capsys, tmp_path / "traces")
    main_file = dataset / "data" / "main_data.hdf5"
    os.truncate(main_file, main_file.stat().st_size // 2)
    problem = assert_refused(
        capsys, ["traces", "info", dataset, "--out", tmp_path / "info"], dataset, tmp_path / "info"
    )
    assert "corrupt or truncated" in problem


def test_corrupt_arrow_dataset_is_reported_as_corrupt(capsys, tmp_path):
    dataset = collect(capsys, tmp_path / "traces", data_format="arrow")
    episode_files = sorted((dataset / "data").glob("*/*.arrow"))
    assert len(episode_files) == 3, episode_files
    episode_files[1].write_bytes(b"\x00garbage, not an Arrow file\xff" * 64)
    problem = assert_refused(
        capsys, ["traces", "info", dataset, "--out", tmp_path / "info"], dataset, tmp_path / "info"
    )
    assert "corrupt or truncated" in problem


def test_truncated_npz_is_reported_as_corrupt(capsys, tmp_path, pendulum_arrays):
    source = write_npz(tmp_path / "log.npz", pendulum_arrays)
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out), source, out)
    assert "corrupt or truncated npz" in problem


# --------------------------------------------------------------------------- bad values


def test_nan_in_observations_is_refused(capsys, tmp_path, pendulum_arrays):
    pendulum_arrays["observations"][250, 1] = np.nan  # episode 1, step 50
    source = write_npz(tmp_path / "log.npz", pendulum_arrays)
    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out), source, out)
    assert "episode 1" in problem
    assert "NaN or Inf" in problem and "observations" in problem


def test_inf_in_rewards_is_refused(capsys, tmp_path, pendulum_arrays):
    pendulum_arrays["rewards"][7] = np.inf
    source = write_npz(tmp_path / "log.npz", pendulum_arrays)
    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out), source, out)
    assert "episode 0" in problem
    assert "NaN or Inf" in problem and "rewards" in problem


def test_fields_of_mismatched_length_are_refused(capsys, tmp_path, pendulum_arrays):
    pendulum_arrays["actions"] = pendulum_arrays["actions"][:-1]
    source = write_npz(tmp_path / "log.npz", pendulum_arrays)
    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out), source, out)
    rows = len(pendulum_arrays["rewards"])
    assert f"actions has {rows - 1} rows" in problem and f"rewards has {rows}" in problem


def test_continuous_action_outside_the_bounds_is_refused(capsys, tmp_path, pendulum_arrays):
    pendulum_arrays["actions"][203] = 5.0  # episode 1, step 3; pendulum's bounds are ±2
    source = write_npz(tmp_path / "log.npz", pendulum_arrays)
    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out), source, out)
    assert "episode 1" in problem and "step 3" in problem
    assert "outside the action space" in problem


def test_discrete_action_outside_the_space_is_refused(capsys, tmp_path, cartpole_arrays):
    cartpole_arrays["actions"][3] = 2  # Discrete(2) holds 0 and 1
    source = write_npz(tmp_path / "log.npz", cartpole_arrays)
    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out, task="cartpole"), source, out)
    assert "episode 0" in problem and "step 3" in problem
    assert "outside the action space Discrete(2)" in problem


def test_out_of_space_message_stays_on_one_line_for_a_wide_action(capsys, tmp_path):
    pytest.importorskip("mujoco")
    rng = np.random.default_rng(0)
    rows = 10
    actions = rng.uniform(-1.0, 1.0, size=(rows, 8)).astype(np.float32)
    actions[4, 0] = 1.25  # an unclipped policy output; the bounds are ±1
    source = write_npz(
        tmp_path / "ant.npz",
        {
            "observations": rng.normal(size=(rows, 105)),
            "next_observations": rng.normal(size=(rows, 105)),
            "actions": actions,
            "rewards": rng.normal(size=rows).astype(np.float32),
            "terminals": np.zeros(rows, dtype=bool),
            "timeouts": np.arange(rows) == rows - 1,
        },
    )
    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out, task="gym:Ant-v5"), source, out)
    assert "outside the action space" in problem


# --------------------------------------------------------------------------- spaces


def test_npz_from_another_task_is_refused(capsys, tmp_path, pendulum_arrays):
    source = write_npz(tmp_path / "pendulum.npz", pendulum_arrays)
    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out, task="cartpole"), source, out)
    assert "observations have shape (3,) per step, the space says (4,)" in problem


def test_dataset_checked_against_another_task_is_refused(capsys, tmp_path):
    dataset = collect(capsys, tmp_path / "traces")
    problem = assert_refused(
        capsys,
        ["traces", "info", dataset, "--task", "cartpole", "--out", tmp_path / "info"],
        dataset,
        tmp_path / "info",
    )
    assert "does not match task cartpole" in problem


def test_mismatched_mujoco_task_through_the_console_script_prints_one_line(capsys, tmp_path):
    pytest.importorskip("mujoco")
    dataset = collect(capsys, tmp_path / "traces")
    result = subprocess.run(
        [sys.executable, "-m", "dreamer.cli", "traces", "info", str(dataset), "--task", "halfcheetah"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == USAGE_ERROR, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"dreamer: error: {dataset}: ")


# --------------------------------------------------------------------------- empty


def write_empty_dataset(path: Path) -> Path:
    """A Minari dataset with zero episodes, as MinariStorage creates it."""
    path.mkdir()
    task = get_task("pendulum")
    storage = MinariStorage.new(
        path / "data",
        observation_space=task.observation_space,
        action_space=task.action_space,
        data_format="hdf5",
    )
    storage.update_metadata({"dataset_id": "empty-v0", "minari_version": minari.__version__})
    return path


def test_empty_dataset_is_refused(capsys, tmp_path):
    dataset = write_empty_dataset(tmp_path / "empty")
    assert MinariStorage.read(dataset / "data").total_episodes == 0
    assert_refused(
        capsys, ["traces", "info", dataset, "--out", tmp_path / "info"], dataset, tmp_path / "info"
    )


def test_empty_dataset_is_reported_as_holding_no_episodes(capsys, tmp_path):
    dataset = write_empty_dataset(tmp_path / "empty")
    problem = assert_refused(
        capsys, ["traces", "info", dataset, "--out", tmp_path / "info"], dataset, tmp_path / "info"
    )
    assert "no episodes" in problem


def test_episode_of_length_zero_is_refused(capsys, tmp_path):
    # minari 0.5.4 refuses to write an EpisodeBuffer with no actions (HDF5: IndexError in
    # _add_episode_to_group; Arrow: ValueError in _encode_space), so episode 1 is added
    # with h5py in exactly the layout minari writes, after a real episode 0.
    dataset = tmp_path / "zero"
    dataset.mkdir()
    task = get_task("pendulum")
    recorded = record("pendulum", count=1)
    storage = MinariStorage.new(
        dataset / "data",
        observation_space=task.observation_space,
        action_space=task.action_space,
        data_format="hdf5",
        jpeg_encoding=False,
    )
    first = recorded.episode(0)
    storage.update_episodes(
        [
            EpisodeBuffer(
                seed=first.seed,
                observations=first.observations,
                actions=first.actions,
                rewards=first.rewards,
                terminations=first.terminations,
                truncations=first.truncations,
            )
        ]
    )
    with h5py.File(dataset / "data" / "main_data.hdf5", "a", track_order=True) as file:
        group = file.create_group("episode_1")
        group.attrs.update({"id": 1, "seed": 7, "total_steps": 0})
        group.create_dataset("observations", data=first.observations[:1])
        group.create_dataset("actions", data=np.zeros((0, 1), dtype=np.float32))
        group.create_dataset("rewards", data=np.zeros(0, dtype=np.float32))
        group.create_dataset("terminations", data=np.zeros(0, dtype=bool))
        group.create_dataset("truncations", data=np.zeros(0, dtype=bool))
    storage.update_metadata(
        {
            "dataset_id": "zero-v0",
            "minari_version": minari.__version__,
            "total_episodes": 2,
            "total_steps": len(first),
        }
    )
    reread = MinariStorage.read(dataset / "data")
    assert reread.total_episodes == 2
    assert len(list(reread.get_episodes([1]))[0]["rewards"]) == 0

    problem = assert_refused(
        capsys, ["traces", "info", dataset, "--out", tmp_path / "info"], dataset, tmp_path / "info"
    )
    assert "episode 1 has length 0" in problem


# --------------------------------------------------------------------------- pickles


def _leave_marker(path: str) -> str:
    """What unpickling a `_Booby` runs: it leaves a file behind as evidence."""
    Path(path).write_text("unpickled\n")
    return path


class _Booby:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_leave_marker, (self.marker,))


def test_npz_with_pickled_objects_is_refused_without_unpickling(capsys, tmp_path, pendulum_arrays):
    marker = tmp_path / "unpickled.marker"
    rows = len(pendulum_arrays["rewards"])
    booby = np.empty(rows, dtype=object)
    booby[:] = [_Booby(marker) for _ in range(rows)]
    pendulum_arrays["observations"] = booby
    source = write_npz(tmp_path / "log.npz", pendulum_arrays)
    assert not marker.exists()

    out = tmp_path / "imported"
    problem = assert_refused(capsys, import_argv(source, out), source, out)
    assert "pickled objects" in problem
    assert not marker.exists(), "the pickle in the npz was loaded"

    # The payload is live: loading it with pickles allowed does leave the marker.
    with np.load(source, allow_pickle=True) as archive:
        archive["observations"]
    assert marker.exists()


# --------------------------------------------------------------------------- strict readers


def write_csv(path: Path, arrays: dict[str, np.ndarray], overrides: dict[str, list] | None = None) -> Path:
    """The arrays as a CSV table (one row per transition), with some columns' text replaced."""
    rows = len(arrays["rewards"])
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    episode = np.searchsorted(ends, np.arange(rows))
    step = np.arange(rows) - np.concatenate([[0], ends + 1])[episode]
    columns: dict[str, list] = {"episode": list(episode), "step": list(step)}
    for i in range(arrays["observations"].shape[1]):
        columns[f"obs_{i}"] = list(arrays["observations"][:, i])
        columns[f"next_obs_{i}"] = list(arrays["next_observations"][:, i])
    actions = arrays["actions"].reshape(rows, -1)
    for i in range(actions.shape[1]):
        columns[f"action_{i}"] = list(actions[:, i])
    columns["reward"] = list(arrays["rewards"])
    columns["terminated"] = ["True" if t else "False" for t in arrays["terminals"]]
    columns["truncated"] = ["True" if t else "False" for t in arrays["timeouts"]]
    for name, values in (overrides or {}).items():
        columns[name] = values
    lines = [",".join(columns)] + [",".join(str(columns[name][row]) for name in columns) for row in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_untouched_csv_is_accepted(capsys, tmp_path, pendulum_arrays):
    source = write_csv(tmp_path / "log.csv", pendulum_arrays)
    code, _, stderr = run_cli(capsys, *import_argv(source, tmp_path / "out"))
    assert code == 0, stderr
    assert read_episode_count(tmp_path / "out") == 3


def read_episode_count(path: Path) -> int:
    from tasks.traces import read_traces

    return read_traces(path).episodes.num_episodes


@pytest.mark.parametrize("spelling", ["yes/no", "one stray word"])
def test_csv_booleans_only_in_their_usual_spellings(capsys, tmp_path, pendulum_arrays, spelling):
    rows = len(pendulum_arrays["rewards"])
    if spelling == "yes/no":
        terminated = ["yes" if t else "no" for t in pendulum_arrays["terminals"]]
    else:
        terminated = ["False"] * rows
        terminated[17] = "nope"
    source = write_csv(tmp_path / "log.csv", pendulum_arrays, {"terminated": terminated})
    problem = assert_refused(capsys, import_argv(source, tmp_path / "out"), source, tmp_path / "out")
    assert "terminated row" in problem and "is not a boolean" in problem


def test_csv_step_must_be_an_integer(capsys, tmp_path, pendulum_arrays):
    step = list(range(len(pendulum_arrays["rewards"])))
    step[5] = "5b"
    source = write_csv(tmp_path / "log.csv", pendulum_arrays, {"step": step})
    problem = assert_refused(capsys, import_argv(source, tmp_path / "out"), source, tmp_path / "out")
    assert problem.startswith("step row 5: '5b' is not")


def test_csv_non_numeric_observation_is_one_line(capsys, tmp_path, pendulum_arrays):
    values = list(pendulum_arrays["observations"][:, 1])
    values[40] = "about 0.3"
    source = write_csv(tmp_path / "log.csv", pendulum_arrays, {"obs_1": values})
    problem = assert_refused(capsys, import_argv(source, tmp_path / "out"), source, tmp_path / "out")
    assert problem == "obs_1 row 40: 'about 0.3' is not a number"


def test_csv_negative_seed_is_refused(capsys, tmp_path, pendulum_arrays):
    seeds = [3] * len(pendulum_arrays["rewards"])
    seeds[-1] = -4
    source = write_csv(tmp_path / "log.csv", pendulum_arrays, {"seed": seeds})
    problem = assert_refused(capsys, import_argv(source, tmp_path / "out"), source, tmp_path / "out")
    assert "seed row" in problem and "is below 0" in problem


@pytest.mark.parametrize("value", [0.5, 2.0])
def test_npz_terminals_must_be_zero_or_one(capsys, tmp_path, pendulum_arrays, value):
    terminals = pendulum_arrays["terminals"].astype(np.float64)
    terminals[9] = value
    pendulum_arrays["terminals"] = terminals
    source = write_npz(tmp_path / "log.npz", pendulum_arrays)
    problem = assert_refused(capsys, import_argv(source, tmp_path / "out"), source, tmp_path / "out")
    assert problem.startswith(f"terminals row 9: {value} is not a boolean")


def test_npz_complex_observations_are_refused(capsys, tmp_path, pendulum_arrays):
    pendulum_arrays["observations"] = pendulum_arrays["observations"] + 1j
    source = write_npz(tmp_path / "log.npz", pendulum_arrays)
    problem = assert_refused(capsys, import_argv(source, tmp_path / "out"), source, tmp_path / "out")
    assert "complex" in problem


def test_arrow_dataset_missing_an_episode_file_is_refused(capsys, tmp_path):
    dataset = collect(capsys, tmp_path / "traces", data_format="arrow")
    episode_files = sorted((dataset / "data").glob("*/*.arrow"))
    assert len(episode_files) == 3, episode_files
    episode_files[1].unlink()  # its folder stays, empty
    problem = assert_refused(capsys, ["traces", "info", dataset, "--out", tmp_path / "info"], dataset, tmp_path / "info")
    assert "the metadata says 3 episodes but 2 could be read" in problem


def test_observations_outside_the_recorded_space_are_refused_by_every_command(capsys, tmp_path):
    """Pendulum's angular velocity is at most 8: data at 50 disagrees with the recorded space."""
    dataset = collect(capsys, tmp_path / "traces")
    with h5py.File(dataset / "data" / "main_data.hdf5", "a") as file:
        observations = file["episode_1"]["observations"]
        values = observations[...]
        values[7, 2] = 50.0
        observations[...] = values
    problems = set()
    for argv in (["traces", "info", dataset], ["fit", "--traces", dataset], ["traces", "export", dataset]):
        out = tmp_path / f"out-{argv[0]}-{argv[1]}"
        problems.add(assert_refused(capsys, [*argv, "--out", out], dataset, out))
    assert len(problems) == 1, problems  # the same rule, the same message, whichever command reads it
    assert problems.pop().startswith("episode 1: observation at step 7 is outside the observation space")
