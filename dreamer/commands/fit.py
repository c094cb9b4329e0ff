"""``dreamer fit``: fit a world model on a trace file's training split."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Literal

from tasks.config import config, option
from tasks.errors import InputError, RunFailed
from tasks.run_directory import RunDirectory
from tasks.splits import SplitFractions, fitting_episodes, split_record
from tasks.trace_index import open_index
from tasks.traces import read_traces
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fit import FitConfig, fit_world_model
from worldmodel.hosts import HostsConfig, process_zero_says, start, writes_outputs
from worldmodel.rssm import RSSMConfig
from worldmodel.saving import build_model_for_spaces, load, load_spec, save_model
from worldmodel.sharding import DEVICES_HELP, HOST_AXIS, data_mesh
from worldmodel.streaming import TraceStream


@config
class FitCommandConfig:
    traces: str = option(help="trace folder, its data/ folder, or a dataset id")
    out: str = option(help="run directory to write")
    model: Literal["ensemble", "rssm"] = option("ensemble", help="world model kind: an ensemble of one-step "
                                                                 "MLPs, or a recurrent latent model")
    ensemble: EnsembleConfig = option(EnsembleConfig(), help="ensemble settings")
    rssm: RSSMConfig = option(RSSMConfig(), help="recurrent latent model settings (--model rssm)")
    fit: FitConfig = option(FitConfig(), help="fitting settings")
    split_seed: int = option(0, help="seed of the episode-content hash that assigns splits")
    validation_fraction: float = option(0.1, min=0, max=1, help="share of episodes kept for early stopping")
    heldout_fraction: float = option(0.1, min=0, max=1, help="share of episodes kept out of all learning, for `check`")
    warm_start: str | None = option(None, help="run directory of a fitted model to start from")
    resume: bool = option(False, help="continue a killed run in --out from its last checkpoint")
    block_steps: int | None = option(None, min=1, help="read the trace file from disk in blocks of about this many "
                                                       "steps while fitting, for files larger than memory (default: "
                                                       "read it whole)")
    devices: int | None = option(None, min=1, help=DEVICES_HELP)
    hosts: HostsConfig = option(HostsConfig(), help="several processes on several hosts as one job "
                                                    "(jax.distributed); process 0 writes --out")
    seed: int = option(0, help="seed of initial weights and minibatch draws")


    def __post_init__(self):
        if self.validation_fraction + self.heldout_fraction >= 1:
            raise ValueError("validation_fraction + heldout_fraction must leave a share for training")

    @property
    def fractions(self) -> SplitFractions:
        return SplitFractions.rest_for_training(self.validation_fraction, self.heldout_fraction)


def run(config: FitCommandConfig) -> tuple[dict, str]:
    started = time.perf_counter()
    start(config.hosts)  # before anything touches a device
    mesh = data_mesh(config.devices)
    processes = mesh.shape[HOST_AXIS]
    traces = open_index(config.traces) if config.block_steps else read_traces(config.traces)
    if traces.task is None:
        raise InputError(config.traces, "the trace file names no task; re-import it with --task")
    if config.block_steps:
        train = TraceStream.from_split(traces, config.split_seed, config.fractions, config.block_steps)
        validation = None  # the stream reads its own
        train_episodes, validation_episodes = len(train.train), len(train.validation)
        print(f"streaming {train_episodes} training episodes ({train.train_steps:,} steps) of {config.traces} in "
              f"blocks of about {config.block_steps:,} steps", file=sys.stderr)
    else:
        train, validation = fitting_episodes(traces.episodes, config.split_seed, config.fractions)
        train_episodes = 0 if train is None else train.num_episodes
        validation_episodes = 0 if validation is None else validation.num_episodes
    if not train_episodes:
        raise InputError(config.traces, "no episode falls in the training split (record more episodes)")
    if train_episodes < processes:
        raise InputError(config.traces, f"its training split has {train_episodes} episodes, too few for "
                                        f"{processes} processes to draw from one each (record more episodes)")
    if config.warm_start:
        model = load(config.warm_start)
        spec = load_spec(config.warm_start)
        if spec["kind"] != config.model:
            raise InputError(config.warm_start, f"is a {spec['kind']} model, not {config.model}")
    else:
        settings = config.rssm if config.model == "rssm" else config.ensemble
        model = build_model_for_spaces(config.model, traces.observation_space, traces.action_space, settings,
                                       seed=config.seed)
    with _run_directory(config) as run_dir:
        result = fit_world_model(
            model, train, validation, config.fit, seed=config.seed, run=run_dir,
            resume=config.resume, progress=sys.stderr.isatty() and run_dir is not None, mesh=mesh,
        )
        if run_dir is not None:
            save_model(
                config.out,
                result.model,
                {**traces.task.record(), "traces": str(Path(config.traces).absolute()),
                 "split": split_record(config.split_seed, config.fractions)},
            )
        summary = {
            "real_steps": 0,
            "eval_steps": 0,
            "wall_seconds": time.perf_counter() - started,
            "task": traces.task.name,
            "train_episodes": train_episodes,
            "validation_episodes": validation_episodes,
            "updates": result.updates,
            "validation_loss": result.validation_loss,
            "stopped_early": result.stopped_early,
            "transitions_per_second": result.transitions_per_second,
            "processes": processes,
        }
        if run_dir is not None:
            run_dir.write_summary(summary)
    together = f" in {processes} processes" if processes > 1 else ""
    wrote = f"wrote {config.out}" if run_dir is not None else f"process 0 wrote {config.out}"
    text = (
        f"fitted a {config.model} world model on {train_episodes} training episodes of {traces.task.name}"
        f"{together}: {result.updates} updates, validation loss {result.validation_loss:.4g}"
        f"{' (stopped early)' if result.stopped_early else ''}, {summary['wall_seconds']:.0f} s\n{wrote}"
    )
    return summary, text


def _run_directory(config: FitCommandConfig) -> contextlib.AbstractContextManager[RunDirectory | None]:
    """The run directory on process 0, None on the others: one process writes --out.

    The others learn whether process 0 could open it, so a refused --out ends every
    process at once rather than leaving them waiting for process 0.
    """
    if not writes_outputs():
        if not process_zero_says(True):
            raise RunFailed(f"process 0 could not open {config.out} (its own message says why)")
        return contextlib.nullcontext()
    try:
        # Where the processes meet and how many devices split the batch are this call's
        # business, not the run's: a run resumed from another address, alone, or on other
        # devices is the same run.
        run_dir = RunDirectory(config.out, config, resume=config.resume, per_call=("hosts", "devices"))
    except BaseException:
        process_zero_says(False)
        raise
    process_zero_says(True)
    return run_dir
