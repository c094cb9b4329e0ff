"""Action distributions as pure functions of network outputs.

Continuous actions use a tanh-squashed Gaussian (SAC, Dreamer): ``u ~ N(mean, std)``,
``a = tanh(u)`` in ``[-1, 1]``, rescaled to the action space's bounds by the actor.
Discrete actions use a categorical over logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Keeps log(1 - tanh(u)^2) finite where tanh saturates.
_SQUASH_EPSILON = 1e-6


def tanh_gaussian_sample(mean: jax.Array, std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterised sample in ``[-1, 1]^A`` and its log-density, ``([..., A], [...])``."""
    noise = jax.random.normal(key, mean.shape)
    pre_squash = mean + std * noise
    action = jnp.tanh(pre_squash)
    log_prob = gaussian_log_prob(pre_squash, mean, std) - jnp.sum(
        jnp.log(1.0 - action**2 + _SQUASH_EPSILON), axis=-1
    )
    return action, log_prob


def tanh_gaussian_log_prob(action: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Log-density of a squashed action in ``(-1, 1)^A`` (for REINFORCE on given actions)."""
    clipped = jnp.clip(action, -1.0 + _SQUASH_EPSILON, 1.0 - _SQUASH_EPSILON)
    pre_squash = jnp.arctanh(clipped)
    return gaussian_log_prob(pre_squash, mean, std) - jnp.sum(jnp.log(1.0 - clipped**2 + _SQUASH_EPSILON), axis=-1)


def gaussian_log_prob(value: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Diagonal Gaussian log-density, summed over the last axis."""
    z = (value - mean) / std
    return jnp.sum(-0.5 * z**2 - jnp.log(std) - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def categorical_sample(logits: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """An action index ``[...]`` and its log-probability ``[...]``."""
    action = jax.random.categorical(key, logits)
    return action, categorical_log_prob(logits, action)


def categorical_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_probs, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
