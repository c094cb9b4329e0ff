"""``dreamer check``: a world model's open-loop fidelity on held-out episodes.

Beside fidelity.json and fidelity.png it replays a few sampled held-out episodes in the
model after their context: ``dream-EPISODE.png`` (real and dreamed observation
dimensions over time; listed in ``dream_plots``) for vector tasks, ``dream-EPISODE.gif``
(real, dreamed and difference frames side by side; listed in ``dream_videos``) for
camera frames.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from tasks.config import config, option
from tasks.episodes import Episode, Episodes
from tasks.errors import InputError
from tasks.registry import check_spaces_match, task_from_record
from tasks.splits import describe_split, fitting_episodes, heldout_episodes, recorded_split, split_record
from tasks.trace_index import open_index
from tasks.traces import read_traces
from worldmodel.dream_beside_real import dream_of_episode, frames_of_episode, plot_dream_beside_real, write_dream_video
from worldmodel.fidelity import (FidelityConfig, TrainingSummary, action_encoder, fidelity_report, holds_frames,
                                 plot_fidelity)
from worldmodel.saving import load, load_spec
from worldmodel.streaming import read_in_blocks


@config
class CheckConfig:
    world_model: str = option(help="run directory of a fitted world model")
    traces: str = option(help="trace file whose held-out episodes the model is checked on")
    fidelity: FidelityConfig = option(FidelityConfig(), help="open-loop settings")
    split: Literal["heldout", "all"] = option("heldout", help="which episodes of --traces: 'heldout' under the split the "
                                              "model was fitted with, or 'all' for a file nothing learned from")
    split_seed: int | None = option(None, help="split seed (default: the one the model was fitted with)")
    out: str | None = option(None, help="folder for fidelity.json and fidelity.png (default: the model's run directory)")
    dreams: int = option(3, min=0, help="held-out episodes, drawn at random, replayed in the model whole beside the "
                                        "real ones (dream-EPISODE.png, or dream-EPISODE.gif for camera frames)")
    block_steps: int | None = option(None, min=1, help="read the trace files in blocks of about this many steps, for "
                                                       "files larger than memory (default: read them whole)")
    seed: int = option(0, help="seed of the model's sampling during rollouts")


def run(config: CheckConfig) -> tuple[dict, str]:
    spec = load_spec(config.world_model)
    model = load(config.world_model)
    task = task_from_record(spec)
    split_seed, fractions = recorded_split(spec, str(config.world_model))
    split_seed = split_seed if config.split_seed is None else config.split_seed
    if config.block_steps:
        heldout, train = _in_blocks(config, spec, task, model, split_seed, fractions)
    else:
        whole, train = _whole(config, spec, task, split_seed, fractions)
        heldout = HeldoutEpisodes(whole.num_episodes, whole.lengths, whole.episode, holds_frames(whole), [whole])

    report = {
        "world_model": str(config.world_model),
        "traces": str(config.traces),
        "task": task.name,
        "split": config.split,
        "split_seed": split_seed,
        "fractions": split_record(split_seed, fractions),
        **fidelity_report(model, heldout.blocks, train, config.fidelity, jax.random.key(config.seed)),
    }
    out = Path(config.out or config.world_model)
    out.mkdir(parents=True, exist_ok=True)
    if heldout.frames:
        report["observed_frames"] = report["context"] + 1  # the context's frames and the rollout's first
    drawn = _draw_dreams(model, heldout, report["context"], config, out, task.name)
    report["dream_plots"], report["dream_videos"] = ([], drawn) if heldout.frames else (drawn, [])
    (out / "fidelity.json").write_text(json.dumps(report, indent=2))
    plot_fidelity(report, out / "fidelity.png", f"{task.name}: open-loop error on {heldout.count} held-out episodes")
    return report, _table(report, out)


@dataclasses.dataclass(frozen=True)
class HeldoutEpisodes:
    """The episodes a check measures, held whole or read in blocks.

    Attributes:
        count: how many there are.
        lengths: ``[count]`` steps of each.
        episode: episode ``i`` of them, read when asked for (the dreams drawn).
        frames: their observations are camera frames.
        blocks: the episodes, one `Episodes` per block (a single one when held whole).
    """

    count: int
    lengths: np.ndarray
    episode: Callable[[int], Episode]
    frames: bool
    blocks: Iterable[Episodes]


def _whole(config: CheckConfig, spec: dict, task, split_seed: int, fractions) -> tuple[Episodes, Episodes]:
    """The held-out episodes and the training ones, read whole."""
    traces = read_traces(config.traces)
    check_spaces_match(task, traces.observation_space, traces.action_space, config.traces)
    learned_from = _learned_from(spec, task, split_seed, fractions)
    if config.split == "all":
        if learned_from is not None:
            _refuse_learned(config, traces.episodes.content_ids(), learned_from.content_ids())
        return traces.episodes, learned_from if learned_from is not None else traces.episodes
    heldout = heldout_episodes(traces.episodes, split_seed, fractions)
    if heldout is None:
        raise _no_heldout(config, split_seed, fractions)
    train = learned_from if learned_from is not None else fitting_episodes(traces.episodes, split_seed, fractions)[0]
    if train is None:
        raise InputError(config.traces, "has no training episodes to scale errors by")
    return heldout, train


def _in_blocks(config: CheckConfig, spec: dict, task, model, split_seed: int,
               fractions) -> tuple[HeldoutEpisodes, TrainingSummary]:
    """The held-out episodes as blocks read from disk, and the training split summarised
    block by block (`TrainingSummary.of_blocks`): neither is ever held whole."""
    index = open_index(config.traces, task=task)
    own = spec.get("traces")
    # What scales the errors: the model's own training split, else this file's.
    learned_index, learned = index, None
    if own and Path(own).exists():
        learned_index = open_index(own, task=task)
        learned = learned_index.split_indices(split_seed, fractions)["train"]
    if config.split == "all":
        chosen = np.arange(index.num_episodes)
        if learned is not None:
            _refuse_learned(config, index.content_ids, [learned_index.content_ids[i] for i in learned])
    else:
        chosen = index.split_indices(split_seed, fractions)["heldout"]
        if not len(chosen):
            raise _no_heldout(config, split_seed, fractions)
    if learned is None:
        learned = chosen if config.split == "all" else index.split_indices(split_seed, fractions)["train"]
    if not len(learned):
        raise InputError(config.traces, "has no training episodes to scale errors by")
    summary = TrainingSummary.of_blocks(read_in_blocks(learned_index, learned, config.block_steps),
                                        action_encoder(model))
    return HeldoutEpisodes(
        count=len(chosen),
        lengths=index.lengths[chosen],
        episode=lambda i: index.read([chosen[i]]).episode(0),
        frames=summary.frames,
        blocks=read_in_blocks(index, chosen, config.block_steps),
    ), summary


def _refuse_learned(config: CheckConfig, checked: Iterable[str], learned_from: Iterable[str]) -> None:
    learned = set(checked) & set(learned_from)
    if learned:
        raise InputError(config.traces, f"{len(learned)} of its episodes are ones the model was fitted on; "
                                        "--split all is for a trace file nothing learned from")


def _no_heldout(config: CheckConfig, split_seed: int, fractions) -> InputError:
    return InputError(config.traces, f"holds no held-out episodes under the split the model was fitted with "
                                     f"({describe_split(split_seed, fractions)}); fit with --heldout-fraction "
                                     "above 0, or pass --split all for a trace file nothing learned from")


def _draw_dreams(model, heldout: HeldoutEpisodes, context: int, config: CheckConfig, out: Path,
                 task_name: str) -> list[str]:
    """``config.dreams`` sampled held-out episodes dreamed whole after their context: a
    GIF each for camera frames, a PNG for vectors; the files written."""
    long_enough = [i for i in range(heldout.count) if heldout.lengths[i] > context]
    chosen = np.random.default_rng(config.seed).permutation(long_enough)[:config.dreams]
    written = []
    for index in sorted(chosen.tolist()):
        episode, key = heldout.episode(index), jax.random.key(config.seed)
        if heldout.frames:
            name = f"dream-{index}.gif"
            write_dream_video(*frames_of_episode(model, episode, context, key), context, out / name)
        else:
            name = f"dream-{index}.png"
            plot_dream_beside_real(*dream_of_episode(model, episode, context, key), context, out / name,
                                   f"{task_name}: held-out episode {index}, dreamed after {context} observed steps")
        written.append(name)
    return written


def _learned_from(spec: dict, task, split_seed: int, fractions) -> Episodes | None:
    """The episodes the model was fitted on (the training split of its own trace file), which
    scale the errors; None if that file is no longer there."""
    own = spec.get("traces")
    if not own or not Path(own).exists():
        return None
    return fitting_episodes(read_traces(own, task=task).episodes, split_seed, fractions)[0]


def _table(report: dict, out: Path) -> str:
    horizons = [k for k in (1, 5, 10, 15, 25, 50) if k <= len(report["horizons"])]
    measures = ["obs_rmse", "reward_mae"] + (["termination_accuracy"] if "termination_accuracy" in report["predictors"]["model"] else [])
    lines = [f"open-loop fidelity on {report['heldout_episodes']} held-out episodes ({report['rollouts']} rollouts "
             f"after {report['context']} observed steps; observation RMSE in {report['obs_units']})"]
    lines.append(f"{'predictor':<16} {'measure':<22}" + "".join(f"{'k=' + str(k):>10}" for k in horizons))
    for name, metrics in report["predictors"].items():
        if metrics is None:  # no linear predictor for frames
            continue
        for measure in measures:
            values = [metrics[measure][k - 1] for k in horizons]
            lines.append(f"{name:<16} {measure:<22}" + "".join(f"{'-' if v is None else f'{v:.4g}':>10}" for v in values))
    dreams = report["dream_plots"] + report["dream_videos"]
    lines.append(f"wrote {out / 'fidelity.json'} and {out / 'fidelity.png'}"
                 + (f", and {len(dreams)} dreams beside real episodes ({', '.join(dreams)})" if dreams else ""))
    return "\n".join(lines)
