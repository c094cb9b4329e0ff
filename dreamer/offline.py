"""Dreaming from fixed traces: a policy trained purely in a fitted world model's dreams.

Dreams start from real states of the training episodes and never touch the real
environment. Because nothing corrects the model where it is wrong, imagined rewards are
penalised by the model's disagreement (MOPO), and a step whose disagreement passes a
multiple of the largest disagreement seen on real training transitions sends the dream
to MOReL's absorbing HALT state, which earns the lowest training reward forever.
`dreamer dream` and the offline arm of `dreamer compare` are both this function.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from dreamer.actor_critic import DreamConfig
from dreamer.dream_losses import lowest_halt_reward
from dreamer.dreaming import PolicyInDreams
from tasks.episodes import Episodes
from tasks.registry import Task
from tasks.run_directory import RunDirectory
from worldmodel.fidelity import transition_disagreement
from worldmodel.streaming import TraceStream


def halting(world_model: nnx.Module, train: Episodes | Iterable[Episodes], multiple: float,
            uncertainty_penalty: float) -> tuple[float, float]:
    """The halting threshold and the reward of HALT for dreams started from ``train``.

    The threshold is ``multiple`` times the largest disagreement on the real training
    transitions (0 when ``multiple`` is 0: halting off); HALT earns less than any step a
    dream that goes on can earn (`lowest_halt_reward`), so halting never pays. ``train``
    may come as blocks of episodes (a trace file read in parts): both are a largest and
    a lowest value, taken block by block.
    """
    largest, lowest = 0.0, math.inf
    for block in [train] if isinstance(train, Episodes) else train:
        lowest = min(lowest, float(np.min(block.rewards)))
        if multiple > 0:
            largest = max(largest, float(np.max(transition_disagreement(world_model, block))))
    threshold = float(multiple * largest) if multiple > 0 else 0.0
    return threshold, lowest_halt_reward(np.array([lowest]), uncertainty_penalty, threshold)


def dream_offline(world_model: nnx.Module, task: Task, train: Episodes | TraceStream, config: DreamConfig, updates: int,
                  seed: int, halt_multiple: float = 2.0, run: RunDirectory | None = None, resume: bool = False,
                  progress: bool = False, mesh: Mesh | None = None) -> tuple[PolicyInDreams, dict]:
    """Train a policy for ``updates`` updates in ``world_model``'s dreams from ``train``'s states.

    Args:
        world_model: a fitted model of the world-model interface.
        task: the task whose action space the policy acts in.
        train: the episodes dreams start from (the model's training split), or a
            `worldmodel.streaming.TraceStream` of a trace file read in blocks: then the
            halting threshold is taken block by block and dreams start from a seeded draw
            of its training episodes, one block's worth (`TraceStream.sample`).
        config: dream settings; its halting fields are set here from the data.
        updates: actor-critic updates in all.
        seed: seed of the networks and of the dreams.
        halt_multiple: see `halting`.
        run: where metrics and checkpoints go (None keeps nothing on disk).
        resume: continue from the run's last checkpoint.
        progress: show a progress bar on stderr.
        mesh: devices each update's batch is split over (`dreamer.actor_critic.dream_mesh`);
            None: all local devices.

    Returns:
        The trained policy, and ``{"updates", "halt_threshold", "halt_reward",
        "uncertainty_penalty", "final_<metric>"...}``.
    """
    streamed = isinstance(train, TraceStream)
    halt_threshold, halt_reward = halting(world_model, train.blocks() if streamed else train, halt_multiple,
                                          config.uncertainty_penalty)
    if config.halt_reward is not None:  # set by the user: kept
        halt_reward = config.halt_reward
    config = dataclasses.replace(config, halt_threshold=halt_threshold, halt_reward=halt_reward)
    policy = PolicyInDreams(world_model, task, train.sample(seed) if streamed else train, config, seed, mesh)
    manager = run.checkpoint_manager("dream") if run is not None else None
    if resume and manager is not None:
        if manager.latest_step() is not None:
            restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(dream=policy.restore_args()))
            policy.restore(restored["dream"])
        # Lines logged after the last checkpoint are logged again as the work is redone.
        run.truncate_metrics(int(policy.state.updates))

    def log(done: int, metrics: dict) -> None:
        if run is not None:
            run.log(done, {f"dream/{name}": value for name, value in metrics.items()})
            run.save(manager, done, ocp.args.Composite(dream=policy.save_args()))

    key = jax.random.key(seed)
    done = int(policy.state.updates)
    metrics: dict = {}
    try:
        # Each call folds its global index into the key, so a resumed run repeats nothing.
        while done < updates:
            metrics = policy.train(world_model, config.updates_per_call, jax.random.fold_in(key, done),
                                   log=log, progress=progress)
            done = int(policy.state.updates)
    finally:
        if manager is not None:
            manager.close()
    return policy, {
        "updates": done,
        "halt_threshold": halt_threshold,
        "halt_reward": halt_reward,
        "uncertainty_penalty": config.uncertainty_penalty,
        **{f"final_{name}": value for name, value in metrics.items()},
    }
