"""The world-model interface: what every model offers to dreaming, checking and DreamEnv.

A world model is a Flax NNX module with the methods below. Everything downstream
(imagination, `dreamer check`, the gymnasium export) speaks only to them, so an ensemble
of MLPs, a recurrent latent model or anything later is interchangeable. States are
pytrees of arrays with a leading batch axis; what is inside is the model's own business.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

from tasks.sampler import SequenceBatch

State = Any  # a pytree of arrays with a leading batch axis


@runtime_checkable
class WorldModel(Protocol):
    """A learned, steppable model of a task.

    Attributes:
        observation_shape: shape of one observation, as the task gives it.
        action_size: the number of actions (discrete) or the action's dimension.
        discrete_actions: whether actions are integers in ``[0, action_size)``.
    """

    observation_shape: tuple[int, ...]
    action_size: int
    discrete_actions: bool

    def loss(self, batch: SequenceBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training objective on a sequence batch: a scalar and named metrics."""
        ...

    def initial_state(self, obs: jax.Array) -> State:
        """A dream's start from real observations ``[B, *observation_shape]``."""
        ...

    def observe(self, state: State, action: jax.Array, next_obs: jax.Array) -> State:
        """The state after ``action``, filtered with the real ``next_obs`` (posterior)."""
        ...

    def step(self, state: State, action: jax.Array, key: jax.Array) -> tuple[State, jax.Array, jax.Array]:
        """One imagined step: the next state, reward ``[B]`` and continue probability ``[B]``."""
        ...

    # Optional: ``step_rows(state, action, keys [B])``, `step` with one key per row, so
    # each row steps exactly as a batch of one with its key (DreamVectorEnv's
    # ``draws="per_environment"``). Without it, such dreams step the model row by row.

    def features(self, state: State) -> jax.Array:
        """What a policy sees, ``[B, F]``; for observation-space models, the observation."""
        ...

    def decode(self, state: State) -> jax.Array:
        """The predicted observation ``[B, *observation_shape]``, in the task's units."""
        ...

    def uncertainty(self, state: State, action: jax.Array) -> jax.Array:
        """Disagreement about the next step ``[B]``, for penalties and halting."""
        ...
