"""``dreamer dream``: train a policy purely inside a fitted world model, from fixed traces.

A thin shell over `dreamer.offline.dream_offline`: the model's training split is where
dreams start, the disagreement penalty (MOPO) and halting (MOReL) are on by default, and
both are reported in the metrics.
"""

from __future__ import annotations

import sys
import time

from dreamer.actor_critic import DreamConfig, dream_mesh
from dreamer.offline import dream_offline
from policies.filtering import reads_observations
from policies.saving import save_policy
from tasks.config import config, option
from tasks.errors import InputError
from tasks.registry import task_from_record
from tasks.run_directory import RunDirectory
from tasks.splits import fitting_episodes, recorded_split, split_record
from tasks.trace_index import open_index
from tasks.traces import read_traces
from worldmodel.saving import load, load_spec, save_model
from worldmodel.sharding import DEVICES_HELP
from worldmodel.streaming import TraceStream


@config
class DreamCommandConfig:
    world_model: str = option(help="run directory of a fitted world model")
    out: str = option(help="run directory to write")
    traces: str | None = option(None, help="trace file whose training states dreams start from (default: the model's)")
    dream: DreamConfig = option(DreamConfig(uncertainty_penalty=1.0), help="policy training in dreams")
    halt_multiple: float = option(2.0, min=0, help="halt a dream where disagreement exceeds this multiple of the largest "
                                            "disagreement on real training transitions (0 disables)")
    updates: int = option(3000, min=1, help="actor-critic updates")
    split_seed: int | None = option(None, help="split seed (default: the one the model was fitted with)")
    resume: bool = option(False, help="continue a killed run in --out from its last checkpoint")
    block_steps: int | None = option(None, min=1, help="read the trace file in blocks of about this many steps, for "
                                                       "files larger than memory: the halting threshold is taken "
                                                       "block by block, and dreams start from a seeded draw of "
                                                       "training episodes of one block's size (default: read it whole)")
    devices: int | None = option(None, min=1, help=DEVICES_HELP)
    seed: int = option(0, help="seed of the networks and of the dreams")

    def __post_init__(self):
        if self.halt_multiple > 0 and self.dream.gamma >= 1:
            raise ValueError("halting (--halt-multiple above 0) needs --dream.gamma below 1")


def run(config: DreamCommandConfig) -> tuple[dict, str]:
    started = time.perf_counter()
    mesh = dream_mesh(config.devices, config.dream)
    spec = load_spec(config.world_model)
    model = load(config.world_model)
    task = task_from_record(spec)
    traces_location = config.traces or spec.get("traces")
    if not traces_location:
        raise InputError(config.world_model, "names no trace file; pass --traces")
    split_seed, fractions = recorded_split(spec, str(config.world_model))
    split_seed = split_seed if config.split_seed is None else config.split_seed
    if config.block_steps:
        train = TraceStream.from_split(open_index(traces_location, task=task), split_seed, fractions,
                                       config.block_steps)
        empty = len(train.train) == 0
    else:
        train, _ = fitting_episodes(read_traces(traces_location, task=task).episodes, split_seed, fractions)
        empty = train is None
    if empty:
        raise InputError(traces_location, "has no training episodes to start dreams from")
    # The devices are where a run goes on, not what it computes: a run may resume on others.
    with RunDirectory(config.out, config, resume=config.resume, per_call=("devices",)) as run_dir:
        policy, result = dream_offline(model, task, train, config.dream, config.updates, config.seed,
                                       config.halt_multiple, run=run_dir, resume=config.resume,
                                       progress=sys.stderr.isatty(), mesh=mesh)
        provenance = {"traces": str(traces_location), "split": split_record(split_seed, fractions)}
        if not reads_observations(model):
            # The policy acts on this model's latent state: it goes with the policy.
            save_model(config.out, model, {**task.record(), **provenance, "copied_from": str(config.world_model)})
        save_policy(config.out, policy.actor, task, {"trained_by": "dreamer dream", "world_model": str(config.world_model),
                                                     **provenance}, world_model=model)
        summary = {"real_steps": 0, "eval_steps": 0, "wall_seconds": time.perf_counter() - started, "task": task.name,
                   **result}
        run_dir.write_summary(summary)
    text = (
        f"trained a policy for {result['updates']} updates in dreams of {task.name} "
        f"(penalty {result['uncertainty_penalty']}, halt at disagreement {result['halt_threshold']:.3g}); "
        f"dream return {result.get('final_dream_return', float('nan')):.1f}\nwrote {config.out}"
    )
    return summary, text
