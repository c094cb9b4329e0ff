"""Trace files: Minari datasets read and written through the `minari` library.

A trace location is a dataset folder (the one holding ``data/``), that ``data/`` folder
itself, or a dataset id under ``MINARI_DATASETS_PATH``; datasets written by anyone's
``minari.DataCollector``, in the HDF5 or Arrow backend, load as they are. Writes go to a
temporary folder that is renamed into place, so a failure never leaves half a dataset.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.dataset.minari_storage import MinariStorage

from tasks.episodes import UNKNOWN_SEED, Episode, Episodes
from tasks.errors import InputError
from tasks.registry import Task, check_spaces_match, get_task, task_for_env_id
from tasks.validation import check_supported_spaces, validate_episode, validate_episodes

DATA_FORMATS = ("hdf5", "arrow")
METADATA_FILE = "metadata.json"
TASK_METADATA_KEY = "dreamer_task"


@dataclasses.dataclass(frozen=True)
class Traces:
    """A loaded trace file: its episodes, spaces and where it came from.

    Attributes:
        episodes: every episode in the file, in file order.
        observation_space: the dataset's observation space.
        action_space: the dataset's action space.
        task: the task that recorded it (from our metadata, else the env spec), if known.
        data_path: the dataset's ``data/`` folder.
        data_format: ``hdf5`` or ``arrow``.
    """

    episodes: Episodes
    observation_space: gym.Space
    action_space: gym.Space
    task: Task | None
    data_path: Path
    data_format: str

    @property
    def dataset_path(self) -> Path:
        """The folder holding ``data/``."""
        return self.data_path.parent


def resolve_data_path(location: str | os.PathLike) -> Path:
    """The ``data/`` folder of a dataset given as a folder, its data folder, or an id.

    Raises:
        InputError: nothing is there, or it is not a Minari dataset.
    """
    path = Path(location)
    if path.is_dir():
        if (path / METADATA_FILE).is_file():
            return path
        if (path / "data" / METADATA_FILE).is_file():
            return path / "data"
        raise InputError(path, "not a Minari dataset (no data/metadata.json inside)")
    if path.exists():
        raise InputError(path, "not a Minari dataset (a file, expected a dataset folder)")
    by_id = _datasets_root() / str(location) / "data"
    if (by_id / METADATA_FILE).is_file():
        return by_id
    raise InputError(
        path, f"no such file or folder, nor a dataset id under MINARI_DATASETS_PATH ({_datasets_root()})"
    )


def read_traces(location: str | os.PathLike, task: Task | None = None) -> Traces:
    """Load and validate every episode of a trace file.

    Args:
        location: dataset folder, its ``data/`` folder, or a dataset id.
        task: if given, the file's spaces must be this task's.

    Raises:
        InputError: the file is missing, unreadable, empty, or holds a bad episode.
    """
    data_path = resolve_data_path(location).absolute()
    shown = str(location)
    storage = _open_storage(data_path, shown)
    observation_space, action_space = storage.observation_space, storage.action_space
    check_supported_spaces(observation_space, action_space, shown)
    metadata = storage.metadata
    recorded_task = _recorded_task(metadata)
    if task is not None:
        check_spaces_match(task, observation_space, action_space, shown)
    task = task or recorded_task

    total = int(storage.total_episodes)
    if total == 0:
        raise InputError(shown, "the dataset holds no episodes")
    try:
        raw_episodes = list(storage.get_episodes(range(total)))
        seeds = [m.get("seed") for m in storage.get_episode_metadata(range(total))]
    except InputError:
        raise
    except Exception as error:  # h5py, pyarrow and json each fail their own way
        raise InputError(shown, f"corrupt or truncated dataset ({_first_line(error)})") from None

    episodes = []
    for index, (raw, seed) in enumerate(zip(raw_episodes, seeds)):
        episode = _episode_from_minari(raw, seed, observation_space, action_space, index, shown)
        validate_episode(episode, index, observation_space, action_space, shown)
        episodes.append(episode)
    return Traces(
        episodes=Episodes.from_list(episodes),
        observation_space=observation_space,
        action_space=action_space,
        task=task,
        data_path=data_path,
        data_format=metadata.get("data_format", "hdf5"),
    )


def write_traces(
    out: str | os.PathLike,
    episodes: Episodes,
    task: Task,
    data_format: str = "hdf5",
    algorithm_name: str | None = None,
) -> Path:
    """Write a new trace file at ``out`` (a dataset folder that will hold ``data/``).

    Raises:
        InputError: ``out`` already exists, or an episode does not fit the task's spaces.
    """
    out = Path(out)
    if data_format not in DATA_FORMATS:
        raise InputError(data_format, f"unknown trace format (choose from {', '.join(DATA_FORMATS)})")
    if out.exists() and any(out.iterdir()):
        raise InputError(out, "already exists (append to it, or choose another --out)")
    validate_episodes(episodes, task.observation_space, task.action_space, str(out))

    staging = _staging_path(out)
    try:
        staging.mkdir()
        storage = MinariStorage.new(
            staging / "data",
            observation_space=task.observation_space,
            action_space=task.action_space,
            env_spec=_env_spec(task),
            data_format=data_format,
            jpeg_encoding=False,
        )
        storage.update_episodes(_episode_buffers(episodes))
        storage.update_metadata(
            {
                "dataset_id": _dataset_id(out),
                "minari_version": minari.__version__,
                "algorithm_name": algorithm_name or "dreamer",
                TASK_METADATA_KEY: task.name,
            }
        )
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "data"


def append_traces(location: str | os.PathLike, episodes: Episodes) -> Traces:
    """Append episodes to an existing trace file, leaving its old episodes untouched.

    The dataset is copied, appended to, and swapped in, so a failure keeps the old file.
    Returns the whole file as read back after the append.
    """
    existing = read_traces(location)
    shown = str(location)
    validate_episodes(episodes, existing.observation_space, existing.action_space, shown)
    dataset_path = existing.dataset_path
    if existing.data_path.name != "data":
        raise InputError(shown, "can only append to a dataset folder whose data sits in data/")

    staging = _staging_path(dataset_path)
    retired = dataset_path.with_name(f".{dataset_path.name}.replaced-{os.getpid()}")
    try:
        shutil.copytree(dataset_path, staging)
        storage = MinariStorage.read(staging / "data")
        storage.update_episodes(_episode_buffers(episodes))
        dataset_path.rename(retired)
        staging.rename(dataset_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return read_traces(dataset_path)


def _open_storage(data_path: Path, shown: str) -> MinariStorage:
    try:
        return MinariStorage.read(data_path)
    except Exception as error:
        raise InputError(shown, f"not a readable Minari dataset ({_first_line(error)})") from None


def _recorded_task(metadata: dict) -> Task | None:
    try:
        if metadata.get(TASK_METADATA_KEY):
            return get_task(metadata[TASK_METADATA_KEY])
        env_spec = metadata.get("env_spec")
        if env_spec:
            return task_for_env_id(gym.envs.registration.EnvSpec.from_json(env_spec).id)
    except Exception:
        # A dataset from an environment that is not installed here is still readable;
        # it just has no task until one is given.
        return None
    return None


def keep_first_episodes(location: str | os.PathLike, count: int) -> Episodes:
    """Cut a trace file back to its first ``count`` episodes (for resuming a killed run).

    The kept episodes are rewritten unchanged into a new dataset that replaces the old
    one; nothing happens if the file holds no more than ``count`` episodes.
    """
    existing = read_traces(location)
    if existing.episodes.num_episodes <= count:
        return existing.episodes
    if existing.task is None:
        raise InputError(location, "names no task, so it cannot be rewritten")
    kept = existing.episodes.select(range(count))
    dataset_path = existing.dataset_path
    rewritten = dataset_path.with_name(f".{dataset_path.name}.kept-{os.getpid()}")
    shutil.rmtree(rewritten, ignore_errors=True)
    write_traces(rewritten, kept, existing.task, existing.data_format, algorithm_name="dreamer (resumed)")
    retired = dataset_path.with_name(f".{dataset_path.name}.replaced-{os.getpid()}")
    dataset_path.rename(retired)
    rewritten.rename(dataset_path)
    shutil.rmtree(retired, ignore_errors=True)
    return kept


def _episode_from_minari(raw: dict, seed, observation_space, action_space, index: int, path: str) -> Episode:
    def as_array(field: str, space: gym.Space | None = None) -> np.ndarray:
        value = raw[field]
        if isinstance(value, (dict, tuple)):
            raise InputError(path, f"episode {index}: nested {field} are not supported")
        array = np.asarray(value)
        if isinstance(space, gym.spaces.Discrete):
            array = array.reshape(len(array))
        return array

    return Episode(
        observations=as_array("observations", observation_space),
        actions=as_array("actions", action_space),
        rewards=as_array("rewards").astype(np.float32).reshape(-1),
        terminations=as_array("terminations").astype(bool).reshape(-1),
        truncations=as_array("truncations").astype(bool).reshape(-1),
        seed=UNKNOWN_SEED if seed is None else int(seed),
    )


def _episode_buffers(episodes: Episodes) -> list[EpisodeBuffer]:
    return [
        EpisodeBuffer(
            seed=None if episode.seed == UNKNOWN_SEED else int(episode.seed),
            observations=np.asarray(episode.observations),
            actions=np.asarray(episode.actions),
            rewards=np.asarray(episode.rewards),
            terminations=np.asarray(episode.terminations),
            truncations=np.asarray(episode.truncations),
        )
        for episode in episodes
    ]


def _env_spec(task: Task) -> gym.envs.registration.EnvSpec:
    return dataclasses.replace(gym.spec(task.env_id), max_episode_steps=task.horizon)


def _dataset_id(out: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", out.name).strip("-") or "traces"
    return name if re.search(r"-v\d+$", name) else f"{name}-v0"


def _staging_path(out: Path) -> Path:
    # Absolute, because minari's size bookkeeping mis-joins relative paths.
    out = out.absolute()
    staging = out.with_name(f".{out.name}.writing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    return staging


def _datasets_root() -> Path:
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
