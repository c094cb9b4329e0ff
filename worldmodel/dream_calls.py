"""The jitted calls behind `DreamEnv` and `DreamVectorEnv`, compiled once per model structure.

The model goes in as its flat list of arrays (put back together inside), and a step's
per-environment scalars come out stacked in one ``[K, N]`` array: every argument and
result costs time on each call, and for a few environments that overhead is most of a
step. The calls are cached by the model's structure, so every environment of a model
of that shape shares their compiled programs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from worldmodel import dream_functional as functional


class DreamCalls(NamedTuple):
    """``reset(leaves, params, keys)``; ``reset_some(..., state, observation, mask)``;
    ``step``, ``next_step`` and ``same_step(leaves, params, state, keys, actions)``: no
    autoreset, gymnasium's next-step and same-step autoreset."""

    reset: Callable
    reset_some: Callable
    step: Callable
    next_step: Callable
    same_step: Callable


def seed_keys(seeds) -> jax.Array:
    """``[N]`` keys, ``jax.random.key(seed % 2**32)`` for each seed (ints or numpy ints)."""
    return _seed_keys(np.asarray([int(seed) % 2**32 for seed in seeds], dtype=np.uint32))


_seed_keys = jax.jit(functional.seed_keys)


def _stacked(shown: functional.DreamStep, restarted: jax.Array) -> jax.Array:
    scalars = (shown.reward, shown.terminated, shown.truncated, shown.continue_prob, shown.uncertainty, restarted)
    return jnp.stack([x.astype(jnp.float32) for x in scalars])


@functools.lru_cache(maxsize=None)
def dream_calls(graphdef, treedef, with_uncertainty: bool, per_environment_draws: bool = False) -> DreamCalls:
    """The calls for models of this graph and state structure.

    Step calls return ``(state, keys, observation, scalars, final_observation)`` where
    ``scalars`` stacks reward, terminated, truncated, continue probability, uncertainty
    and whether the environment was reset instead of stepped (next-step autoreset);
    ``final_observation`` is the ending observation for same-step autoreset, else None.
    """

    def merge(leaves):
        return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))

    @jax.jit
    def reset(leaves, params, keys):
        keys, draws = functional.split_keys(keys)
        state, observation = functional.reset(merge(leaves), params, draws)
        return state, keys, observation

    @jax.jit
    def reset_some(leaves, params, keys, state, observation, mask):
        next_keys, draws = functional.split_keys(keys)
        started, start_observation = functional.reset(merge(leaves), params, draws)
        return (
            functional.select(mask, started, state),
            functional.select(mask, next_keys, keys),
            functional.select(mask, start_observation, observation),
        )

    @jax.jit
    def step(leaves, params, state, keys, actions):
        keys, draws = functional.split_keys(keys)
        state, shown = functional.step(merge(leaves), params, state, actions, draws, with_uncertainty,
                                       per_environment_draws)
        return state, keys, shown.observation, _stacked(shown, jnp.zeros_like(shown.reward)), None

    @jax.jit
    def next_step(leaves, params, state, keys, actions):
        keys, draws = functional.split_keys(keys)
        restarted = state.ended
        state, shown = functional.autoreset_step(merge(leaves), params, state, actions, draws, with_uncertainty,
                                                 per_environment_draws)
        return state, keys, shown.observation, _stacked(shown, restarted), None

    @jax.jit
    def same_step(leaves, params, state, keys, actions):
        keys, draws = functional.split_keys(keys)
        state, shown, final = functional.same_step_autoreset_step(
            merge(leaves), params, state, actions, draws, with_uncertainty, per_environment_draws)
        return state, keys, shown.observation, _stacked(shown, jnp.zeros_like(shown.reward)), final

    return DreamCalls(reset, reset_some, step, next_step, same_step)
