"""Per-dimension standardisation with statistics taken once from training data.

Shared by world models and policies: both see trace data and both must keep the
statistics they were trained with as part of their saved state.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx


class Statistic(nnx.Variable):
    """Data statistics: part of the model's state, saved with it, never trained."""


class Normalizer(nnx.Module):
    """Maps values to zero mean and unit variance per dimension, and back.

    Dimensions that never vary keep a scale of one, so they pass through unchanged
    instead of being divided by zero.
    """

    def __init__(self, size: int):
        self.mean = Statistic(jnp.zeros(size))
        self.std = Statistic(jnp.ones(size))

    def fit(self, values: np.ndarray) -> None:
        """Set the statistics from ``values [N, size]``."""
        values = np.asarray(values, dtype=np.float64)
        std = values.std(axis=0)
        self.mean.set_value(jnp.asarray(values.mean(axis=0), dtype=jnp.float32))
        self.std.set_value(jnp.asarray(np.where(std < 1e-6, 1.0, std), dtype=jnp.float32))

    def normalize(self, values: jnp.ndarray) -> jnp.ndarray:
        return (values - self.mean[...]) / self.std[...]

    def denormalize(self, values: jnp.ndarray) -> jnp.ndarray:
        return values * self.std[...] + self.mean[...]
