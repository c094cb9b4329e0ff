"""PPO: generalised advantages by hand, and learning CartPole from real experience."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from policies.ppo import PPO, PPOConfig, clipped_surrogate_loss, generalized_advantages
from policies.real_collection import VectorCollector, real_vector_env
from policies.real_training import evaluation_episodes, train_on_real
from tasks.recording import EVALUATION_STREAM, REAL_TRAINING_STREAM, reset_seeds
from tasks.registry import get_task


def test_generalized_advantages_match_a_hand_computed_case():
    gamma, lam = 0.9, 0.5
    rewards = jnp.array([[1.0], [2.0], [3.0]])
    values = jnp.array([[0.5], [1.0], [1.5]])
    next_values = jnp.array([[1.0], [10.0], [4.0]])  # step 1's next state is a truncated episode's final state
    terminations = jnp.array([[0.0], [0.0], [0.0]])
    ends = jnp.array([[0.0], [1.0], [0.0]])

    advantages = generalized_advantages(rewards, values, next_values, terminations, ends, gamma, lam)

    delta = [1 + 0.9 * 1.0 - 0.5, 2 + 0.9 * 10.0 - 1.0, 3 + 0.9 * 4.0 - 1.5]
    a2 = delta[2]
    a1 = delta[1]  # the episode ended after step 1: nothing flows back from step 2
    a0 = delta[0] + gamma * lam * a1
    np.testing.assert_allclose(advantages[:, 0], [a0, a1, a2], rtol=1e-6)


def test_a_termination_drops_the_bootstrap_value():
    advantages = generalized_advantages(jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[100.0]]),
                                        jnp.array([[1.0]]), jnp.array([[1.0]]), 0.99, 0.95)
    assert float(advantages[0, 0]) == pytest.approx(1.0)


def test_rollouts_that_do_not_split_into_minibatches_are_refused():
    with pytest.raises(ValueError, match="minibatches"):
        PPOConfig(num_envs=3, steps_per_rollout=10, minibatch_size=4)


@pytest.mark.slow
def test_ppo_learns_to_balance_cartpole():
    task = get_task("cartpole")
    config = PPOConfig()
    learner = PPO(4, task.action_space, config, 12000, seed=0)
    evaluation_seeds = reset_seeds(0, 5, EVALUATION_STREAM)
    before = evaluation_episodes(task, learner.actor, evaluation_seeds).returns().mean()

    trained = train_on_real(task, learner, 12000, reset_seeds(0, config.num_envs, REAL_TRAINING_STREAM),
                            evaluation_seeds, eval_every=4000, progress=False)

    assert before < 60
    assert [e["real_steps"] for e in trained.evaluations] == [0, 4000, 8000, 12000]
    assert trained.real_steps == 12032  # whole chunks of 8 x 32 steps
    assert max(e["mean_return"] for e in trained.evaluations) > 150


def test_the_surrogate_stops_rewarding_a_ratio_beyond_the_clip():
    old = jnp.zeros(2)
    advantages = jnp.array([1.0, -1.0])
    # a ratio of e^0.5 on a positive advantage gains only up to 1.2; on a negative one it costs in full
    loss = clipped_surrogate_loss(jnp.array([0.5, 0.5]), old, advantages, 0.2)
    np.testing.assert_allclose(loss, -np.mean([1.2 * 1.0, np.exp(0.5) * -1.0]), rtol=1e-6)
    gradient = jax.grad(clipped_surrogate_loss)(jnp.array([0.5, 0.5]), old, advantages, 0.2)
    assert gradient[0] == 0 and gradient[1] > 0


def test_ppo_updates_a_continuous_actor_with_finite_losses():
    task = get_task("pendulum")
    config = PPOConfig(num_envs=2, steps_per_rollout=64, minibatch_size=64, epochs=2)
    learner = PPO(3, task.action_space, config, total_steps=256, seed=0)
    collector = VectorCollector(real_vector_env(task, 2), seeds=[1, 2])
    before = np.asarray(learner.actor.net.output.kernel[...])

    for _ in range(2):
        chunk = collector.collect(learner.act, config.steps_per_rollout)
        assert np.all(np.abs(chunk.actions) <= 2.0)  # actions in the task's units
        metrics = learner.learn(chunk)

    assert all(np.isfinite(value) for value in metrics.values())
    assert not np.allclose(np.asarray(learner.actor.net.output.kernel[...]), before)
    with pytest.raises(ValueError, match="rollouts of"):
        learner.learn(collector.collect(learner.act, 10))
    collector.close()
