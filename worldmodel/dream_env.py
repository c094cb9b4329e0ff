"""`DreamEnv`: a fitted world model as a gymnasium environment, for any RL library.

    import gymnasium as gym
    import worldmodel  # registers dreamer/Dream-v0
    env = gym.make("dreamer/Dream-v0", world_model="runs/wm-pendulum", seed=0)

Its spaces are the task's own, so a policy trained here runs unchanged in the real
environment (for a camera-frame task its observations are dreamed frames, uint8).
With ``observations="latents"`` it shows the model's latent state instead (its
`features`, a float32 vector, what the framework's own dreaming policies see), for
learners that act on the model's state rather than on decoded observations.

Episodes start from real training states, step through the model, end where the
model says (drawn from its continue probability, or below one half with
``termination="threshold"``) and are truncated at the task's horizon (``horizon=``
changes it; gymnasium's ``max_episode_steps`` can only cut episodes shorter). Actions
are clipped into the action space, observations into the observation space and cast
to its dtype. Each step's info holds the model's ``uncertainty`` about it and the
``continue_prob``.

One environment is a batch of one of `worldmodel.dream_functional`, one jitted call per
step; `DreamVectorEnv` steps many in one call, with the same seeding rule.

Seeds: ``seed`` given here is the seed of the first reset when that reset is given
none, so ``gym.make(..., seed=s)`` then ``reset()`` is ``reset(seed=s)``. Each seed is
the JAX key ``jax.random.key(seed % 2**32)``; every reset and step splits the key.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldmodel import dream_functional as functional
from worldmodel.dream_calls import dream_calls, seed_keys

OBSERVATION_CHOICES = ("decoded", "latents")


class DreamEnv(gym.Env):
    """One environment dreamed by a fitted world model.

    Args:
        world_model: a run directory written by ``dreamer fit`` or ``dreamer run``.
        seed: the seed of the first reset if that reset is given none.
        start: ``initial`` (episodes start where training episodes started) or ``any``
            (from any training observation an action was taken from).
        termination: ``sample`` (each ending drawn from the continue probability) or
            ``threshold`` (end where it is below one half).
        horizon: steps after which an episode is truncated (default: the task's).
        traces: trace file of the start observations (default: the model's own).
        with_uncertainty: report the model's disagreement in each step's info; for the
            ensemble that costs a forward pass of every elite, several times the step.
        observations: ``decoded`` (the model's predicted observation, in the task's
            observation space) or ``latents`` (the model's `features` of its state,
            ``Box(-inf, inf, (F,), float32)``; for the ensemble, whose state is the
            observation, that is the observation as float32).

    All arguments are plain JSON values, so ``env.spec`` can be saved with
    ``to_json`` and made again; give paths as strings for that.

    Raises:
        InputError: the run directory holds no model, or its traces cannot be read.
        ValueError: ``start``, ``termination``, ``horizon`` or ``observations`` is not an
            allowed value.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        world_model: str,
        seed: int | None = None,
        start: str = "initial",
        termination: str = "sample",
        horizon: int | None = None,
        traces: str | None = None,
        with_uncertainty: bool = True,
        observations: str = "decoded",
    ):
        functional.check_choice("observations", observations, OBSERVATION_CHOICES)
        self.dream = functional.load_dream(
            world_model, start=start, termination=termination, horizon=horizon, traces=traces
        )
        self.task = self.dream.task
        self.horizon = int(self.dream.params.horizon)
        graphdef, model_state = nnx.split(self.dream.world_model)
        self._model_leaves, treedef = jax.tree.flatten(model_state)
        self._latents = observations == "latents"
        self._features = _features_call(graphdef, treedef) if self._latents else None
        # Copies, so seeding one environment's action space leaves the others' alone.
        self.observation_space = (latent_space(self.dream.world_model, self.dream.params.start_observations[:1])
                                  if self._latents else copy.deepcopy(self.task.observation_space))
        self.action_space = copy.deepcopy(self.task.action_space)
        self._with_uncertainty = bool(with_uncertainty)
        self._calls = dream_calls(graphdef, treedef, self._with_uncertainty)
        self._first_seed = seed
        self._keys: jax.Array | None = None
        self._state: functional.DreamState | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._keys is None:
            seed = self._first_seed
        super().reset(seed=seed)
        if seed is None and self._keys is None:
            seed = int(self.np_random.integers(2**32))
        if seed is not None:
            self._keys = seed_keys([seed])
        self._state, self._keys, observation = self._calls.reset(self._model_leaves, self.dream.params, self._keys)
        return self._observation(observation), {}

    def step(self, action):
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        action = np.asarray(action).reshape(1, *self.action_space.shape)
        self._state, self._keys, observation, scalars, _ = self._calls.step(
            self._model_leaves, self.dream.params, self._state, self._keys, action
        )
        observation, scalars = jax.device_get((observation, scalars))
        reward, terminated, truncated, continue_prob, uncertainty, _ = scalars[:, 0]
        info = {"continue_prob": float(continue_prob)}
        if self._with_uncertainty:
            info["uncertainty"] = float(uncertainty)
        return self._observation(observation), float(reward), bool(terminated), bool(truncated), info

    def _observation(self, batch) -> np.ndarray:
        if self._latents:
            batch = self._features(self._model_leaves, self._state.model_state)
        return np.array(batch[0], dtype=self.observation_space.dtype)


def latent_space(world_model, start_observations: jax.Array) -> gym.spaces.Box:
    """The space of ``world_model``'s `features`: unbounded float32 vectors of its width."""
    width = jax.eval_shape(lambda obs: world_model.features(world_model.initial_state(obs)), start_observations)
    return gym.spaces.Box(-np.inf, np.inf, (int(width.shape[-1]),), np.float32)


@functools.lru_cache(maxsize=None)
def _features_call(graphdef, treedef):
    """A jitted ``features(leaves, model_state)`` for models of this structure, as float32."""

    @jax.jit
    def features(leaves, model_state):
        model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        return model.features(model_state).astype(jnp.float32)

    return features
