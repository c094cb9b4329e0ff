"""Returns and their normalisation, as pure functions of time-major arrays ``[H, B]``."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lambda_returns(
    rewards: jax.Array, continues: jax.Array, values: jax.Array, gamma: float, lambda_: float
) -> jax.Array:
    """TD(lambda) returns of imagined trajectories, computed backwards with a scan.

    ``R_t = r_t + gamma * c_t * ((1 - lambda) * v_{t+1} + lambda * R_{t+1})`` with
    ``R_H = v_H``: lambda = 1 is the Monte-Carlo return bootstrapped at the horizon,
    lambda = 0 the one-step TD target.

    Args:
        rewards: ``[H, B]`` reward of each step.
        continues: ``[H, B]`` probability the episode goes on after each step.
        values: ``[H + 1, B]`` value of each state, the last one after the final step.
        gamma: discount per step.
        lambda_: mixing between bootstrapping (0) and Monte-Carlo (1).

    Returns:
        ``[H, B]`` the lambda-return from each step.
    """
    discounts = gamma * continues

    def backward(next_return, inputs):
        reward, discount, next_value = inputs
        value = reward + discount * ((1.0 - lambda_) * next_value + lambda_ * next_return)
        return value, value

    _, returns = jax.lax.scan(backward, values[-1], (rewards, discounts, values[1:]), reverse=True)
    return returns


def trajectory_weights(continues: jax.Array, gamma: float) -> jax.Array:
    """``[H, B]`` weight of each step: the discounted probability it is reached at all.

    Step 0 is always reached; step t is reached if the episode went on after steps
    0..t-1. Terminated dreams thereby stop counting without changing shapes.
    """
    reached = jnp.cumprod(gamma * continues, axis=0)
    return jnp.concatenate([jnp.ones_like(reached[:1]), reached[:-1]], axis=0)


def percentile_range(returns: jax.Array, low: float = 5.0, high: float = 95.0) -> jax.Array:
    """The spread of returns between two percentiles, a scale robust to outliers."""
    return jnp.percentile(returns, high) - jnp.percentile(returns, low)


RETURN_SCALE_DECAY = 0.99


def update_return_scale(scale: jax.Array, returns: jax.Array, decay: float = RETURN_SCALE_DECAY) -> jax.Array:
    """Running estimate of the returns' 5-95 percentile range (DreamerV3's return norm)."""
    return decay * scale + (1.0 - decay) * percentile_range(returns)


def debiased_scale(scale: jax.Array, updates: jax.Array, decay: float = RETURN_SCALE_DECAY) -> jax.Array:
    """The running range after ``updates`` updates from zero, divided by ``1 - decay**updates``
    as Adam debiases its moments: the first update already sees the first batch's range,
    instead of a hundredth of it."""
    return scale / (1.0 - decay ** jnp.maximum(updates, 1).astype(jnp.float32))


def normalise_by_scale(values: jax.Array, scale: jax.Array) -> jax.Array:
    """Divide by the return scale, but never scale small returns up (max with 1)."""
    return values / jnp.maximum(1.0, scale)
