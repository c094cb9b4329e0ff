"""The two-hot critic: it starts at zero, learns returns in the thousands as it learns
returns near one, and trains inside the dream trainer."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dreamer.actor_critic import DreamConfig, make_dream_trainer, make_networks
from dreamer.dream_losses import critic_loss
from dreamer.start_states import start_states
from dreamer.twohot_critic import TwohotCritic
from policies.networks import Critic, NetworkConfig
from tasks.registry import get_task
from worldmodel.ensemble import EnsembleConfig
from worldmodel.saving import build_model

NETWORK = NetworkConfig(hidden_size=32, hidden_layers=2)


def _fitted_error(critic, loss, scale: float, steps: int = 1000) -> float:
    """Relative error of ``critic`` on targets ``scale * sin(x)`` after ``steps`` Adam steps at 1e-3."""
    features = jax.random.uniform(jax.random.key(0), (1, 256, 2), minval=-2, maxval=2)
    targets = scale * jnp.sin(features[..., 0]) * jnp.cos(features[..., 1])
    weights = jnp.ones_like(targets)
    graphdef, params, rest = nnx.split(critic, nnx.Param, ...)
    optimizer = optax.adam(1e-3)

    @jax.jit
    def step(params, opt_state):
        objective = lambda p: loss(nnx.merge(graphdef, p, rest), features, targets, weights)  # noqa: E731
        grads = jax.grad(objective)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    for _ in range(steps):
        params, opt_state = step(params, opt_state)
    predictions = nnx.merge(graphdef, params, rest)(features)
    return float(jnp.sqrt(jnp.mean((predictions - targets) ** 2)) / jnp.std(targets))


def test_a_twohot_critic_starts_at_zero():
    critic = TwohotCritic(3, NETWORK, nnx.Rngs(0))
    values = critic(jax.random.normal(jax.random.key(1), (5, 3)))
    np.testing.assert_allclose(values, 0.0, atol=1e-6)


def test_a_twohot_critic_learns_returns_in_the_thousands_as_it_learns_small_ones():
    twohot = lambda critic, f, t, w: critic.loss(f, t, w)  # noqa: E731
    squared = lambda critic, f, t, w: critic_loss(critic(f), t, w)  # noqa: E731
    small = _fitted_error(TwohotCritic(2, NETWORK, nnx.Rngs(0)), twohot, 1.0)
    large = _fitted_error(TwohotCritic(2, NETWORK, nnx.Rngs(0)), twohot, 3000.0)
    regressed = _fitted_error(Critic(2, NETWORK, nnx.Rngs(0)), squared, 3000.0)
    # Measured: 0.18 at scale 1 and 0.15 at 3,000 for the two-hot critic; the squared
    # error's 0.02 at scale 1 becomes 0.60 at 3,000.
    assert large < 0.25 and large < 2 * small
    assert regressed > 2 * large


def test_the_dream_trainer_trains_a_twohot_critic_with_a_debiased_return_scale(pendulum_episodes):
    task = get_task("pendulum")
    config = DreamConfig(horizon=3, batch_size=8, updates_per_call=5, value_head="twohot",
                         return_scale_start="debiased", network=NETWORK)
    model = build_model("ensemble", task.observation_space.shape, 1, False,
                        EnsembleConfig(members=2, elites=1, hidden_size=8, hidden_layers=1, termination_hidden=4))
    model.fit_statistics(pendulum_episodes)
    actor, critic = make_networks(3, task.action_space, config, seed=0)
    assert isinstance(critic, TwohotCritic)
    init, train = make_dream_trainer(nnx.graphdef(model), actor, critic, config)
    state = init()
    after, metrics = train(state, nnx.state(model), start_states(pendulum_episodes), jax.random.key(0))
    assert np.isfinite(float(metrics["critic_loss"])) and float(metrics["critic_loss"]) > 0
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(after.critic), jax.tree.leaves(state.critic))]
    assert max(moved) > 0
    # The actor's returns were divided by the debiased range: from the same start and
    # draws, the raw (zero-started) range moves the actor differently.
    zero_start = dataclasses.replace(config, return_scale_start="zero")
    actor, critic = make_networks(3, task.action_space, zero_start, seed=0)
    init, train = make_dream_trainer(nnx.graphdef(model), actor, critic, zero_start)
    other, _ = train(init(), nnx.state(model), start_states(pendulum_episodes), jax.random.key(0))
    # Both store the raw running range (a debiased one would be 20x larger after 5 updates).
    assert float(other.return_scale) == pytest.approx(float(after.return_scale), rel=0.05)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(other.actor), jax.tree.leaves(after.actor)))
