"""Named tasks: the real environments that traces come from and policies are judged in.

A task is a gymnasium environment id plus what the rest of the framework needs to know
about it: the episode horizon, the return that counts as solved, and whether it is
observed through vectors or camera frames. Any gymnasium id works as ``gym:ENV_ID``, and
a user's own environment as ``gym:MODULE:ENV_ID`` (gymnasium's convention: MODULE is
imported first, and registers ENV_ID). Keyword arguments for ``gym.make`` (``--env-kwargs``)
belong to the task: every environment made for it gets them, and every file that records
the task (trace files, saved models and policies) records them with it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import warnings
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from tasks.errors import InputError
from tasks.pixels import register_pixel_environments

register_pixel_environments()  # the camera-frame tasks below name environments of ours

ObservationKind = Literal["vector", "image"]


@dataclasses.dataclass(frozen=True)
class Task:
    """A real environment and the facts about it that training and evaluation use.

    Attributes:
        name: the registry name (``pendulum``) or ``gym:ENV_ID`` for any gymnasium id.
        env_id: the gymnasium id passed to ``gym.make``.
        horizon: steps after which an episode is truncated.
        reward_threshold: the mean return that counts as solving the task, if any.
        observation_kind: ``vector`` for flat observations, ``image`` for camera frames.
        env_kwargs_json: keyword arguments for ``gym.make``, as canonical JSON (so a task
            stays hashable and two tasks with the same arguments are equal).
    """

    name: str
    env_id: str
    horizon: int
    reward_threshold: float | None
    observation_kind: ObservationKind = "vector"
    env_kwargs_json: str = "{}"

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return json.loads(self.env_kwargs_json)

    def make_env(self, **kwargs: Any) -> gym.Env:
        """A fresh real environment, truncated at the task's horizon."""
        _route_mujoco_warnings(self.env_id)
        return gym.make(self.env_id, max_episode_steps=self.horizon, **self.env_kwargs, **kwargs)

    @property
    def observation_space(self) -> gym.Space:
        return _spaces(self.env_id, self.env_kwargs_json)[0]

    @property
    def action_space(self) -> gym.Space:
        return _spaces(self.env_id, self.env_kwargs_json)[1]

    def record(self) -> dict[str, Any]:
        """What a saved file keeps of the task, for `task_from_record`."""
        return {"task": self.name, **({"env_kwargs": self.env_kwargs} if self.env_kwargs else {})}

    @property
    def discrete_actions(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("cartpole", "CartPole-v1", horizon=500, reward_threshold=475.0),
        Task("pendulum", "Pendulum-v1", horizon=200, reward_threshold=-200.0),
        Task("halfcheetah", "HalfCheetah-v5", horizon=1000, reward_threshold=4800.0),
        Task("hopper", "Hopper-v5", horizon=1000, reward_threshold=3800.0),
        Task("pendulum-pixels", "dreamer/PendulumPixels-v0", horizon=200, reward_threshold=-200.0,
             observation_kind="image"),
        Task("cartpole-pixels", "dreamer/CartPolePixels-v0", horizon=500, reward_threshold=475.0,
             observation_kind="image"),
    )
}

GYM_PREFIX = "gym:"
TASK_HELP = "task name, gym:ENV_ID for any gymnasium id, or gym:MODULE:ENV_ID for one that MODULE registers"
ENV_KWARGS_HELP = "keyword arguments for gym.make, a JSON object such as '{\"g\": 5.0}'"


def get_task(name: str, env_kwargs: dict[str, Any] | None = None) -> Task:
    """The task called ``name``: a registry name, ``gym:ENV_ID`` or ``gym:MODULE:ENV_ID``,
    its environments made with ``env_kwargs``.

    Raises:
        InputError: the name is neither registered nor a gymnasium id, MODULE cannot be
            imported, or the environment refuses ``env_kwargs``.
    """
    if name in TASKS:
        task = TASKS[name]
    elif name.startswith(GYM_PREFIX):
        task = _task_from_gym_id(name[len(GYM_PREFIX) :], name)
    else:
        known = ", ".join(sorted(TASKS))
        raise InputError(name, f"unknown task (known: {known}, gym:ENV_ID for any gymnasium id, "
                               "or gym:MODULE:ENV_ID for one that MODULE registers)")
    return _with_kwargs(task, env_kwargs) if env_kwargs else task


