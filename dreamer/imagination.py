"""Imagined rollouts: a policy acting inside a world model.

`imagine` is one `lax.scan` over the horizon, batched over all start states, built only
on the world-model interface, so it runs with any model and is differentiable end to end
(gradients flow through the model's dynamics into the policy for continuous actions).
Call it inside `jax.jit`, with modules merged from their split state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Policy = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


class Imagined(NamedTuple):
    """A batch of imagined trajectories, time-major.

    Attributes:
        features: ``[H + 1, B, F]``, what the policy saw at each step and after the last.
        actions: ``[H, B, ...]``.
        log_probs: ``[H, B]``, the policy's log-probability of each action.
        rewards: ``[H, B]``, predicted reward of each step.
        continues: ``[H, B]``, predicted probability the episode goes on after each step.
        uncertainties: ``[H, B]``, the model's disagreement about each step (zeros when
            not asked for).
    """

    features: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    rewards: jax.Array
    continues: jax.Array
    uncertainties: jax.Array


def imagine(world_model, policy: Policy, start_states, horizon: int, key: jax.Array,
            with_uncertainty: bool = False) -> Imagined:
    """Roll ``policy`` forward ``horizon`` steps in ``world_model`` from ``start_states``.

    Args:
        world_model: any model of the world-model interface.
        policy: ``(features, key) -> (action, log_prob)``.
        start_states: a batch of model states (from `initial_state` or `observe`).
        horizon: imagined steps.
        key: randomness for the policy and the model.
        with_uncertainty: also compute the model's disagreement at every step (costs
            a forward pass of every elite, so it is off unless a penalty needs it). A
            model with ``step_with_uncertainty`` computes both from one pass.
    """
    fused = with_uncertainty and hasattr(world_model, "step_with_uncertainty")

    def step(state, step_key):
        policy_key, model_key = jax.random.split(step_key)
        features = world_model.features(state)
        action, log_prob = policy(features, policy_key)
        if fused:
            next_state, reward, continue_prob, uncertainty = world_model.step_with_uncertainty(state, action, model_key)
            return next_state, (features, action, log_prob, reward, continue_prob, uncertainty)
        if with_uncertainty:
            uncertainty = world_model.uncertainty(state, action)
        else:
            uncertainty = jnp.zeros(features.shape[0])
        next_state, reward, continue_prob = world_model.step(state, action, model_key)
        return next_state, (features, action, log_prob, reward, continue_prob, uncertainty)

    last_state, (features, actions, log_probs, rewards, continues, uncertainties) = jax.lax.scan(
        step, start_states, jax.random.split(key, horizon)
    )
    all_features = jnp.concatenate([features, world_model.features(last_state)[None]], axis=0)
    return Imagined(all_features, actions, log_probs, rewards, continues, uncertainties)
