"""The losses of training in dreams, checked by hand and against a known gradient.

- halting sends a dream to MOReL's absorbing HALT state: a halted return never exceeds
  the return of the same dream had it gone on, with negative and with positive rewards;
- the score-function estimator, averaged over many samples, equals the pathwise gradient
  of the same objective on a one-dimensional bandit (within 4 standard errors);
- the critic's loss and the target critic's update are the formulas they claim to be.
"""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dreamer.actor_critic import DreamConfig, make_dream_trainer, make_networks
from dreamer.start_states import start_states
from dreamer.commands.dream import DreamCommandConfig
from dreamer.dream_losses import critic_loss, halt, lowest_halt_reward, policy_log_probs, score_function_objective
from dreamer.returns import lambda_returns
from policies.networks import Actor, NetworkConfig
from tasks.registry import get_task
from worldmodel.ensemble import EnsembleConfig
from worldmodel.saving import build_model

GAMMA, LAMBDA = 0.9, 0.95


def first_return(rewards, continues, values) -> float:
    return float(lambda_returns(rewards, continues, values, GAMMA, LAMBDA)[0, 0])


# --------------------------------------------------------------------------- halting


def test_halting_is_hand_checked_on_a_three_step_dream():
    rewards = jnp.array([[1.0], [1.0], [1.0]])
    continues = jnp.array([[0.9], [0.8], [0.7]])
    values = jnp.array([[5.0], [6.0], [7.0], [8.0]])
    uncertainties = jnp.array([[0.1], [2.0], [0.1]])  # step 1 is unknown; step 2 is in HALT
    out = halt(rewards, continues, values, uncertainties, threshold=1.0, halt_reward=-3.0, gamma=0.5)
    np.testing.assert_allclose(out.rewards[:, 0], [1.0, -3.0, -3.0])
    np.testing.assert_allclose(out.continues[:, 0], [0.9, 1.0, 1.0])
    np.testing.assert_allclose(out.values[:, 0], [5.0, 6.0, -6.0, -6.0])  # HALT is worth -3 / (1 - 0.5)
    np.testing.assert_allclose(out.active[:, 0], [1.0, 1.0, 0.0])
    returns = lambda_returns(out.rewards, out.continues, out.values, 0.5, 0.95)
    np.testing.assert_allclose(returns[1:, 0], [-6.0, -6.0], rtol=1e-6)  # absorbing: r / (1 - gamma)


def test_no_threshold_leaves_the_dream_as_it_is():
    rewards, continues = jnp.ones((4, 2)), jnp.full((4, 2), 0.9)
    values, uncertainties = jnp.zeros((5, 2)), jnp.full((4, 2), 100.0)
    out = halt(rewards, continues, values, uncertainties, threshold=0.0, halt_reward=-1.0, gamma=GAMMA)
    assert (out.rewards is rewards) and (out.continues is continues) and (out.values is values)
    np.testing.assert_array_equal(out.active, 1.0)


@pytest.mark.parametrize("reward, halt_reward", [(-1.0, -2.0), (-5.0, -5.0), (1.0, 0.5), (3.0, 0.0)])
def test_a_halted_return_never_exceeds_the_same_dream_gone_on(reward, halt_reward):
    """Rewards at least the lowest training reward, values at least what HALT is worth."""
    horizon = 6
    rewards = jnp.full((horizon, 1), reward)
    continues = jnp.ones((horizon, 1))
    values = jnp.full((horizon + 1, 1), reward / (1 - GAMMA))
    uncertainties = jnp.zeros((horizon, 1)).at[2].set(10.0)
    went_on = first_return(rewards, continues, values)
    halted = halt(rewards, continues, values, uncertainties, 1.0, halt_reward, GAMMA)
    assert first_return(halted.rewards, halted.continues, halted.values) <= went_on + 1e-5
    # What halting did before: cut the dream (continue 0). Where rewards are negative that
    # made the halted dream worth more than going on, drawing the policy to unknown states.
    cut = first_return(rewards, continues * (uncertainties <= 1.0), values)
    assert (cut > went_on) == (reward < 0)


# --------------------------------------------------------------------------- REINFORCE


