"""Layers whose parameters carry an explicit ensemble axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class EnsembleLinear(nnx.Module):
    """``members`` independent dense layers applied as one batched matmul.

    Kernel ``[members, in, out]``, bias ``[members, out]``; inputs and outputs carry the
    member axis first: ``[members, batch, in] -> [members, batch, out]``.
    """

    def __init__(self, members: int, in_features: int, out_features: int, rngs: nnx.Rngs):
        init = nnx.initializers.truncated_normal(stddev=1.0 / (2.0 * jnp.sqrt(in_features)))
        self.kernel = nnx.Param(init(rngs.params(), (members, in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((members, out_features)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return apply_ensemble_linear(self.kernel[...], self.bias[...], x)


def apply_ensemble_linear(kernel: jax.Array, bias: jax.Array, x: jax.Array) -> jax.Array:
    """``x [E, B, in] @ kernel [E, in, out] + bias [E, out]`` for any chosen members."""
    return jnp.einsum("ebi,eio->ebo", x, kernel) + bias[:, None, :]
