"""``dreamer traces info | import | export``: look inside, bring in, and hand out trace files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal


from tasks.config import config, option
from tasks.errors import InputError
from tasks.importers import conform_to_spaces, export_npz, import_npz, import_table
from tasks.registry import check_spaces_match, get_task
from tasks.splits import SPLIT_NAMES, split_indices
from tasks.traces import append_traces, finish_interrupted_writes, read_traces, write_traces
from tasks.validation import validate_episodes


@config
class InfoConfig:
    traces: str = option(help="trace folder, its data/ folder, or a dataset id", positional=True)
    task: str | None = option(None, help="also check the file's spaces against this task")
    split_seed: int = option(0, help="seed of the episode-content hash that assigns splits")
    out: str | None = option(None, help="folder to keep info.json in")
    seed: int = option(0, help="accepted for uniformity; info draws no random numbers")


def info(config: InfoConfig) -> tuple[dict, str]:
    task = get_task(config.task) if config.task else None
    traces = read_traces(config.traces, task=task)
    episodes = traces.episodes
    returns, lengths = episodes.returns(), episodes.lengths
    splits = {name: len(indices) for name, indices in split_indices(episodes, config.split_seed).items()}
    last_steps = episodes.step_offsets[1:] - 1
    summary = {
        "traces": str(config.traces),
        "task": traces.task.name if traces.task else None,
        "format": traces.data_format,
        "episodes": episodes.num_episodes,
        "steps": episodes.num_steps,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_length": float(lengths.mean()),
        "terminated_episodes": int(episodes.terminations[last_steps].sum()),
        "truncated_episodes": int(episodes.truncations[last_steps].sum()),
        "episodes_with_seed": int((episodes.seeds >= 0).sum()),
        "observation_space": str(traces.observation_space),
        "action_space": str(traces.action_space),
        "split_seed": config.split_seed,
        "splits": splits,
    }
    if config.out:
        Path(config.out).mkdir(parents=True, exist_ok=True)
        (Path(config.out) / "info.json").write_text(json.dumps(summary, indent=2))
    task_text = f"{traces.task.name} ({traces.task.env_id})" if traces.task else "unknown"
    rows = [
        ("traces", f"{config.traces}  [{traces.data_format}]"),
        ("task", task_text),
        ("episodes", f"{episodes.num_episodes}  ({summary['terminated_episodes']} terminated, "
                     f"{summary['truncated_episodes']} truncated, {summary['episodes_with_seed']} with reset seed)"),
        ("steps", f"{episodes.num_steps}  (length min {lengths.min()}, mean {lengths.mean():.1f}, max {lengths.max()})"),
        ("return", f"mean {returns.mean():.2f}  std {returns.std():.2f}  min {returns.min():.2f}  max {returns.max():.2f}"),
        ("observation", str(traces.observation_space)),
        ("action", str(traces.action_space)),
        ("splits", "  ".join(f"{name} {splits[name]}" for name in SPLIT_NAMES) + f"  (split seed {config.split_seed})"),
    ]
    return summary, "\n".join(f"{name:<12} {value}" for name, value in rows)


@config
class ImportConfig:
    source: str = option(help="a flat .npz, .parquet or .csv file of transitions", positional=True)
    task: str = option(help="the task the log was recorded in (gives the spaces)")
    out: str = option(help="trace folder to write")
    episode_column: str = option("episode", help="the table column that names each row's episode")
    format: Literal["hdf5", "arrow"] = option("hdf5", help="Minari storage backend")
    append: bool = option(False, help="append to an existing trace file at --out")
    seed: int = option(0, help="accepted for uniformity; importing draws no random numbers")


def import_(config: ImportConfig) -> tuple[dict, str]:
    task = get_task(config.task)
    source = Path(config.source)
    suffix = source.suffix.lower()
    if suffix == ".npz":
        episodes = import_npz(source)
    elif suffix in (".parquet", ".pq", ".csv"):
        episodes = import_table(source, config.episode_column)
    else:
        raise InputError(source, "unknown log format (expected .npz, .parquet or .csv)")
    episodes = conform_to_spaces(episodes, task.observation_space, task.action_space)
    # Checked here as well as on writing, so that errors name the log, not the output.
    validate_episodes(episodes, task.observation_space, task.action_space, str(source))
    out = Path(config.out)
    finish_interrupted_writes(out)
    if config.append and out.exists():
        existing = read_traces(out)
        check_spaces_match(task, existing.observation_space, existing.action_space, str(out))
        total = append_traces(out, episodes)
    else:
        write_traces(out, episodes, task, config.format, algorithm_name=f"dreamer traces import {source.name}")
        total = episodes.num_episodes
    summary = {
        "out": str(out),
        "task": task.name,
        "episodes": episodes.num_episodes,
        "steps": episodes.num_steps,
        "episodes_in_file": total,
        "mean_return": float(episodes.returns().mean()),
    }
    text = f"imported {episodes.num_episodes} episodes ({episodes.num_steps} steps) from {source} into {out}"
    return summary, text


@config
class ExportConfig:
    traces: str = option(help="trace folder, its data/ folder, or a dataset id", positional=True)
    out: str = option(help="the .npz file to write")
    seed: int = option(0, help="accepted for uniformity; exporting draws no random numbers")


def export(config: ExportConfig) -> tuple[dict, str]:
    traces = read_traces(config.traces)
    if not config.out.endswith(".npz"):
        raise InputError(config.out, "export writes a flat .npz; give a path ending in .npz")
    path = export_npz(traces.episodes, config.out)
    summary = {"out": str(path), "episodes": traces.episodes.num_episodes, "steps": traces.episodes.num_steps}
    return summary, f"exported {traces.episodes.num_episodes} episodes to {path}"