def task_from_record(record: dict[str, Any]) -> Task:
    """The task a saved file recorded with `Task.record`."""
    return get_task(record["task"], record.get("env_kwargs"))


def _with_kwargs(task: Task, env_kwargs: dict[str, Any]) -> Task:
    if not isinstance(env_kwargs, dict):
        raise InputError("--env-kwargs", f"must be a JSON object of keyword arguments, got {env_kwargs!r}")
    try:
        canonical = json.dumps(env_kwargs, sort_keys=True)
    except TypeError as error:
        raise InputError("--env-kwargs", f"must be JSON values ({error})") from None
    task = dataclasses.replace(task, env_kwargs_json=canonical)
    try:
        task.observation_space  # noqa: B018 - makes one environment with the arguments
    except (TypeError, ValueError) as error:
        raise InputError("--env-kwargs", f"{task.env_id} does not take them: {error}") from None
    return task


def task_for_env_id(env_id: str) -> Task:
    """The registered task whose environment is ``env_id``, else a ``gym:`` task for it."""
    for task in TASKS.values():
        if task.env_id == env_id:
            return task
    return _task_from_gym_id(env_id, GYM_PREFIX + env_id)


def check_spaces_match(
    task: Task, observation_space: gym.Space, action_space: gym.Space, path: str
) -> None:
    """Raise InputError naming ``path`` unless both spaces are the task's own."""
    for what, theirs, ours in (
        ("observation", observation_space, task.observation_space),
        ("action", action_space, task.action_space),
    ):
        if not spaces_equal(theirs, ours):
            raise InputError(
                path, f"{what} space {theirs} does not match task {task.name}'s {ours}"
            )


def spaces_equal(a: gym.Space, b: gym.Space) -> bool:
    """Equal type, shape, dtype and bounds; tolerant of float32 rounding of bounds."""
    if type(a) is not type(b):
        return False
    if isinstance(a, gym.spaces.Box):
        return (
            a.shape == b.shape
            and a.dtype == b.dtype
            and np.allclose(a.low, b.low, equal_nan=True)
            and np.allclose(a.high, b.high, equal_nan=True)
        )
    return a == b


def _task_from_gym_id(env_id: str, name: str) -> Task:
    if ":" in env_id:  # MODULE:ENV_ID: the module registers the environment when imported
        module, env_id = env_id.rsplit(":", 1)
        try:
            importlib.import_module(module)
        except Exception as error:
            raise InputError(name, f"cannot import {module} ({type(error).__name__}: {error})") from None
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        raise InputError(name, f"not a registered gymnasium environment ({error})") from None
    observation_space, _ = _spaces(env_id)
    return Task(
        name=name,
        env_id=env_id,
        horizon=spec.max_episode_steps or 1000,
        reward_threshold=spec.reward_threshold,
        observation_kind=observation_kind(observation_space),
    )


def observation_kind(space: gym.Space) -> ObservationKind:
    """``image`` for uint8 frames of height and width, ``vector`` otherwise."""
    is_frame = (
        isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)
    )
    return "image" if is_frame else "vector"


def _route_mujoco_warnings(env_id: str) -> None:
    """Send MuJoCo's C-level warnings through Python instead of raw stderr and a log file.

    MuJoCo prints its warnings straight to stderr and appends them to MUJOCO_LOG.TXT in
    the working directory; gymnasium's v5 models trigger deprecation notices there that
    a user cannot act on. Those go to the debug log; any other warning stays a warning.
    """
    entry_point = str(gym.spec(env_id).entry_point)
    if "mujoco" not in entry_point:
        return
    import mujoco

    def on_warning(message: str) -> None:
        if "deprecated" in message:
            logging.getLogger("mujoco").debug(message)
        else:
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(on_warning)


@functools.cache
def _spaces(env_id: str, env_kwargs_json: str = "{}") -> tuple[gym.Space, gym.Space]:
    # Making an environment can take a while (MuJoCo compiles its model), so the spaces
    # are read once per id and arguments and kept.
    _route_mujoco_warnings(env_id)
    env = gym.make(env_id, **json.loads(env_kwargs_json))
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
