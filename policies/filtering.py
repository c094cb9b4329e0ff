"""A policy that acts on a world model's latent state: the model rides along in the real world.

A policy trained in the dreams of a model with memory (the RSSM) sees the model's state,
not the observation. Acting in the real environment, the model filters every real
observation with the action actually applied before it (`observe`), exactly as it did
over the real context before each dream, and the actor reads the filtered state's
`features`. Each environment slot keeps its own state; a slot whose episode starts takes
the model's `initial_state` of its first observation.

The model is any object of the world-model interface (this package imports none of
`worldmodel`): a state pytree with a leading batch axis, ``initial_state``,
``observe`` and ``features``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies.acting import ActorPolicy
from policies.networks import Actor


class FilteringPolicy:
    """An `ActorPolicy` on the features of a world model's filtered state, one state per slot.

    A `tasks.recording.StatefulPolicy`: ``start(slots, num_slots)`` when episodes begin,
    then ``policy(observations, rng, slots)`` for the running slots.

    Args:
        world_model: the model whose state the actor was trained on.
        actor: the trained actor (its input is the model's features).
        mode, noise: how the actor acts (see `ActorPolicy`); the action returned, noise
            included, is the one the model filters with next.
    """

    def __init__(self, world_model: nnx.Module, actor: Actor, mode: str = "deterministic", noise: float = 0.0):
        self._acting = ActorPolicy(actor, mode, noise)
        self._model_graph, self._model_state = nnx.split(world_model)
        self._observation_shape = tuple(world_model.observation_shape)
        self._states = None  # the model's state of every slot
        self._last_actions = np.zeros(0)  # the action applied last in every slot
        self._fresh = np.zeros(0, bool)  # slots whose next observation is their episode's first

    def start(self, slots: np.ndarray, num_slots: int) -> None:
        """Episodes begin in ``slots`` (of ``num_slots`` in all): their memory starts over."""
        if self._states is None or len(self._fresh) != num_slots:
            zeros = jnp.zeros((num_slots, *self._observation_shape), jnp.float32)
            self._states = _initial_states(self._model_graph, self._model_state, zeros)
            # A fresh slot starts over whatever its last action was: zeros never reach the model.
            self._last_actions = np.zeros((num_slots, *self._acting.action_shape), self._acting.action_dtype)
            self._fresh = np.zeros(num_slots, bool)
        self._fresh[np.asarray(slots)] = True

    def __call__(self, observations: np.ndarray, rng: np.random.Generator, slots: np.ndarray | None = None) -> np.ndarray:
        if slots is None:  # one episode per row, all of them running: a caller without slots
            slots = np.arange(len(observations))
            if self._states is None or len(self._fresh) != len(slots):
                self.start(slots, len(slots))
        if self._states is None:
            raise RuntimeError("FilteringPolicy: call start(slots, num_slots) when episodes begin")
        slots = np.asarray(slots)
        num_slots = len(self._fresh)
        every = np.zeros((num_slots, *self._observation_shape), np.asarray(observations).dtype)
        every[slots] = observations
        running = np.zeros(num_slots, bool)
        running[slots] = True
        self._states, features = _filter(self._model_graph, self._model_state, self._states,
                                         jnp.asarray(self._last_actions), jnp.asarray(every), jnp.asarray(self._fresh),
                                         jnp.asarray(running))
        actions = self._acting(np.asarray(features)[slots], rng)
        self._last_actions[slots] = actions
        self._fresh[slots] = False
        return actions


@functools.partial(jax.jit, static_argnums=0)
def _initial_states(graph, state, observations):
    return nnx.merge(graph, state).initial_state(observations)


@functools.partial(jax.jit, static_argnums=0)
def _filter(graph, state, model_states, last_actions, observations, fresh, running):
    """Every slot's next state (fresh slots start over, idle ones keep theirs) and its features."""
    model = nnx.merge(graph, state)
    filtered = filter_or_start(model, model_states, last_actions, observations, fresh)
    next_states = select_rows(running, filtered, model_states)
    return next_states, model.features(next_states)


def filter_or_start(model, states, actions, observations, starting: jax.Array):
    """The model's next state per row: `initial_state` of the observation where
    ``starting`` (an episode begins there), else `observe` after the row's action."""
    return select_rows(starting, model.initial_state(observations), model.observe(states, actions, observations))


def select_rows(condition: jax.Array, if_true, if_false):
    """Row ``i`` of every leaf from ``if_true`` where ``condition[i]``, else from ``if_false``."""
    return jax.tree.map(lambda a, b: jnp.where(condition.reshape(-1, *[1] * (a.ndim - 1)), a, b), if_true, if_false)


def reads_observations(world_model) -> bool:
    """Whether a policy trained in ``world_model``'s dreams acts on the observation itself:
    a model whose state is the observation filters no context (``context_length`` 0)."""
    return world_model is None or getattr(world_model, "context_length", 0) == 0


def acting_policy(actor: Actor, world_model=None, mode: str = "deterministic", noise: float = 0.0):
    """The behaviour policy of an actor trained in ``world_model``'s dreams: an `ActorPolicy`
    on observations, or a `FilteringPolicy` where the actor reads the model's latent state."""
    if reads_observations(world_model):
        return ActorPolicy(actor, mode, noise)
    return FilteringPolicy(world_model, actor, mode, noise)
