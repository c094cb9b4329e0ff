"""``dreamer dream``: train a policy purely inside a fitted world model, from fixed traces.

Dreams start from real states of the training split and never touch the real
environment. Because nothing corrects the model where it is wrong, imagined rewards
are penalised by the model's disagreement (MOPO) and a dream halts where disagreement
passes a multiple of the largest disagreement seen on real training transitions
(MOReL); both are on by default and reported in the metrics.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dreamer.actor_critic import DreamConfig
from dreamer.dreaming import PolicyInDreams
from policies.saving import save_policy
from tasks.config import config, option
from tasks.errors import InputError
from tasks.registry import get_task
from tasks.run_directory import RunDirectory
from tasks.splits import fitting_episodes
from tasks.traces import read_traces
from worldmodel.saving import load, load_spec


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
    seed: int = option(0, help="seed of the networks and of the dreams")


def run(config: DreamCommandConfig) -> tuple[dict, str]:
    started = time.perf_counter()
    spec = load_spec(config.world_model)
    model = load(config.world_model)
    task = get_task(spec["task"])
    traces_location = config.traces or spec.get("traces")
    if not traces_location:
        raise InputError(config.world_model, "names no trace file; pass --traces")
    episodes = read_traces(traces_location, task=task).episodes
    split_seed = spec.get("split_seed", 0) if config.split_seed is None else config.split_seed
    train, _ = fitting_episodes(episodes, split_seed)
    if train is None:
        raise InputError(traces_location, "has no training episodes to start dreams from")
    observations = train.acted_observations()

    halt = _halt_threshold(model, train, config.halt_multiple)
    # HALT earns the lowest reward seen in training, so a halted dream is never worth more.
    dream_config = dataclasses.replace(config.dream, halt_threshold=halt, halt_reward=float(np.min(train.rewards)))
    policy = PolicyInDreams(model, task, observations, dream_config, config.seed)
    with RunDirectory(config.out, config, resume=config.resume) as run_dir:
        manager = run_dir.checkpoint_manager("dream")
        if config.resume:
            if manager.latest_step() is not None:
                restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(dream=policy.restore_args()))
                policy.restore(restored["dream"])
            # Lines logged after the last checkpoint are logged again as the work is redone.
            run_dir.truncate_metrics(int(policy.state.updates))

        def log(updates: int, metrics: dict) -> None:
            run_dir.log(updates, {f"dream/{name}": value for name, value in metrics.items()})
            run_dir.save(manager, updates, ocp.args.Composite(dream=policy.save_args()))

        key = jax.random.key(config.seed)
        done = int(policy.state.updates)
        metrics = {}
        try:
            # Each call folds its global index into the key, so a resumed run repeats nothing.
            while done < config.updates:
                metrics = policy.train(model, dream_config.updates_per_call, jax.random.fold_in(key, done),
                                       log=log, progress=sys.stderr.isatty())
                done = int(policy.state.updates)
        finally:
            manager.close()
        save_policy(config.out, policy.actor, task, {"trained_by": "dreamer dream", "world_model": str(config.world_model)})
        summary = {
            "real_steps": 0,
            "eval_steps": 0,
            "wall_seconds": time.perf_counter() - started,
            "task": task.name,
            "updates": done,
            "halt_threshold": halt,
            "uncertainty_penalty": dream_config.uncertainty_penalty,
            **{f"final_{name}": value for name, value in metrics.items()},
        }
        run_dir.write_summary(summary)
    text = (
        f"trained a policy for {done} updates in dreams of {task.name} "
        f"(penalty {dream_config.uncertainty_penalty}, halt at disagreement {halt:.3g}); "
        f"dream return {metrics.get('dream_return', float('nan')):.1f}\nwrote {config.out}"
    )
    return summary, text


def _halt_threshold(model, train, multiple: float) -> float:
    """``multiple`` times the largest disagreement on the real training transitions."""
    if multiple <= 0:
        return 0.0
    before, _ = train.transitions()
    observations = jnp.asarray(train.observations[before], dtype=jnp.float32)
    disagreement = jax.jit(lambda obs, act: model.uncertainty(model.initial_state(obs), act))(
        observations, jnp.asarray(train.actions)
    )
    return float(multiple * np.max(np.asarray(disagreement)))
