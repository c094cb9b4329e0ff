"""A fitted world model as a functional environment: pure, jittable reset and step.

Pure-JAX agents roll these inside their own `jax.jit` and `lax.scan` (with the model
merged from its split state, as in `dreamer.imagination`); `DreamEnv` and
`DreamVectorEnv` are thin gymnasium shells around the same functions, so all three
dream alike. A batch of N environments is one batch of model states: every method of
the world-model interface already takes a leading batch axis, so one call steps them
all without `vmap` over the model.

Randomness comes as one key per environment (``keys [N]``). What the environment draws
itself (a start state, whether a step terminates) uses only that environment's key, so
environment i behaves as a lone environment given the same keys. The model's own draw
(an ensemble's elite, a latent sample) is one key for the whole batch, taken from the
first environment's key: a model may correlate the rows of a batch (the ensemble hands
each group of rows one elite), so only a model whose step draws nothing makes N
environments exactly N lone ones; a batch of one always is. ``per_environment_draws``
steps the model row by row, each with its own key: then N environments are exactly N
lone ones for any model, at the cost of the model's batching.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tasks.episodes import Episodes
from tasks.errors import InputError
from tasks.registry import Task, task_from_record
from tasks.splits import fitting_episodes
from tasks.traces import read_traces
from worldmodel.saving import load, load_spec

START_CHOICES = ("initial", "any")
TERMINATION_CHOICES = ("sample", "threshold")


class DreamParams(NamedTuple):
    """Everything a dream needs besides the model, as arrays (an argument, not a constant, of jit).

    Attributes:
        start_observations: ``[S, *obs_shape]`` float32, the observations episodes start from.
        observation_low: ``[*obs_shape]`` lowest value of each observation entry; its
            dtype is the observation's (the space's, as JAX holds it).
        observation_high: ``[*obs_shape]`` highest value, same dtype.
        action_low: lowest action (per entry for Box, the first action for Discrete).
        action_high: highest action.
        horizon: ``[]`` int32, steps after which an episode is truncated.
        threshold_termination: ``[]`` bool, end where the continue probability is below
            one half instead of drawing the ending from it.
    """

    start_observations: jax.Array
    observation_low: jax.Array
    observation_high: jax.Array
    action_low: jax.Array
    action_high: jax.Array
    horizon: jax.Array
    threshold_termination: jax.Array


class DreamState(NamedTuple):
    """N dreaming environments.

    Attributes:
        model_state: the world model's state, leading axis ``[N]``.
        steps: ``[N]`` int32 steps since each environment's reset.
        ended: ``[N]`` bool, the last step terminated or truncated the episode.
    """

    model_state: Any
    steps: jax.Array
    ended: jax.Array


class DreamStep(NamedTuple):
    """What one step of N environments shows.

    Attributes:
        observation: ``[N, *obs_shape]``, inside the observation space, in its dtype.
        reward: ``[N]`` float32.
        terminated: ``[N]`` bool, the model ended the episode.
        truncated: ``[N]`` bool, the episode reached the horizon.
        continue_prob: ``[N]`` the model's probability that the episode goes on.
        uncertainty: ``[N]`` the model's disagreement about this step.
    """

    observation: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    continue_prob: jax.Array
    uncertainty: jax.Array


@dataclasses.dataclass(frozen=True)
class Dream:
    """A world model loaded from its run directory, with what it dreams from.

    Attributes:
        world_model: the fitted model (any model of the world-model interface).
        task: the task it models; its spaces are the dream's spaces.
        params: start observations, bounds, horizon and termination rule.
    """

    world_model: nnx.Module
    task: Task
    params: DreamParams


def load_dream(
    world_model: str | Path,
    *,
    start: str = "initial",
    termination: str = "sample",
    horizon: int | None = None,
    traces: str | Path | None = None,
) -> Dream:
    """The world model in the run directory ``world_model``, ready to dream.

    Args:
        world_model: a run directory written by ``dreamer fit`` or ``dreamer run``.
        start: ``initial`` starts episodes from the first observation of a training
            episode; ``any`` from any training observation an action was taken from.
        termination: ``sample`` draws each ending from the continue probability;
            ``threshold`` ends where it is below one half.
        horizon: steps after which episodes are truncated (default: the task's).
        traces: the trace file of the start observations (default: the one the model
            was fitted on); its training split under the model's split seed is used.

    Raises:
        ValueError: ``start``, ``termination`` or ``horizon`` is not allowed.
        InputError: the folder holds no model, or its traces cannot be read.
    """
    check_choice("start", start, START_CHOICES)
    check_choice("termination", termination, TERMINATION_CHOICES)
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1):
        raise ValueError(f"horizon must be a positive integer or None, got {horizon!r}")
    spec = load_spec(world_model)
    task = task_from_record(spec)
    location = traces or spec.get("traces")
    if not location:
        raise InputError(world_model, "names no trace file to start dreams from; pass traces=")
    train, _ = fitting_episodes(read_traces(location, task=task).episodes, spec.get("split_seed", 0))
    if train is None:
        raise InputError(location, "has no training episodes to start dreams from")
    params = dream_params(
        start_observations(train, start),
        task.observation_space,
        task.action_space,
        task.horizon if horizon is None else int(horizon),
        termination,
    )
    return Dream(load(world_model), task, params)


def dream_params(
    starts: np.ndarray,
    observation_space: gym.Space,
    action_space: gym.Space,
    horizon: int,
    termination: str = "sample",
) -> DreamParams:
    """`DreamParams` from start observations, the task's spaces and the episode rules."""
    check_choice("termination", termination, TERMINATION_CHOICES)
    observation_low, observation_high = jax_bounds(observation_space)
    action_low, action_high = jax_bounds(action_space)
    return DreamParams(
        start_observations=jnp.asarray(starts, dtype=jnp.float32),
        observation_low=observation_low,
        observation_high=observation_high,
        action_low=action_low,
        action_high=action_high,
        horizon=jnp.asarray(horizon, dtype=jnp.int32),
        threshold_termination=jnp.asarray(termination == "threshold"),
    )


def start_observations(train: Episodes, start: str = "initial") -> np.ndarray:
    """The observations dreams start from: each episode's first, or any acted from.

    A terminal observation is never a start: nothing was done from it in the data.
    """
    check_choice("start", start, START_CHOICES)
    if start == "initial":
        return train.first_observations()
    return train.acted_observations()


def reset(world_model, params: DreamParams, keys: jax.Array) -> tuple[DreamState, jax.Array]:
    """Start N environments, each from a start observation drawn uniformly with its key.

    Args:
        world_model: any model of the world-model interface.
        params: the dream's start observations and rules.
        keys: ``[N]`` one key per environment.

    Returns:
        The environments' state and their observations ``[N, *obs_shape]``.
    """
    count = params.start_observations.shape[0]
    chosen = jax.vmap(lambda key: jax.random.randint(key, (), 0, count))(keys)
    starts = params.start_observations[chosen]
    state = DreamState(
        model_state=world_model.initial_state(starts),
        steps=jnp.zeros(keys.shape, dtype=jnp.int32),
        ended=jnp.zeros(keys.shape, dtype=bool),
    )
    return state, into_bounds(starts, params.observation_low, params.observation_high)


def step(world_model, params: DreamParams, state: DreamState, action: jax.Array,
         keys: jax.Array, with_uncertainty: bool = True,
         per_environment_draws: bool = False) -> tuple[DreamState, DreamStep]:
    """One imagined step of N environments; none is reset, whatever ``state.ended`` says.

    Args:
        world_model: any model of the world-model interface.
        params: the dream's rules.
        state: the environments' state.
        action: ``[N, *action_shape]``, clipped into the action space.
        keys: ``[N]`` one key per environment (the model's draw uses the first).
        with_uncertainty: compute the model's disagreement (zeros otherwise); for the
            ensemble it costs a forward pass of every elite, several times the step.
        per_environment_draws: step the model once per environment with that
            environment's own key, so each dreams exactly as a lone one whatever the
            batch (for the ensemble: every elite runs for every row, several times the
            cost); by default the batch shares one draw.
    """
    action = into_bounds(action, params.action_low, params.action_high)
    draws = jax.vmap(jax.random.split)(keys)
    if with_uncertainty:
        uncertainty = world_model.uncertainty(state.model_state, action)
    else:
        uncertainty = jnp.zeros(keys.shape, dtype=jnp.float32)
    model_state, reward, continue_prob = _model_step(world_model, state.model_state, action, draws[:, 1],
                                                     per_environment_draws)
    observation = into_bounds(world_model.decode(model_state), params.observation_low, params.observation_high)
    # A uniform draw at or above p ends the episode: probability 1 - p.
    drawn_end = jax.vmap(jax.random.uniform)(draws[:, 0]) >= continue_prob
    terminated = jnp.where(params.threshold_termination, continue_prob < 0.5, drawn_end)
    steps = state.steps + 1
    truncated = steps >= params.horizon
    next_state = DreamState(model_state, steps, terminated | truncated)
    return next_state, DreamStep(observation, reward, terminated, truncated, continue_prob, uncertainty)


def autoreset_step(world_model, params: DreamParams, state: DreamState, action: jax.Array,
                   keys: jax.Array, with_uncertainty: bool = True,
                   per_environment_draws: bool = False) -> tuple[DreamState, DreamStep]:
    """`step`, except that environments whose last step ended are reset instead.

    This is gymnasium's next-step autoreset: a reset environment ignores its action and
    shows its start observation with reward 0, neither terminated nor truncated, and
    continue probability 1 and uncertainty 0. It uses its key as `reset` would, so its
    new episode is the one a lone environment would start with that key.
    """
    stepped_state, stepped = step(world_model, params, state, action, keys, with_uncertainty, per_environment_draws)
    started_state, started = reset(world_model, params, keys)
    restart = state.ended
    shown = DreamStep(
        observation=started,
        reward=jnp.zeros_like(stepped.reward),
        terminated=jnp.zeros_like(stepped.terminated),
        truncated=jnp.zeros_like(stepped.truncated),
        continue_prob=jnp.ones_like(stepped.continue_prob),
        uncertainty=jnp.zeros_like(stepped.uncertainty),
    )
    return select(restart, started_state, stepped_state), select(restart, shown, stepped)


def same_step_autoreset_step(world_model, params: DreamParams, state: DreamState, action: jax.Array,
                             keys: jax.Array, with_uncertainty: bool = True,
                             per_environment_draws: bool = False) -> tuple[DreamState, DreamStep, jax.Array]:
    """`step`, with environments whose episode just ended reset in the same call.

    This is gymnasium's same-step autoreset: such an environment shows its new start
    observation along with the ending step's reward and ending flags, and the
    observation the episode ended in comes back separately (learners bootstrap a
    truncated episode from it). Returns the state, what is shown, and the final
    observations ``[N, *obs_shape]`` (meaningful where an episode ended).
    """
    stepped_state, stepped = step(world_model, params, state, action, keys, with_uncertainty, per_environment_draws)
    reset_keys = jax.vmap(lambda key: jax.random.fold_in(key, 1))(keys)
    started_state, started = reset(world_model, params, reset_keys)
    ended = stepped.terminated | stepped.truncated
    shown = stepped._replace(observation=select(ended, started, stepped.observation))
    return select(ended, started_state, stepped_state), shown, stepped.observation


def _model_step(world_model, model_state, action, keys, per_environment: bool):
    """The model's step of the batch: one draw from the first key, or one per row (through
    the model's `step_rows` where it has one, else a step per row)."""
    if not per_environment:
        return world_model.step(model_state, action, keys[0])
    if hasattr(world_model, "step_rows"):
        return world_model.step_rows(model_state, action, keys)

    def one(row_state, row_action, key):
        batch_of_one = jax.tree.map(lambda x: x[None], row_state)
        return jax.tree.map(lambda x: x[0], world_model.step(batch_of_one, row_action[None], key))

    return jax.vmap(one)(model_state, action, keys)


def split_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each environment's key split in two: its next key and a draw for this call."""
    both = jax.vmap(jax.random.split)(keys)
    return both[:, 0], both[:, 1]


def seed_keys(seeds: jax.Array) -> jax.Array:
    """One key per seed; seeds are unsigned 32-bit (larger ones are taken modulo 2**32)."""
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, dtype=jnp.uint32))


