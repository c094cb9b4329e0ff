"""A critic for returns of any scale: a categorical over symlog bins, regressed two-hot.

The squared-error critic (`policies.networks.Critic`) regresses raw returns; where they
run to thousands (MuJoCo locomotion) its gradients grow with them, and its early errors
with them. DreamerV3's critic predicts a categorical over bins evenly spaced in symlog
space instead, trained by cross-entropy against the two-hot encoding of the target
(`worldmodel.twohot`): the loss's gradient is bounded whatever the return, and the value
is the distribution's mean taken back through symexp. The same pure functions serve the
RSSM's reward head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from policies.networks import MLP, NetworkConfig
from tasks.normalizer import Normalizer
from worldmodel.twohot import symlog_bins, twohot_decode, twohot_loss

VALUE_BINS = 255  # DreamerV3's: symlog -20..20, so returns up to about 5e8 in magnitude


class TwohotCritic(nnx.Module):
    """A state-value function of the features, as a categorical over `VALUE_BINS` symlog bins."""

    def __init__(self, feature_size: int, config: NetworkConfig, rngs: nnx.Rngs):
        self.input_norm = Normalizer(feature_size)
        # A zero output layer starts every value at exactly 0 (uniform over symmetric bins).
        self.net = MLP(feature_size, config.hidden_size, config.hidden_layers, VALUE_BINS, rngs, output_scale=0.01,
                       activation=config.activation)
        self.net.output.kernel.set_value(jnp.zeros_like(self.net.output.kernel[...]))

    def logits(self, features: jax.Array) -> jax.Array:
        """``[..., VALUE_BINS]`` log-odds of the value's bins."""
        return self.net(self.input_norm.normalize(features))

    def __call__(self, features: jax.Array) -> jax.Array:
        return twohot_decode(self.logits(features), symlog_bins(VALUE_BINS))

    def loss(self, features: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
        """Weighted two-hot cross-entropy of the values of ``features [H, B, F]`` against fixed ``targets [H, B]``."""
        return jnp.mean(weights * twohot_loss(self.logits(features), jax.lax.stop_gradient(targets),
                                              symlog_bins(VALUE_BINS)))
