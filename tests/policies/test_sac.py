"""SAC: what goes into its replay buffer, and learning Pendulum from real experience."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from policies.networks import NetworkConfig
from policies.real_collection import VectorCollector, real_vector_env
from policies.real_training import evaluation_episodes, train_on_real
from policies.sac import SAC, SACConfig, soft_q_targets, temperature_loss
from tasks.recording import EVALUATION_STREAM, REAL_TRAINING_STREAM, reset_seeds
from tasks.registry import get_task

SMALL = SACConfig(batch_size=32, learning_starts=100, updates_per_call=50,
                  network=NetworkConfig(hidden_size=32, hidden_layers=2, min_std=0.01, max_std=2.0))


def test_sac_stores_every_real_transition_and_tunes_its_temperature():
    task = get_task("pendulum")
    learner = SAC(3, task.action_space, SMALL, total_steps=400, seed=0)
    collector = VectorCollector(real_vector_env(task, 1), seeds=[5])
    chunks, metrics = [], []
    while collector.steps < 400:
        chunks.append(collector.collect(learner.act, learner.steps_per_chunk))
        metrics.append(learner.learn(chunks[-1]))

    buffer = learner.state.buffer
    assert int(buffer.size) == 400 and buffer.rewards.shape == (512,)
    stored_next = np.concatenate([c.next_observations[:, 0] for c in chunks])
    np.testing.assert_allclose(np.asarray(buffer.next_observations[:400]), stored_next)
    # step 199 ended a truncated episode: its next observation is the final state, not the reset
    assert not np.allclose(stored_next[199], np.concatenate([c.observations[:, 0] for c in chunks])[200])
    # the first chunk (50 steps) only fills the buffer; updates start once 100 steps are in
    assert metrics[0] == {} and metrics[1] != {}
    assert int(learner.state.updates) == 400 - 50
    assert metrics[-1]["temperature"] < 1.0  # random-like actions are above the target entropy
    collector.close()


def test_sac_refuses_discrete_actions():
    with pytest.raises(ValueError, match="PPO"):
        SAC(4, get_task("cartpole").action_space, SMALL, total_steps=100, seed=0)


@pytest.mark.slow
@pytest.mark.long
def test_sac_learns_to_swing_up_pendulum():
    task = get_task("pendulum")
    learner = SAC(3, task.action_space, SACConfig(), total_steps=4000, seed=0)
    evaluation_seeds = reset_seeds(0, 5, EVALUATION_STREAM)
    before = evaluation_episodes(task, learner.actor, evaluation_seeds).returns().mean()

    trained = train_on_real(task, learner, 4000, reset_seeds(0, 1, REAL_TRAINING_STREAM), evaluation_seeds,
                            eval_every=2000, progress=False)

    assert before < -900
    assert [e["real_steps"] for e in trained.evaluations] == [0, 2000, 4000]
    assert trained.evaluations[-1]["mean_return"] == trained.final_mean_return > -600


def test_soft_q_targets_bootstrap_the_smaller_q_unless_the_episode_terminated():
    targets = soft_q_targets(rewards=jnp.array([1.0, 1.0]), terminations=jnp.array([0.0, 1.0]),
                             next_q1=jnp.array([5.0, 5.0]), next_q2=jnp.array([3.0, 3.0]),
                             next_log_probs=jnp.array([-2.0, -2.0]), temperature=0.5, gamma=0.9)

    np.testing.assert_allclose(targets, [1.0 + 0.9 * (3.0 + 0.5 * 2.0), 1.0])


def test_the_temperature_rises_while_entropy_is_below_the_target():
    low_entropy_log_probs = jnp.array([2.0, 3.0])  # entropy about -2.5, target -1
    gradient = jax.grad(temperature_loss)(jnp.log(0.2), low_entropy_log_probs, -1.0)
    assert gradient < 0  # gradient descent raises log alpha
    assert jax.grad(temperature_loss)(jnp.log(0.2), jnp.array([-3.0]), -1.0) > 0


def test_an_actor_taken_from_sac_outlives_later_updates():
    task = get_task("pendulum")
    learner = SAC(3, task.action_space, SMALL, total_steps=200, seed=0)
    collector = VectorCollector(real_vector_env(task, 1), seeds=[5])
    learner.learn(collector.collect(learner.act, learner.steps_per_chunk))
    learner.learn(collector.collect(learner.act, learner.steps_per_chunk))
    taken = learner.actor
    before = np.asarray(taken.mode(jnp.ones((1, 3))))

    learner.learn(collector.collect(learner.act, learner.steps_per_chunk))  # donates the train state

    np.testing.assert_array_equal(np.asarray(taken.mode(jnp.ones((1, 3)))), before)
    assert not np.array_equal(np.asarray(learner.actor.mode(jnp.ones((1, 3)))), before)
    collector.close()