def select(mask: jax.Array, when_true, when_false):
    """Per environment, the first pytree's rows where ``mask [N]`` holds, else the second's."""

    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, when_true, when_false)


def into_bounds(values: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """``values`` clipped into ``[low, high]`` and cast to their dtype (rounded if integer)."""
    if jnp.issubdtype(low.dtype, jnp.integer):
        values = jnp.round(values)
    return jnp.clip(values, low, high).astype(low.dtype)


def jax_bounds(space: gym.Space) -> tuple[jax.Array, jax.Array]:
    """A Box or Discrete space's bounds as JAX arrays, in the dtype JAX holds it in.

    Where JAX holds a float space in lower precision (float64 without x64), the bounds
    are rounded inwards, so every value within them is inside the space once cast back.
    """
    if isinstance(space, gym.spaces.Discrete):
        low, high = np.asarray(space.start), np.asarray(space.start + space.n - 1)
    elif isinstance(space, gym.spaces.Box):
        low, high = space.low, space.high
    else:
        raise InputError(str(space), "unsupported space for dreams (Box and Discrete only)")
    dtype = jax.dtypes.canonicalize_dtype(low.dtype)
    if np.issubdtype(low.dtype, np.floating):
        held_low, held_high = low.astype(dtype), high.astype(dtype)
        held_low = np.where(held_low < low, np.nextafter(held_low, dtype.type(np.inf)), held_low)
        held_high = np.where(held_high > high, np.nextafter(held_high, dtype.type(-np.inf)), held_high)
        return jnp.asarray(held_low, dtype=dtype), jnp.asarray(held_high, dtype=dtype)
    return jnp.asarray(low, dtype=dtype), jnp.asarray(high, dtype=dtype)


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise ValueError naming the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
