"""Trace files: Minari datasets read and written through the `minari` library.

A trace location is a dataset folder (the one holding ``data/``), that ``data/`` folder
itself, or a dataset id under ``MINARI_DATASETS_PATH``; datasets written by anyone's
``minari.DataCollector``, in the HDF5 or Arrow backend, load as they are. One writer at
a time holds a dataset's lock, so no append is ever lost, and a failure (or a kill)
never leaves half a dataset: a new file is built in a temporary folder and renamed into
place; an append to an Arrow dataset, which keeps each episode in a folder of its own,
writes only the new episodes and then the metadata, behind a journal that the next
writer or reader uses to undo it if it did not finish (so appending costs what the new
episodes cost, not the whole file); an append to an HDF5 file, which an append rewrites,
goes to a copy that is swapped in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.dataset.minari_storage import MinariStorage

from tasks.episodes import NO_POLICY_VERSION, UNKNOWN_SEED, Episode, Episodes, content_id
from tasks.errors import InputError
from tasks.locks import exclusive_lock
from tasks.registry import Task, check_spaces_match, get_task, observation_kind, task_for_env_id
from tasks.strict_values import as_booleans, as_reals
from tasks.validation import check_supported_spaces, validate_episode, validate_episodes

DATA_FORMATS = ("hdf5", "arrow")
METADATA_FILE = "metadata.json"
TASK_METADATA_KEY = "dreamer_task"
ENV_KWARGS_METADATA_KEY = "dreamer_env_kwargs"  # the task's --env-kwargs, as JSON
POLICY_VERSION_KEY = "policy_version"  # episode metadata: the run's policy version that recorded it
CONTENT_ID_KEY = "content_id"  # episode metadata: `tasks.episodes.content_id` of the episode as stored
STAMP_CHUNK = 64  # episodes read back at a time to hash their content ids as written
APPEND_JOURNAL = ".append-journal.json"  # beside data/: the metadata as it was before an unfinished append
APPEND_STAGING = ".append-staging"  # beside data/: an append's new episodes before they move into data/
LOCK_TIMEOUT_VARIABLE = "DREAMER_LOCK_TIMEOUT"  # seconds a writer waits for another (default 600)


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
    if (data_path.parent / APPEND_JOURNAL).is_file():
        finish_interrupted_writes(data_path.parent)  # waits for the writer, or undoes a killed append
    storage = open_storage(data_path, shown)
    observation_space, action_space = storage.observation_space, storage.action_space
    check_supported_spaces(observation_space, action_space, shown)
    metadata = storage.metadata
    if metadata.get("jpeg_encoding", False) and observation_kind(observation_space) == "image":
        # Minari decodes them; what was lost to JPEG is lost to every model and check too.
        print(f"{shown}: frames stored JPEG-encoded (lossy) are read decoded", file=sys.stderr)
    if task is not None:
        check_spaces_match(task, observation_space, action_space, shown)
    task = task or recorded_task(metadata)

    total = int(storage.total_episodes)
    if total == 0:
        raise InputError(shown, "the dataset holds no episodes")
    episodes = read_episodes(storage, range(total), shown)
    return Traces(
        episodes=Episodes.from_list(episodes),
        observation_space=observation_space,
        action_space=action_space,
        task=task,
        data_path=data_path,
        data_format=metadata.get("data_format", "hdf5"),
    )


def read_episodes(storage: MinariStorage, indices: range | list[int] | np.ndarray, shown: str) -> list[Episode]:
    """The episodes at ``indices`` of an open dataset, each checked against its spaces.

    Raises:
        InputError: naming ``shown``, if an episode is missing, damaged or unusable.
    """
    indices = [int(index) for index in indices]
    try:
        raw_episodes = list(storage.get_episodes(indices))
        episode_metadata = list(storage.get_episode_metadata(indices))
    except InputError:
        raise
    except Exception as error:  # h5py, pyarrow and json each fail their own way
        raise InputError(shown, f"corrupt or truncated dataset ({_first_line(error)})") from None
    if len(raw_episodes) != len(indices) or len(episode_metadata) != len(indices):
        # Arrow keeps one file per episode: a missing file silently drops that episode.
        missing = len(indices) - min(len(raw_episodes), len(episode_metadata))
        raise InputError(shown, f"the metadata says {int(storage.total_episodes)} episodes but "
                                f"{int(storage.total_episodes) - missing} could be read (episode data missing or damaged)")
    episodes = []
    for index, raw, recorded in zip(indices, raw_episodes, episode_metadata):
        episode = _episode_from_minari(raw, recorded, storage.observation_space, storage.action_space, index, shown)
        validate_episode(episode, index, storage.observation_space, storage.action_space, shown)
        episodes.append(episode)
    return episodes


def write_traces(
    out: str | os.PathLike,
    episodes: Episodes,
    task: Task,
    data_format: str = "hdf5",
    algorithm_name: str | None = None,
    lock_timeout: float | None = None,
) -> Path:
    """Write a new trace file at ``out`` (a dataset folder that will hold ``data/``).

    Raises:
        InputError: ``out`` already exists, cannot be written, is being written by another
            process for longer than ``lock_timeout`` seconds, or an episode does not fit
            the task's spaces.
    """
    out = Path(out)
    if data_format not in DATA_FORMATS:
        raise InputError(data_format, f"unknown trace format (choose from {', '.join(DATA_FORMATS)})")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(out, "already exists (append to it, or choose another --out)")
    validate_episodes(episodes, task.observation_space, task.action_space, str(out))
    with locked_for_writing(out, lock_timeout) as target:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InputError(out, "already exists (append to it, or choose another --out)")
        with _staging(target) as staging:
            _write_dataset(staging, episodes, task, data_format, algorithm_name or "dreamer", _dataset_id(out))
            if target.exists():
                target.rmdir()
            staging.rename(target)
    return out / "data"


def append_traces(location: str | os.PathLike, episodes: Episodes, lock_timeout: float | None = None) -> int:
    """Append episodes to an existing trace file, leaving its old episodes untouched.

    One writer at a time: a second waits for the first (up to ``lock_timeout`` seconds),
    then appends to what the first wrote. A failure or a kill at any point keeps the old
    file: an Arrow dataset is appended to in place behind a journal, reading and writing
    only the new episodes; an HDF5 one is copied, appended to and swapped in. A trace
    file reached through a symbolic link is appended to where the link points. Returns
    how many episodes the file holds after the append.
    """
    shown = str(location)
    with locked_for_writing(_dataset_folder(location), lock_timeout, shown=shown) as dataset_path:
        if not (dataset_path / "data" / METADATA_FILE).is_file():
            read_traces(dataset_path)  # says what is wrong with it, if anything
            raise InputError(shown, "can only append to a dataset folder whose data sits in data/")
        storage = open_storage(dataset_path / "data", shown)
        validate_episodes(episodes, storage.observation_space, storage.action_space, shown)
        if storage.metadata.get("data_format", "hdf5") == "arrow":
            _append_in_place(dataset_path, storage, episodes)
        else:
            with _staging(dataset_path) as staging:
                shutil.copytree(dataset_path, staging, dirs_exist_ok=True)
                _add_episodes(MinariStorage.read(staging / "data"), episodes)
                _swap_in(staging, dataset_path)
        return int(MinariStorage.read(dataset_path / "data").total_episodes)


def _append_in_place(dataset_path: Path, storage: MinariStorage, episodes: Episodes) -> None:
    """Add the new episodes' folders to an Arrow dataset, then the metadata that counts them.

    The episodes are written by Minari into a staging dataset of their own (Minari's
    append stats every file of the dataset once per episode, which would make a round's
    append cost grow with the run), then their folders are renamed into ``data/`` under
    the next episode ids. A journal holding the metadata as it was is written (atomically)
    before anything changes and removed once the metadata counts the new episodes; until
    then a reader or the next writer (`_undo_interrupted_append`) puts the old metadata
    back and removes every episode folder past it.
    """
    data = dataset_path / "data"
    before = (data / METADATA_FILE).read_text()
    metadata = json.loads(before)
    first = int(metadata["total_episodes"])
    write_atomically(dataset_path / APPEND_JOURNAL, before)
    staging = dataset_path / APPEND_STAGING
    remove_path(staging)
    staged = MinariStorage.new(staging, observation_space=storage.observation_space,
                               action_space=storage.action_space, data_format="arrow", jpeg_encoding=False)
    _add_episodes(staged, episodes)
    for index in range(episodes.num_episodes):
        folder = data / str(first + index)
        (staging / str(index)).rename(folder)
        episode_metadata = json.loads((folder / METADATA_FILE).read_text())
        (folder / METADATA_FILE).write_text(json.dumps({**episode_metadata, "id": first + index}))
    metadata.update(total_episodes=first + episodes.num_episodes,
                    total_steps=int(metadata["total_steps"]) + int(staged.total_steps),
                    dataset_size=round(float(metadata.get("dataset_size", 0.0)) + float(staged.get_size()), 1))
    write_atomically(data / METADATA_FILE, json.dumps(metadata))
    remove_path(staging)
    (dataset_path / APPEND_JOURNAL).unlink()


def _undo_interrupted_append(dataset_path: Path) -> None:
    """Return a dataset whose append was killed to what it held before (its journal's metadata)."""
    journal = dataset_path / APPEND_JOURNAL
    journal.with_name(journal.name + ".tmp").unlink(missing_ok=True)  # killed while writing the journal
    remove_path(dataset_path / APPEND_STAGING)
    if not journal.is_file():
        return
    metadata = journal.read_text()
    kept = int(json.loads(metadata)["total_episodes"])
    for folder in (dataset_path / "data").iterdir():
        if folder.is_dir() and folder.name.isdigit() and int(folder.name) >= kept:
            remove_path(folder)
    write_atomically(dataset_path / "data" / METADATA_FILE, metadata)
    journal.unlink()


def write_atomically(path: Path, text: str) -> None:
    """``path`` holds either its old content or ``text``, whenever the writer is killed."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def keep_first_episodes(location: str | os.PathLike, count: int) -> Episodes:
    """Cut a trace file back to its first ``count`` episodes (for resuming a killed run).

    The kept episodes are rewritten unchanged into a new dataset that replaces the old
    one; nothing happens if the file holds no more than ``count`` episodes.
    """
    with locked_for_writing(_dataset_folder(location), shown=str(location)) as dataset_path:
        existing = read_traces(dataset_path)
        if existing.episodes.num_episodes <= count:
            return existing.episodes
        if existing.task is None:
            raise InputError(location, "names no task, so it cannot be rewritten")
        kept = existing.episodes.select(range(count))
        with _staging(dataset_path) as staging:
            _write_dataset(staging, kept, existing.task, existing.data_format, "dreamer (resumed)",
                           _dataset_id(dataset_path))
            _swap_in(staging, dataset_path)
        return kept


@contextlib.contextmanager
def locked_for_writing(out: str | os.PathLike, timeout: float | None = None, shown: str | None = None) -> Iterator[Path]:
    """Hold the write lock of the dataset at ``out``; yields its real path (links resolved).

    Whoever holds the lock first clears what writers killed earlier left: staging folders
    are removed, a dataset caught between the two renames of a swap is put back, and an
    in-place append that did not finish is undone. The lock file (``.NAME.lock`` beside the dataset) goes with
    the last holder.

    Raises:
        InputError: naming ``shown`` (default ``out``): another writer held the lock for
            ``timeout`` seconds (default: `write_lock_timeout`), or the folder cannot be
            written.
    """
    shown = shown or str(out)
    timeout = write_lock_timeout() if timeout is None else timeout
    target = Path(out).resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock_file = target.with_name(f".{target.name}.lock")
        with exclusive_lock(lock_file, shown, timeout, remove=True):
            _clear_leftovers(target)
            if target.is_dir():
                _undo_interrupted_append(target)
            yield target
    except NotADirectoryError:
        raise InputError(shown, "sits under a file, not a folder") from None
    except OSError as error:
        raise InputError(shown, f"cannot be written ({(error.strerror or str(error)).lower()})") from None


def finish_interrupted_writes(location: str | os.PathLike) -> None:
    """Clear what killed writers left beside a trace location, so its state is what it seems.

    A dataset caught between the two renames of an append is missing until this puts it
    back, and an unfinished in-place append is undone; a command deciding between writing
    and appending calls this first.
    """
    folder = _dataset_folder(location)
    if folder.parent.is_dir():  # no folder, nothing was ever written there
        with locked_for_writing(folder, shown=str(location)):
            pass


def write_lock_timeout() -> float:
    """Seconds a writer waits for another writer of the same dataset: ``$DREAMER_LOCK_TIMEOUT``, else 600."""
    text = os.environ.get(LOCK_TIMEOUT_VARIABLE, "600")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise InputError(LOCK_TIMEOUT_VARIABLE, f"must be a number of seconds, got {text!r}")
    return seconds


def _dataset_folder(location: str | os.PathLike) -> Path:
    """The real folder holding ``data/`` of a trace location (a folder, its data/, or an id)."""
    path = Path(location)
    if not path.exists() and (_datasets_root() / str(location)).exists():
        path = _datasets_root() / str(location)
    path = path.resolve()
    if path.name == "data" and (path / METADATA_FILE).is_file():
        return path.parent
    return path


def _clear_leftovers(target: Path) -> None:
    """Remove killed writers' staging folders next to ``target``; finish an interrupted swap."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(writing|replaced)-\d+$")
    for leftover in sorted(target.parent.glob(f".{glob.escape(target.name)}.*")):
        match = pattern.match(leftover.name)
        if match is None:
            continue  # not a writer's leftover (another dataset's name may start like this one)
        kind = match.group(1)
        if kind == "replaced" and not target.exists():
            leftover.rename(target)  # killed between the two renames of a swap: the old data is back
        elif kind in ("writing", "replaced"):
            remove_path(leftover)


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``target`` to build into; removed unless renamed away."""
    staging = target.with_name(f".{target.name}.writing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, whichever ``path`` is; nothing if it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging``; a kill between the renames is undone by the next writer."""
    retired = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    target.rename(retired)
    try:
        staging.rename(target)
    except BaseException:
        retired.rename(target)  # the old data stays where readers look for it
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _write_dataset(folder: Path, episodes: Episodes, task: Task, data_format: str,
                   algorithm_name: str, dataset_id: str) -> None:
    """A new Minari dataset holding ``episodes`` in the empty ``folder``."""
    storage = MinariStorage.new(
        folder / "data",
        observation_space=task.observation_space,
        action_space=task.action_space,
        env_spec=_env_spec(task),
        data_format=data_format,
        jpeg_encoding=False,
    )
    _add_episodes(storage, episodes)
    storage.update_metadata(
        {
            "dataset_id": dataset_id,
            "minari_version": minari.__version__,
            "algorithm_name": algorithm_name,
            TASK_METADATA_KEY: task.name,
            ENV_KWARGS_METADATA_KEY: task.env_kwargs_json,
        }
    )


def open_storage(data_path: Path, shown: str) -> MinariStorage:
    try:
        return MinariStorage.read(data_path)
    except Exception as error:
        raise InputError(shown, f"not a readable Minari dataset ({_first_line(error)})") from None


def recorded_task(metadata: dict) -> Task | None:
    try:
        if metadata.get(TASK_METADATA_KEY):
            return get_task(metadata[TASK_METADATA_KEY], json.loads(metadata.get(ENV_KWARGS_METADATA_KEY) or "{}"))
        env_spec = metadata.get("env_spec")
        if env_spec:
            return task_for_env_id(gym.envs.registration.EnvSpec.from_json(env_spec).id)
    except Exception:
        # A dataset from an environment that is not installed here is still readable;
        # it just has no task until one is given.
        return None
    return None


def _episode_from_minari(raw: dict, recorded: dict, observation_space, action_space, index: int, path: str) -> Episode:
    def as_array(field: str, space: gym.Space | None = None) -> np.ndarray:
        value = raw[field]
        if isinstance(value, (dict, tuple)):
            raise InputError(path, f"episode {index}: nested {field} are not supported")
        array = np.asarray(value)
        if isinstance(space, gym.spaces.Discrete):
            array = array.reshape(len(array))
        return array

    where = f"episode {index}: "
    seed, version = recorded.get("seed"), recorded.get(POLICY_VERSION_KEY)
    for name, value in (("seed", seed), (POLICY_VERSION_KEY, version)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
            raise InputError(path, f"{where}{name} {value!r} is not a non-negative integer")
    return Episode(
        observations=as_reals(as_array("observations", observation_space), where + "observations", path),
        actions=as_reals(as_array("actions", action_space), where + "actions", path),
        rewards=as_reals(as_array("rewards"), where + "rewards", path).astype(np.float32).reshape(-1),
        terminations=as_booleans(as_array("terminations").reshape(-1), where + "terminations", path),
        truncations=as_booleans(as_array("truncations").reshape(-1), where + "truncations", path),
        seed=UNKNOWN_SEED if seed is None else int(seed),
        policy_version=NO_POLICY_VERSION if version is None else int(version),
    )


def _add_episodes(storage: MinariStorage, episodes: Episodes) -> None:
    """Write ``episodes`` after the storage's last, each with its content id (and the
    policy version of those that have one) in its metadata.

    The id is hashed from the episode as it reads back (the dtypes Minari stored), so it
    equals what `Episodes.content_ids` gives for the file: a reader that takes ids from
    the metadata (`tasks.trace_index`) splits episodes exactly as one that hashes them.
    """
    first = int(storage.total_episodes)
    storage.update_episodes(_episode_buffers(episodes))
    stamps = []
    for start in range(0, episodes.num_episodes, STAMP_CHUNK):
        written = range(first + start, first + min(start + STAMP_CHUNK, episodes.num_episodes))
        stamps += [{CONTENT_ID_KEY: content_id(episode)} for episode in read_episodes(storage, written, "the new episodes")]
    for index in np.flatnonzero(episodes.policy_versions != NO_POLICY_VERSION):
        stamps[index][POLICY_VERSION_KEY] = int(episodes.policy_versions[index])
    storage.update_episode_metadata(stamps, range(first, first + episodes.num_episodes))


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
    spec = gym.spec(task.env_id)
    return dataclasses.replace(spec, max_episode_steps=task.horizon, kwargs={**spec.kwargs, **task.env_kwargs})


def _dataset_id(out: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", out.name).strip("-") or "traces"
    return name if re.search(r"-v\d+$", name) else f"{name}-v0"


def _datasets_root() -> Path:
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
