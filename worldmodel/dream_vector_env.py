"""`DreamVectorEnv`: many dreams stepped in one jitted call, as a gymnasium vector environment.

    import gymnasium as gym
    import worldmodel  # registers dreamer/Dream-v0
    envs = gym.make_vec("dreamer/Dream-v0", num_envs=1024, world_model="runs/wm-pendulum")

All environments are one batch of `worldmodel.dream_functional`: a step is one call of
the model on every environment at once, never a Python loop over them. Episodes that
end are reset on the next step (gymnasium's ``AutoresetMode.NEXT_STEP``): that step
ignores the environment's action and shows its start observation with reward 0,
neither terminated nor truncated, and its infos masked out. ``autoreset_mode=
"same_step"`` resets them within the ending step instead (``AutoresetMode.SAME_STEP``).

Seeds follow `SyncVectorEnv`: ``reset(seed=s)`` seeds environment i with ``s + i`` (a
list gives each its own), and environment i then starts and ends its episodes as a
`DreamEnv` reset with that seed does. Its steps are that `DreamEnv`'s exactly with
``draws="per_environment"``, or when the model's step draws nothing (an ensemble with
one elite and no dream noise); by default the model's draw is shared by the batch (see
`worldmodel.dream_functional`). One environment always dreams exactly as a `DreamEnv`.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from worldmodel import dream_functional as functional
from worldmodel.dream_calls import dream_calls, seed_keys
from worldmodel.sharding import BATCH_AXES, data_mesh


class DreamVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` environments dreamed by one fitted world model.

    Args:
        world_model: a run directory written by ``dreamer fit`` or ``dreamer run``.
        num_envs: environments stepped together.
        seed: the seed of the first reset if that reset is given none (environment i
            gets ``seed + i``).
        start: ``initial`` or ``any``, as for `DreamEnv`.
        termination: ``sample`` or ``threshold``, as for `DreamEnv`.
        horizon: steps after which an episode is truncated (default: the task's).
        traces: trace file of the start observations (default: the model's own).
        max_episode_steps: truncate episodes earlier than ``horizon``, as
            ``gym.make(..., max_episode_steps=n)`` does for one `DreamEnv`;
            ``gym.make_vec`` passes it here.
        with_uncertainty: report the model's disagreement in the step infos, as for
            `DreamEnv` (it costs several times the step for the ensemble).
        autoreset_mode: ``next_step`` (gymnasium's default, above) or ``same_step``: an
            ending step already shows the new episode's start observation and puts the
            one the episode ended in under ``infos["final_obs"]`` (masked by
            ``"_final_obs"``), as learners that bootstrap truncated episodes want.
        draws: ``shared`` (the model's draw is one per step for the whole batch, fast) or
            ``per_environment`` (each environment's own, so environment i dreams exactly
            as a `DreamEnv` seeded ``seed + i`` with any model; the ensemble then runs
            every elite for every environment).
        devices: local devices the environments are split over (the model replicated on
            each); default: the most that share ``num_envs`` evenly, so all of them when
            they divide it.

    Raises:
        InputError: the run directory holds no model, or its traces cannot be read.
        ValueError: an argument is not an allowed value.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        world_model: str,
        num_envs: int = 1,
        seed: int | None = None,
        start: str = "initial",
        termination: str = "sample",
        horizon: int | None = None,
        traces: str | None = None,
        max_episode_steps: int | None = None,
        with_uncertainty: bool = True,
        autoreset_mode: str = "next_step",
        draws: str = "shared",
        devices: int | None = None,
    ):
        modes = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}
        mode = autoreset_mode.value if isinstance(autoreset_mode, AutoresetMode) else autoreset_mode
        functional.check_choice("autoreset_mode", mode, tuple(modes))
        functional.check_choice("draws", draws, ("shared", "per_environment"))
        self.metadata = {**self.metadata, "autoreset_mode": modes[mode]}
        if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, numbers.Integral)
            or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
        self.dream = functional.load_dream(
            world_model, start=start, termination=termination, horizon=horizon, traces=traces
        )
        if max_episode_steps is not None and max_episode_steps < int(self.dream.params.horizon):
            params = self.dream.params._replace(horizon=jnp.asarray(max_episode_steps, dtype=jnp.int32))
            self.dream = dataclasses.replace(self.dream, params=params)
        self.task = self.dream.task
        self.horizon = int(self.dream.params.horizon)
        self.num_envs = int(num_envs)
        self.single_observation_space = copy.deepcopy(self.task.observation_space)
        self.single_action_space = copy.deepcopy(self.task.action_space)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        graphdef, model_state = nnx.split(self.dream.world_model)
        self._model_leaves, treedef = jax.tree.flatten(model_state)
        # The environments are split over the devices, the model and the rules replicated:
        # every call then runs on all of them, the compiler keeping each device's share.
        mesh = environment_mesh(devices, self.num_envs)
        self._across, whole = NamedSharding(mesh, PartitionSpec(BATCH_AXES)), NamedSharding(mesh, PartitionSpec())
        self._model_leaves = jax.device_put(self._model_leaves, whole)
        self.dream = dataclasses.replace(self.dream, params=jax.device_put(self.dream.params, whole))
        self._with_uncertainty = bool(with_uncertainty)
        self._calls = dream_calls(graphdef, treedef, self._with_uncertainty, draws == "per_environment")
        self._first_seed = seed
        self._keys: jax.Array | None = None
        self._state: functional.DreamState | None = None
        self._last_observation: jax.Array | None = None

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset every environment, or those in ``options["reset_mask"]`` (a bool array)."""
        mask = self._reset_mask((options or {}).get("reset_mask"))
        if seed is None and self._keys is None:
            seed = self._first_seed
        if isinstance(seed, numbers.Integral):
            super().reset(seed=int(seed))
            seeds = [int(seed) + i for i in range(self.num_envs)]
        elif seed is None:
            seeds = [None] * self.num_envs
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"a list of seeds needs one per environment ({self.num_envs}), got {len(seeds)}")
        if self._keys is None:
            seeds = [int(self.np_random.integers(2**32)) if s is None else s for s in seeds]
        reseed = np.array([s is not None for s in seeds])
        if mask is not None and self._state is not None:
            reseed &= mask
        if reseed.any():
            fresh = seed_keys([0 if s is None else s for s in seeds])
            self._keys = jax.device_put(fresh if reseed.all() else jnp.where(reseed, fresh, self._keys), self._across)

        params = self.dream.params
        if mask is None or self._state is None:
            self._state, self._keys, observation = self._calls.reset(self._model_leaves, params, self._keys)
        else:
            self._state, self._keys, observation = self._calls.reset_some(
                self._model_leaves, params, self._keys, self._state, self._last_observation,
                jax.device_put(mask, self._across)
            )
        self._last_observation = observation
        return np.array(observation, dtype=self.single_observation_space.dtype), {}

    def step(self, actions):
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = jax.device_put(np.asarray(actions).reshape(self.action_space.shape), self._across)
        same_step = self.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
        call = self._calls.same_step if same_step else self._calls.next_step
        self._state, self._keys, observation, scalars, final_observation = call(
            self._model_leaves, self.dream.params, self._state, self._keys, actions
        )
        self._last_observation = observation
        observation, (reward, terminated, truncated, continue_prob, uncertainty, restarted), final_observation = (
            jax.device_get((observation, scalars, final_observation))
        )
        # What comes back from the device is read-only; users get arrays of their own.
        stepped = restarted == 0
        infos = {"continue_prob": continue_prob.copy(), "_continue_prob": stepped}
        if self._with_uncertainty:
            infos.update(uncertainty=uncertainty.copy(), _uncertainty=stepped.copy())
        if same_step:
            ended = (terminated == 1) | (truncated == 1)
            infos.update(final_obs=np.array(final_observation, dtype=self.single_observation_space.dtype),
                         _final_obs=ended)
        return (
            np.array(observation, dtype=self.single_observation_space.dtype),
            reward.astype(np.float64),
            terminated == 1,
            truncated == 1,
            infos,
        )

    def _reset_mask(self, mask) -> np.ndarray | None:
        if mask is None:
            return None
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a bool numpy array of shape ({self.num_envs},)")
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one environment")
        return mask


def environment_mesh(devices: int | None, num_envs: int) -> Mesh:
    """The devices ``num_envs`` environments are split over: ``devices`` of them, or by
    default the most local devices that share the environments evenly.

    Raises:
        ValueError: ``devices`` cannot share ``num_envs`` evenly.
        InputError: more devices are asked for than this machine has.
    """
    if devices is None:
        devices = max(count for count in range(1, len(jax.local_devices()) + 1) if num_envs % count == 0)
    elif isinstance(devices, bool) or not isinstance(devices, numbers.Integral) or devices < 1 or num_envs % devices:
        raise ValueError(f"{num_envs} environments cannot be split evenly over {devices!r} devices")
    return data_mesh(int(devices))
