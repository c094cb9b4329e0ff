"""``dreamer collect``: record real episodes with a behaviour policy into a trace file."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np

from dreamer.behaviour import behaviour_policy
from tasks.config import config, option
from tasks.errors import InputError
from tasks.recording import COLLECT_STREAM, record_episodes, reset_seeds
from tasks.registry import ENV_KWARGS_HELP, TASK_HELP, check_spaces_match, get_task
from tasks.traces import append_traces, finish_interrupted_writes, read_traces, write_traces

@config
class CollectConfig:
    task: str = option(help=TASK_HELP)
    out: str = option(help="trace folder to write (a Minari dataset; holds data/)")
    env_kwargs: dict = option({}, help=ENV_KWARGS_HELP)
    policy: str = option("random", help="'random' or a run directory with a saved policy")
    version: int | None = option(None, min=1, help="policy version of a run made by `dreamer learn` (default: its latest)")
    noise: float = option(0.0, min=0, help="exploration noise of a saved policy (Gaussian sigma, or epsilon)")
    episodes: int = option(50, min=1, help="episodes to record")
    num_envs: int = option(8, min=1, help="environments stepped side by side")
    format: Literal["hdf5", "arrow"] = option("hdf5", help="Minari storage backend")
    append: bool = option(False, help="append to an existing trace file instead of refusing it")
    seed: int = option(0, help="seed for reset seeds and policy noise")


def run(config: CollectConfig) -> tuple[dict, str]:
    task = get_task(config.task, config.env_kwargs)
    policy, version = behaviour_policy(config.policy, task, config.noise, config.version)
    out = Path(config.out)
    already = 0
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file, not a trace folder; choose another --out")
    finish_interrupted_writes(out)
    if config.append and out.exists():
        existing = read_traces(out)
        check_spaces_match(task, existing.observation_space, existing.action_space, str(out))
        already = existing.episodes.num_episodes
    elif out.exists() and any(out.iterdir()):
        raise InputError(out, "already exists (pass --append to add episodes to it)")

    # Appending continues the same seed sequence, so 50 + 50 episodes start exactly
    # where 100 recorded at once would.
    seeds = reset_seeds(config.seed, already + config.episodes, COLLECT_STREAM)[already:]
    started = time.perf_counter()
    episodes = record_episodes(task, policy, seeds, num_envs=config.num_envs, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    if version is not None:  # each episode says which version of the run's policy recorded it
        episodes = dataclasses.replace(episodes, policy_versions=np.full(episodes.num_episodes, version))
    label = f"dreamer collect --policy {config.policy} --noise {config.noise}"
    if already:
        in_file = append_traces(out, episodes)
    else:
        write_traces(out, episodes, task, config.format, algorithm_name=label)
        in_file = episodes.num_episodes

    returns = episodes.returns()
    summary = {
        "out": str(out),
        "task": task.name,
        "episodes": episodes.num_episodes,
        "steps": episodes.num_steps,
        "episodes_in_file": in_file,
        "policy_version": version,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "steps_per_second": episodes.num_steps / seconds,
        "wall_seconds": seconds,
    }
    text = (
        f"recorded {episodes.num_episodes} episodes ({episodes.num_steps} steps, "
        f"{summary['steps_per_second']:.0f} steps/s) of {task.name} with policy {config.policy}; "
        f"return {returns.mean():.1f} ± {returns.std():.1f}\n"
        f"{'appended to' if already else 'wrote'} {out} ({in_file} episodes)"
    )
    return summary, text