def test_the_score_function_estimator_matches_the_pathwise_gradient_on_a_bandit():
    """One-dimensional bandit, reward -(a - 0.5)^2: both estimators of d E[r] / d theta agree."""
    samples = 20000
    actor = Actor(1, gym.spaces.Box(-1.0, 1.0, (1,), np.float32), NetworkConfig(hidden_size=8, hidden_layers=1),
                  nnx.Rngs(0))
    graph, params, rest = nnx.split(actor, nnx.Param, ...)
    feature = jnp.array([0.3])

    def reward(action):
        return -((action[..., 0] - 0.5) ** 2)

    def sample(params, key):
        action, _ = nnx.merge(graph, params, rest).sample(feature[None], key)
        return action[0]

    def pathwise(params, key):
        return reward(sample(params, key))

    def score(params, key):
        action = sample(params, key)
        log_prob = policy_log_probs(nnx.merge(graph, params, rest), feature[None], action[None])[0]
        return score_function_objective(log_prob, reward(action))

    keys = jax.random.split(jax.random.key(7), samples)
    direction = jax.tree.map(lambda leaf: jax.random.normal(jax.random.key(leaf.size), leaf.shape), params)

    def projected(gradient_fn):
        gradients = jax.vmap(jax.grad(gradient_fn), in_axes=(None, 0))(params, keys)
        mean_bias = gradients["net"]["output"]["bias"][...][:, 0]  # the Gaussian mean's bias
        along = sum(jnp.sum(g.reshape(samples, -1) * d.reshape(1, -1), axis=1)
                    for g, d in zip(jax.tree.leaves(gradients), jax.tree.leaves(direction)))
        return np.asarray(mean_bias), np.asarray(along)

    for score_values, pathwise_values in zip(projected(score), projected(pathwise)):
        difference = score_values.mean() - pathwise_values.mean()
        standard_error = np.sqrt(score_values.var() / samples + pathwise_values.var() / samples)
        assert abs(difference) < 4 * standard_error, (score_values.mean(), pathwise_values.mean(), standard_error)
        assert abs(pathwise_values.mean()) > 4 * standard_error, "the bandit's gradient should be clearly non-zero"


# --------------------------------------------------------------------------- critic and target


def test_the_critic_loss_is_the_weighted_half_squared_error():
    predictions = jnp.array([[1.0], [2.0]])
    targets = jnp.array([[0.0], [0.0]])
    weights = jnp.array([[1.0], [0.5]])
    assert float(critic_loss(predictions, targets, weights)) == pytest.approx((0.5 * 1 + 0.5 * 0.5 * 4) / 2)
    target_gradient = jax.grad(lambda t: critic_loss(predictions, t, weights))(targets)
    np.testing.assert_array_equal(target_gradient, 0.0)  # targets are fixed


def test_the_target_critic_moves_by_the_target_rate_towards_the_critic(pendulum_episodes):
    task = get_task("pendulum")
    config = DreamConfig(horizon=3, batch_size=8, updates_per_call=1, target_rate=0.25,
                         network=NetworkConfig(hidden_size=8, hidden_layers=1))
    model = build_model("ensemble", task.observation_space.shape, 1, False,
                        EnsembleConfig(members=2, elites=1, hidden_size=8, hidden_layers=1, termination_hidden=4))
    actor, critic = make_networks(3, task.action_space, config, seed=0)
    init, train = make_dream_trainer(nnx.graphdef(model), actor, critic, config)
    state = init()
    starts = start_states(pendulum_episodes)
    after, _ = train(state, nnx.state(model), starts, jax.random.key(0))
    expected = optax.incremental_update(after.critic, state.target_critic, 0.25)
    for got, want in zip(jax.tree.leaves(after.target_critic), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_halts_reward_is_below_anything_a_dream_that_goes_on_can_earn():
    # the lowest training reward, less the largest penalty a step under the threshold pays
    assert lowest_halt_reward(jnp.array([-1.0, -5.0, 2.0]), 0.5, 2.0) == pytest.approx(-6.0)


def test_halting_needs_a_discount_below_one_and_a_halt_reward():
    with pytest.raises(ValueError, match="gamma below 1"):
        DreamConfig(halt_threshold=1.0, gamma=1.0)
    with pytest.raises(ValueError, match="gamma below 1"):
        DreamCommandConfig(world_model="m", out="o", dream=DreamConfig(gamma=1.0))
    task = get_task("pendulum")
    config = DreamConfig(halt_threshold=1.0, network=NetworkConfig(hidden_size=8, hidden_layers=1))
    model = build_model("ensemble", task.observation_space.shape, 1, False,
                        EnsembleConfig(members=2, elites=1, hidden_size=8, hidden_layers=1, termination_hidden=4))
    actor, critic = make_networks(3, task.action_space, config, seed=0)
    with pytest.raises(ValueError, match="halt_reward"):
        make_dream_trainer(nnx.graphdef(model), actor, critic, config)
