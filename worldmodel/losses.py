"""Pure loss functions of arrays, shared by the world models."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian_nll(mean: jax.Array, logvar: jax.Array, target: jax.Array) -> jax.Array:
    """Negative log-likelihood of ``target`` under a diagonal Gaussian, summed over the last axis.

    The constant ``0.5 * log(2 pi)`` per dimension is left out.
    """
    return 0.5 * jnp.sum((target - mean) ** 2 * jnp.exp(-logvar) + logvar, axis=-1)


def soft_bound(raw: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    """Squash ``raw`` smoothly towards ``(lower, upper)`` with softplus, keeping gradients alive.

    The PETS bounds on predicted log-variance: a hard clip would stop learning wherever
    the prediction sits outside the range. The result is always above ``lower``; far
    above the range it tends to ``upper + log(1 + exp(lower - upper))``, a hair above
    ``upper`` for bounds far apart (by 2.8e-5 for the default -10 and 0.5).
    """
    bounded = upper - jax.nn.softplus(upper - raw)
    return lower + jax.nn.softplus(bounded - lower)


def weighted_binary_cross_entropy(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, positive_weight: jax.Array | float
) -> jax.Array:
    """Mean binary cross-entropy over unmasked entries, positives weighted by ``positive_weight``.

    Normalised by the total weight, so a weight equal to the negative/positive ratio
    gives each class the same say (balanced accuracy's objective).
    """
    labels = labels.astype(jnp.float32)
    weights = mask.astype(jnp.float32) * (1.0 + (positive_weight - 1.0) * labels)
    losses = jnp.logaddexp(0.0, logits) - labels * logits
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
