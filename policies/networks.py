"""Actor and critic networks shared by every trainer (dreams, PPO, SAC).

The actor sees what the world model's `features` gives (the observation, for models in
observation space), standardised with statistics from training data, and acts in the
task's own action units: bounded Box actions through a tanh-Gaussian, Discrete actions
through a categorical.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies.distributions import categorical_log_prob, categorical_sample, tanh_gaussian_log_prob, tanh_gaussian_sample
from tasks.config import config, option
from tasks.normalizer import Normalizer, Statistic


@config
class NetworkConfig:
    """Attributes:
    hidden_size: units per hidden layer.
    hidden_layers: hidden layers of the actor and of the critic.
    min_std: lower bound of the actor's Gaussian standard deviation (pre-squash).
    max_std: upper bound of it.
    activation: nonlinearity between hidden layers (silu, tanh or relu).
    """

    hidden_size: int = option(64, min=1)
    hidden_layers: int = option(2, min=1)
    min_std: float = option(0.1, min=0)
    max_std: float = option(1.0, min=0)
    activation: Literal["silu", "tanh", "relu"] = "silu"

    def __post_init__(self):
        if self.min_std >= self.max_std:
            raise ValueError(f"min_std ({self.min_std}) must be below max_std ({self.max_std})")


ACTIVATIONS = {"silu": jax.nn.silu, "tanh": jnp.tanh, "relu": jax.nn.relu}


class MLP(nnx.Module):
    """Dense layers with a nonlinearity between them and a linear output."""

    def __init__(self, in_size: int, hidden_size: int, hidden_layers: int, out_size: int, rngs: nnx.Rngs,
                 output_scale: float = 1.0, activation: str = "silu"):
        self.activation = activation
        sizes = [in_size] + [hidden_size] * hidden_layers
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        # A small output layer starts the policy near uniform and the value near zero.
        self.output = nnx.Linear(
            sizes[-1], out_size, rngs=rngs, kernel_init=nnx.initializers.variance_scaling(output_scale, "fan_avg", "uniform")
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        for layer in self.hidden:
            x = activation(layer(x))
        return self.output(x)


class Actor(nnx.Module):
    """A stochastic policy over a Box (bounded) or Discrete action space."""

    def __init__(self, feature_size: int, action_space, config: NetworkConfig, rngs: nnx.Rngs):
        self.discrete = hasattr(action_space, "n")
        self.action_size = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        # Discrete(n, start=s) acts in s..s+n-1; the network's outputs index 0..n-1.
        self.action_start = int(action_space.start) if self.discrete else 0
        self.config = config
        outputs = self.action_size if self.discrete else 2 * self.action_size
        self.input_norm = Normalizer(feature_size)
        self.net = MLP(feature_size, config.hidden_size, config.hidden_layers, outputs, rngs, output_scale=0.01,
                       activation=config.activation)
        if not self.discrete:
            self.action_low = Statistic(jnp.asarray(action_space.low, dtype=jnp.float32).reshape(-1))
            self.action_high = Statistic(jnp.asarray(action_space.high, dtype=jnp.float32).reshape(-1))

    def sample(self, features: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """An action in the task's units and its log-probability (of the squashed action)."""
        outputs = self.net(self.input_norm.normalize(features))
        if self.discrete:
            index, log_prob = categorical_sample(outputs, key)
            return index + self.action_start, log_prob
        mean, std = self._gaussian(outputs)
        unit_action, log_prob = tanh_gaussian_sample(mean, std, key)
        return self._to_task_units(unit_action), log_prob

    def mode(self, features: jax.Array) -> jax.Array:
        """The deterministic action used for evaluation."""
        outputs = self.net(self.input_norm.normalize(features))
        if self.discrete:
            return jnp.argmax(outputs, axis=-1) + self.action_start
        mean, _ = self._gaussian(outputs)
        return self._to_task_units(jnp.tanh(mean))

    def log_prob(self, features: jax.Array, action: jax.Array) -> jax.Array:
        """Log-probability of a given action in the task's units."""
        outputs = self.net(self.input_norm.normalize(features))
        if self.discrete:
            return categorical_log_prob(outputs, action - self.action_start)
        mean, std = self._gaussian(outputs)
        return tanh_gaussian_log_prob(self._to_unit_range(action), mean, std)

    def pre_squash_mean(self, features: jax.Array) -> jax.Array:
        """The Gaussian's mean before tanh (continuous actions only)."""
        return self._gaussian(self.net(self.input_norm.normalize(features)))[0]

    def _gaussian(self, outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, raw_std = jnp.split(outputs, 2, axis=-1)
        low, high = self.config.min_std, self.config.max_std
        return mean, low + (high - low) * jax.nn.sigmoid(raw_std + 2.0)

    def _to_task_units(self, unit_action: jax.Array) -> jax.Array:
        low, high = self.action_low[...], self.action_high[...]
        return low + (unit_action + 1.0) * 0.5 * (high - low)

    def _to_unit_range(self, action: jax.Array) -> jax.Array:
        low, high = self.action_low[...], self.action_high[...]
        return 2.0 * (action - low) / (high - low) - 1.0


class Critic(nnx.Module):
    """A state-value function of the features."""

    def __init__(self, feature_size: int, config: NetworkConfig, rngs: nnx.Rngs):
        self.input_norm = Normalizer(feature_size)
        self.net = MLP(feature_size, config.hidden_size, config.hidden_layers, 1, rngs, output_scale=0.01,
                       activation=config.activation)

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.net(self.input_norm.normalize(features))[..., 0]
