"""Symlog squashing and two-hot categorical regression (DreamerV3), as pure functions.

A scalar of unknown scale (a reward, a return) is predicted as a categorical over fixed
bins laid out in symlog space: the target is "two-hot", its weight split between the two
bins around it, so the cross-entropy is a regression loss whose gradients do not grow
with the target's size, and the prediction is the distribution's mean taken back
through `symexp`. The world model's reward head uses it, and so can a critic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def symlog(x: jax.Array) -> jax.Array:
    """``sign(x) * log(1 + |x|)``: the identity near zero, logarithmic for large magnitudes."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    """``sign(x) * (exp(|x|) - 1)``, the inverse of `symlog`."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def symlog_bins(count: int = 255, low: float = -20.0, high: float = 20.0) -> jax.Array:
    """``count`` bin centres evenly spaced in symlog space from ``low`` to ``high`` (the DreamerV3 default)."""
    if count < 2:
        raise ValueError(f"two-hot needs at least 2 bins, got {count}")
    return jnp.linspace(low, high, count, dtype=jnp.float32)


def twohot_encode(values: jax.Array, bins: jax.Array) -> jax.Array:
    """``values [...]`` spread over their two nearest of the sorted ``bins [K]``: ``[..., K]``, rows summing to 1.

    The weights interpolate linearly, so ``weights @ bins`` gives the value back; values
    beyond the outer bins are clipped to them. ``values`` are in the bins' own space
    (symlog space for `symlog_bins`).
    """
    values = jnp.clip(values, bins[0], bins[-1])
    count = bins.shape[0]
    # The bin at or below each value; at the top edge, the last pair of bins.
    below = jnp.clip(jnp.searchsorted(bins, values, side="right") - 1, 0, count - 2)
    lower, upper = bins[below], bins[below + 1]
    upper_weight = (values - lower) / (upper - lower)
    return (jax.nn.one_hot(below, count) * (1.0 - upper_weight)[..., None]
            + jax.nn.one_hot(below + 1, count) * upper_weight[..., None])


def twohot_decode(logits: jax.Array, bins: jax.Array) -> jax.Array:
    """The expected value ``[...]`` of the categorical ``logits [..., K]`` over ``bins``, through `symexp`.

    Log-probabilities are logits too, so ``twohot_decode(jnp.log(probs), bins)`` decodes
    probabilities.
    """
    return symexp(jnp.sum(jax.nn.softmax(logits, axis=-1) * bins, axis=-1))


def twohot_loss(logits: jax.Array, targets: jax.Array, bins: jax.Array) -> jax.Array:
    """Cross-entropy ``[...]`` of ``logits [..., K]`` against the two-hot of ``symlog(targets [...])``.

    Unreduced, so the caller can mask and average as its batch needs.
    """
    target_probs = jax.lax.stop_gradient(twohot_encode(symlog(targets), bins))
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)
