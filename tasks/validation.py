"""Checks that a trace is usable before anything trains on it or writes it.

Each check raises `InputError` with the file and a problem a user can act on:
which episode, which field, what is wrong.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tasks.episodes import Episode
from tasks.errors import InputError

SUPPORTED_SPACES = (gym.spaces.Box, gym.spaces.Discrete)


def check_supported_spaces(observation_space: gym.Space, action_space: gym.Space, path: str) -> None:
    """Only Box and Discrete spaces are modelled; say so for anything else."""
    for what, space in (("observation", observation_space), ("action", action_space)):
        if not isinstance(space, SUPPORTED_SPACES):
            raise InputError(path, f"unsupported {what} space {space} (Box and Discrete only)")


def validate_episodes(episodes, observation_space: gym.Space, action_space: gym.Space, path: str) -> None:
    """Raise InputError naming ``path`` unless every episode is usable in these spaces."""
    check_supported_spaces(observation_space, action_space, path)
    if episodes.num_episodes == 0:
        raise InputError(path, "holds no episodes")
    for index, episode in enumerate(episodes):
        validate_episode(episode, index, observation_space, action_space, path)


def validate_episode(
    episode: Episode,
    index: int,
    observation_space: gym.Space,
    action_space: gym.Space,
    path: str,
) -> None:
    """Raise InputError unless episode ``index`` is complete, finite and inside its spaces."""
    where = f"episode {index}"
    steps = len(episode.rewards)
    if steps == 0:
        raise InputError(path, f"{where} has length 0")
    expected = {
        "observations": steps + 1,
        "actions": steps,
        "terminations": steps,
        "truncations": steps,
    }
    for field, length in expected.items():
        actual = len(getattr(episode, field))
        if actual != length:
            raise InputError(
                path,
                f"{where}: {field} has {actual} entries for {steps} rewards (expected {length})",
            )
    _check_shape(episode.observations, observation_space, f"{where}: observations", path)
    _check_shape(episode.actions, action_space, f"{where}: actions", path)
    for field in ("observations", "rewards"):
        values = getattr(episode, field)
        if np.issubdtype(values.dtype, np.floating):
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            if bad:
                raise InputError(path, f"{where}: {bad} NaN or Inf values in {field}")
    if np.any(np.asarray(episode.terminations)[:-1]):
        step = int(np.flatnonzero(episode.terminations)[0])
        raise InputError(path, f"{where}: terminated at step {step} of {steps}, before its end")
    _check_in_space(episode.observations, observation_space, where, "observation", path)
    _check_in_space(episode.actions, action_space, where, "action", path)


def _check_shape(values: np.ndarray, space: gym.Space, what: str, path: str) -> None:
    if tuple(values.shape[1:]) != tuple(space.shape):
        raise InputError(
            path, f"{what} have shape {tuple(values.shape[1:])} per step, the space says {space.shape}"
        )


def _check_in_space(values: np.ndarray, space: gym.Space, where: str, field: str, path: str) -> None:
    """Every step's value lies in ``space``: the same rule for observations and actions."""
    if values.dtype.kind not in "biuf":
        raise InputError(path, f"{where}: {field}s have dtype {values.dtype}; the space holds {space.dtype}")
    if isinstance(space, gym.spaces.Discrete):
        valid = (values >= space.start) & (values < space.start + space.n)
        if np.issubdtype(values.dtype, np.floating):
            valid &= values == np.round(values)
    else:
        if np.issubdtype(space.dtype, np.integer) and np.issubdtype(values.dtype, np.floating):
            integral = np.isfinite(values) & (values == np.round(values))
            _refuse_step(values, integral, space, where, f"{field} is not integral, as the space's dtype needs", path)
        # A little slack: values written as float64 and read back as float32 may round
        # just past a bound.
        high, low = np.asarray(space.high, np.float64), np.asarray(space.low, np.float64)
        magnitude = np.maximum(np.abs(np.where(np.isfinite(high), high, 0.0)), np.abs(np.where(np.isfinite(low), low, 0.0)))
        tolerance = 1e-6 * np.maximum(1.0, magnitude)
        finite = np.isfinite(values) if field == "action" else ~np.isnan(values)
        valid = finite & (values >= low - tolerance) & (values <= high + tolerance)
    _refuse_step(values, valid, space, where, f"{field} is outside the {field} space {space}", path)


def _refuse_step(values: np.ndarray, valid: np.ndarray, space: gym.Space, where: str, problem: str, path: str) -> None:
    if np.all(valid):
        return
    step = int(np.flatnonzero(~np.all(np.reshape(valid, (len(values), -1)), axis=1))[0])
    problem = problem.replace(" is ", f" at step {step} is ", 1)
    raise InputError(path, f"{where}: {problem}: {np.asarray(values[step]).tolist()}")
