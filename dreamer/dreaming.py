"""A policy learning in a world model's dreams: networks, state, and the training loop.

`PolicyInDreams` owns the actor, the critic and their optimiser state, and trains them
with jitted calls of many fused updates (see `dreamer.actor_critic`). The world model
is passed to every call as state, so a refitted model of the same shape is used without
recompiling, and start states sit in a padded buffer that only grows by doubling. Each
update's batch is split over a device mesh; the state, the start buffer and the model
are replicated on every device of it.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from dreamer.actor_critic import DreamConfig, DreamState, make_dream_trainer, make_networks
from dreamer.start_states import StartStates, capacities, filtered_starts, start_states
from policies.networks import Actor
from tasks.episodes import Episodes
from tasks.registry import Task
from worldmodel.sharding import data_mesh, host_local, replicate


class PolicyInDreams:
    """An actor-critic trained inside a world model.

    Args:
        world_model: the model dreams run in (any model of the interface).
        task: the task whose action space the actor acts in.
        episodes: real training episodes: their steps are the first dream starts, and
            the model's states there give the networks' input statistics.
        config: dream settings.
        seed: seed of the networks' initial weights.
        mesh: devices each update's batch is split over (`dreamer.actor_critic.dream_mesh`);
            None: all local devices.
    """

    def __init__(self, world_model: nnx.Module, task: Task, episodes: Episodes, config: DreamConfig, seed: int,
                 mesh: Mesh | None = None):
        self.config = config
        self.task = task
        self.mesh = mesh or data_mesh()
        self.context = getattr(world_model, "context_length", 0)
        starts = start_states(episodes)
        features = start_features(world_model, starts, self.context)
        self.starts = replicate(starts, self.mesh)
        actor, critic = make_networks(features.shape[-1], task.action_space, config, seed)
        actor.input_norm.fit(features)
        critic.input_norm.fit(features)
        self._actor_graph = nnx.graphdef(actor)
        self._init, self._train = make_dream_trainer(nnx.graphdef(world_model), actor, critic, config, self.context,
                                                     self.mesh)
        self.state: DreamState = self._init()

    def set_start_episodes(self, episodes: Episodes) -> None:
        """Dreams start from these real episodes' steps from now on."""
        held = capacities(self.starts)
        new = start_states(episodes)
        # Keep the capacities unless the data outgrew them, so the jitted call is reused.
        if all(a <= b for a, b in zip(capacities(new), held)):
            new = start_states(episodes, held)
        self.starts = replicate(new, self.mesh)

    def train(self, world_model: nnx.Module, updates: int, key: jax.Array, log=None, progress: bool = True) -> dict:
        """Run ``updates`` updates (rounded up to whole calls); returns the last call's metrics.

        Args:
            world_model: the model to dream in.
            updates: how many actor-critic updates.
            key: randomness; each call folds in its index.
            log: called as ``log(updates_done, metrics)`` after each call.
            progress: show a progress bar on stderr.
        """
        # A no-op for a model fitted on the same mesh; a copy for one loaded or fitted elsewhere.
        world_model_state = replicate(nnx.state(world_model), self.mesh)
        calls = -(-updates // self.config.updates_per_call)
        metrics: dict = {}
        bar = tqdm(total=calls * self.config.updates_per_call, unit="upd", desc="dream", disable=not progress,
                   file=sys.stderr, leave=False)
        try:
            for call in range(calls):
                self.state, metrics = self._train(self.state, world_model_state, self.starts, jax.random.fold_in(key, call))
                metrics = {name: float(value) for name, value in metrics.items()}
                bar.update(self.config.updates_per_call)
                bar.set_postfix(dream_return=f"{metrics['dream_return']:.1f}")
                if log is not None:
                    log(int(self.state.updates), metrics)
        finally:
            bar.close()
        return metrics

    def compiled_call(self, world_model: nnx.Module) -> jax.stages.Compiled:
        """One training call as `train` runs it, compiled: its cost analysis and program
        show how the work is shared out over the mesh's devices."""
        arguments = (self.state, replicate(nnx.state(world_model), self.mesh), self.starts, jax.random.key(0))
        return self._train.lower(*arguments).compile()

    @property
    def actor(self) -> Actor:
        """The current actor, as a module of its own (a copy of the trained state, on the
        mesh's devices of this process)."""
        return nnx.merge(self._actor_graph, host_local(self.state.actor))

    # -- checkpoints ----------------------------------------------------------------------

    def save_args(self) -> ocp.args.StandardSave:
        return ocp.args.StandardSave(self.state)

    def restore_args(self) -> ocp.args.StandardRestore:
        return ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, self.state))

    def restore(self, state: DreamState) -> None:
        self.state = replicate(DreamState(*state), self.mesh)


START_BLOCK = 4096  # starts filtered per call when computing input statistics


def start_features(world_model: nnx.Module, starts: StartStates, context: int) -> np.ndarray:
    """What the policy sees at every start, ``[count, F]``, computed in fixed-size blocks."""
    graph, state = nnx.split(world_model)
    count = int(starts.count)
    last = starts.starts.shape[0] - 1
    blocks = [np.asarray(_start_features(graph, state, starts, jnp.minimum(jnp.arange(first, first + START_BLOCK), last),
                                         context))
              for first in range(0, count, START_BLOCK)]
    return np.concatenate(blocks)[:count]


@functools.partial(jax.jit, static_argnums=(0, 4))
def _start_features(graph, state, starts: StartStates, index, context: int):
    world_model = nnx.merge(graph, state)
    return world_model.features(filtered_starts(world_model, starts, index, context))
