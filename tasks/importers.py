"""Importers that turn other logs into episodes, and the flat npz export.

Flat npz (as D4RL and mbrl-lib write them): one row per transition with the keys
``observations, actions, rewards, terminals, timeouts``; ``next_observations`` and
``reset_seeds`` (one per episode) are read when present. An episode ends at a row whose
``terminals`` or ``timeouts`` flag is set, or at the end of the file.

Tables (Parquet or CSV): one row per transition with an episode column, the
observation in columns ``obs_0, obs_1, ...`` (or one list column ``obs``), the action
in ``action_0, ...`` (or ``action``), ``reward``, ``terminated``, and optionally
``truncated``, ``next_obs_*`` (or ``next_obs``), ``step`` to order rows within an
episode, and ``seed``.

Without next observations, an episode's last row has no successor: it is dropped and
the episode kept as truncated (a warning says how many rows that cost).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

from tasks.episodes import UNKNOWN_SEED, Episode, Episodes
from tasks.errors import InputError
from tasks.strict_values import as_booleans, as_integers, as_reals
from tasks.traces import locked_for_writing

NPZ_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def import_npz(path: str | Path) -> Episodes:
    """Episodes from a flat transition npz. Never unpickles: object arrays are refused."""
    path = Path(path)
    arrays = _load_npz(path)
    missing = [key for key in NPZ_REQUIRED_KEYS if key not in arrays]
    if missing:
        raise InputError(path, f"missing keys {', '.join(missing)} (needs {', '.join(NPZ_REQUIRED_KEYS)})")
    for key, values in arrays.items():
        if values.ndim == 0:
            raise InputError(path, f"{key} is a single value; it needs one entry per transition (or episode)")
    next_observations, seeds = arrays.get("next_observations"), arrays.get("reset_seeds")
    return _episodes_from_transitions(
        path,
        observations=as_reals(arrays["observations"], "observations", path),
        actions=as_reals(arrays["actions"], "actions", path),
        rewards=as_reals(arrays["rewards"], "rewards", path),
        terminals=as_booleans(arrays["terminals"], "terminals", path),
        timeouts=as_booleans(arrays["timeouts"], "timeouts", path),
        next_observations=None if next_observations is None else as_reals(next_observations, "next_observations", path),
        # -1 is how an exported file marks a seed that was never recorded.
        episode_seeds=None if seeds is None else as_integers(seeds, "reset_seeds", path, minimum=UNKNOWN_SEED),
    )


def export_npz(episodes: Episodes, path: str | Path) -> Path:
    """Write episodes as a new flat transition npz that `import_npz` reads back exactly.

    Raises:
        InputError: ``path`` already exists (as `collect` refuses an existing trace
            file), or cannot be written.
    """
    path = Path(path)
    if path.exists():
        raise InputError(path, "already exists (choose another --out, or remove it first)")
    step_obs = np.concatenate([e.observations[:-1] for e in episodes])
    next_obs = np.concatenate([e.observations[1:] for e in episodes])
    last_steps = episodes.step_offsets[1:] - 1
    timeouts = np.zeros(episodes.num_steps, dtype=bool)
    # Every episode end is marked, so the importer splits exactly where episodes ended.
    timeouts[last_steps] = ~episodes.terminations[last_steps]
    with locked_for_writing(path) as target:
        if target.exists():
            raise InputError(path, "already exists (choose another --out, or remove it first)")
        staging = target.with_name(f".{target.name}.writing-{os.getpid()}")
        try:
            with open(staging, "wb") as file:
                np.savez(
                    file,
                    observations=step_obs,
                    next_observations=next_obs,
                    actions=episodes.actions,
                    rewards=episodes.rewards,
                    terminals=episodes.terminations,
                    timeouts=timeouts,
                    reset_seeds=episodes.seeds,
                )
            staging.rename(target)
        finally:
            staging.unlink(missing_ok=True)
    return path


def import_table(path: str | Path, episode_column: str = "episode") -> Episodes:
    """Episodes from a Parquet or CSV table with one row per transition."""
    path = Path(path)
    table = _read_table(path)
    columns = set(table.column_names)
    for required in (episode_column, "reward", "terminated"):
        if required not in columns:
            raise InputError(path, f"no '{required}' column (columns: {', '.join(sorted(columns))})")
    observations = _gather_columns(table, "obs", path, required=True)
    actions = _gather_columns(table, "action", path, required=True)
    next_observations = _gather_columns(table, "next_obs", path, required=False)
    episode_ids = _episode_ids(table.column(episode_column).to_numpy(zero_copy_only=False), episode_column, path)
    # Rows are grouped by episode, episodes in order of first appearance, and ordered
    # within an episode by the step column if there is one, else as they appear.
    _, first_row, episode_of_row = np.unique(episode_ids, return_index=True, return_inverse=True)
    episode_rank = np.argsort(np.argsort(first_row))[episode_of_row]
    within = (as_integers(table.column("step").to_numpy(zero_copy_only=False), "step", path)
              if "step" in columns else np.arange(len(episode_ids)))
    order = np.lexsort((within, episode_rank))
    episode_ids = episode_ids[order]
    boundaries = episode_ids[1:] != episode_ids[:-1]
    terminated = _bool_column(table, "terminated", path)[order]
    truncated = (
        _bool_column(table, "truncated", path)[order] if "truncated" in columns else np.zeros_like(terminated)
    )
    timeouts = truncated.copy()
    timeouts[:-1] |= boundaries & ~terminated[:-1]
    seeds = None
    if "seed" in columns:
        seed_rows = as_integers(table.column("seed").to_numpy(zero_copy_only=False), "seed", path,
                                minimum=0, missing=UNKNOWN_SEED)[order]
        ends = np.concatenate([np.flatnonzero(boundaries), [len(order) - 1]])
        seeds = seed_rows[ends]
    return _episodes_from_transitions(
        path,
        observations=observations[order],
        actions=actions[order],
        rewards=as_reals(table.column("reward").to_numpy(zero_copy_only=False), "reward", path).astype(np.float32)[order],
        terminals=terminated,
        timeouts=timeouts,
        next_observations=None if next_observations is None else next_observations[order],
        episode_seeds=seeds,
        episode_starts=np.concatenate([[0], np.flatnonzero(boundaries) + 1]),
    )


def conform_to_spaces(episodes: Episodes, observation_space, action_space) -> Episodes:
    """Cast imported arrays to the spaces' dtypes, and a ``[rows, 1]`` column to a scalar.

    Logs rarely keep the environment's exact dtypes (CSV has only float64 and int64);
    casting here makes an imported episode identical to a recorded one.
    """
    def conform(values: np.ndarray, space) -> np.ndarray:
        if space.shape == () and values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if np.issubdtype(space.dtype, np.integer) and np.issubdtype(values.dtype, np.floating):
            if not np.all(values == np.round(values)):
                return values  # validation reports the non-integer action
        return values.astype(space.dtype)

    return dataclasses.replace(
        episodes,
        observations=conform(episodes.observations, observation_space),
        actions=conform(episodes.actions, action_space),
    )


def _episodes_from_transitions(
    path: Path,
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    next_observations: np.ndarray | None = None,
    episode_seeds: np.ndarray | None = None,
    episode_starts: np.ndarray | None = None,
) -> Episodes:
    fields = {"observations": observations, "actions": actions, "rewards": rewards, "terminals": terminals,
              "timeouts": timeouts}
    if next_observations is not None:
        fields["next_observations"] = next_observations
    for name, values in fields.items():
        if np.ndim(values) == 0:
            raise InputError(path, f"{name} is a single value; it needs one entry per transition")
    rows = len(rewards)
    for name, values in fields.items():
        if len(values) != rows:
            raise InputError(path, f"{name} has {len(values)} rows, rewards has {rows}")
    if rows == 0:
        raise InputError(path, "holds no transitions")
    for name in ("rewards", "terminals", "timeouts"):
        if np.size(fields[name]) != rows:
            raise InputError(path, f"{name} has shape {np.shape(fields[name])}; it needs one value per transition")
    if next_observations is not None and np.shape(next_observations)[1:] != np.shape(observations)[1:]:
        raise InputError(path, f"next_observations have shape {np.shape(next_observations)[1:]} per row, "
                               f"observations {np.shape(observations)[1:]}")
    rewards = np.asarray(rewards).reshape(rows)
    terminals = np.asarray(terminals).reshape(rows)
    timeouts = np.asarray(timeouts).reshape(rows)
    ends = np.flatnonzero(terminals | timeouts)
    if episode_starts is not None:
        ends = np.union1d(ends, episode_starts[1:] - 1)
    if len(ends) == 0 or ends[-1] != rows - 1:
        ends = np.append(ends, rows - 1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if episode_seeds is not None and np.shape(episode_seeds) != (len(starts),):
        raise InputError(path, f"reset_seeds has shape {np.shape(episode_seeds)}; it needs one seed for each "
                               f"of the {len(starts)} episodes")

    episodes, dropped_rows = [], 0
    for index, (start, stop) in enumerate(zip(starts, ends + 1)):
        seed = UNKNOWN_SEED if episode_seeds is None else int(episode_seeds[index])
        if next_observations is not None:
            episode_obs = np.concatenate([observations[start:stop], next_observations[stop - 1 : stop]])
            kept = stop
            terminated = terminals[start:stop]
            truncated = timeouts[start:stop] & ~terminated
        else:
            # The observation after the last row is unknown: the last row is dropped and
            # the episode ends truncated at the row before it.
            kept = stop - 1
            dropped_rows += 1
            if kept == start:
                continue
            episode_obs = observations[start:stop]
            terminated = np.zeros(kept - start, dtype=bool)
            truncated = np.zeros(kept - start, dtype=bool)
            truncated[-1] = True
        episodes.append(
            Episode(
                observations=episode_obs,
                actions=actions[start:kept],
                rewards=rewards[start:kept].astype(np.float32),
                terminations=terminated,
                truncations=truncated,
                seed=seed,
            )
        )
    if dropped_rows:
        print(
            f"warning: {path}: no next observations, so the last row of each episode "
            f"({dropped_rows} rows) was dropped",
            file=sys.stderr,
        )
    if not episodes:
        raise InputError(path, "no episode with a complete transition")
    return Episodes.from_list(episodes)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise InputError(path, "holds pickled objects, which are never loaded") from None
        raise InputError(path, f"corrupt or truncated npz ({error})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(path, f"corrupt or truncated npz ({type(error).__name__}: {error})") from None


def _read_table(path: Path):
    import pyarrow.csv
    import pyarrow.parquet

    if not path.exists():
        raise InputError(path, "no such file")
    try:
        if path.suffix.lower() == ".csv":
            return pyarrow.csv.read_csv(path)
        return pyarrow.parquet.read_table(path)
    except Exception as error:
        raise InputError(path, f"corrupt or unreadable table ({type(error).__name__}: {error})") from None


def _gather_columns(table, prefix: str, path: Path, required: bool) -> np.ndarray | None:
    """A ``[rows, ...]`` array from ``prefix_0, prefix_1, ...`` columns or a ``prefix`` list column."""
    if prefix in table.column_names:
        values = table.column(prefix).to_pylist()
        try:
            return as_reals(np.asarray(values), prefix, path)
        except ValueError:
            raise InputError(path, f"column '{prefix}' holds lists of different lengths") from None
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)$")
    numbered = sorted(
        (int(m.group(1)), name) for name in table.column_names if (m := pattern.match(name))
    )
    if not numbered:
        if required:
            raise InputError(path, f"no '{prefix}' or '{prefix}_0, {prefix}_1, ...' columns")
        return None
    if [i for i, _ in numbered] != list(range(len(numbered))):
        raise InputError(path, f"columns {prefix}_* are not numbered 0..{len(numbered) - 1}")
    columns = [as_reals(table.column(name).to_numpy(zero_copy_only=False), name, path) for _, name in numbered]
    return np.stack(columns, axis=1)


def _episode_ids(values: np.ndarray, column: str, path: Path) -> np.ndarray:
    """Episode ids that sort: any one kind of value, none missing (text if the kinds are mixed)."""
    if values.dtype.kind in "biuU":
        return values
    missing = np.asarray([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
    if missing.any():
        raise InputError(path, f"{column} row {int(np.flatnonzero(missing)[0])} is empty; every row needs an episode id")
    return values.astype(str) if values.dtype.kind == "O" else values


def _bool_column(table, name: str, path: Path) -> np.ndarray:
    return as_booleans(table.column(name).to_numpy(zero_copy_only=False), name, path)
