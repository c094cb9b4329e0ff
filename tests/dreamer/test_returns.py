import jax.numpy as jnp
import numpy as np
import pytest

from dreamer.returns import (debiased_scale, lambda_returns, normalise_by_scale, percentile_range, trajectory_weights,
                             update_return_scale)


def test_lambda_returns_match_a_hand_computed_case():
    rewards = jnp.array([[1.0], [2.0], [3.0]])
    continues = jnp.array([[1.0], [0.5], [1.0]])
    values = jnp.array([[0.0], [10.0], [20.0], [30.0]])
    gamma, lam = 0.9, 0.5
    # Backwards from R_3 = v_3 = 30:
    r2 = 3.0 + 0.9 * 1.0 * (0.5 * 30.0 + 0.5 * 30.0)  # 30.0
    r1 = 2.0 + 0.9 * 0.5 * (0.5 * 20.0 + 0.5 * r2)  # 17.0
    r0 = 1.0 + 0.9 * 1.0 * (0.5 * 10.0 + 0.5 * r1)  # 13.15
    np.testing.assert_allclose(lambda_returns(rewards, continues, values, gamma, lam)[:, 0], [r0, r1, r2], rtol=1e-6)


def test_lambda_one_is_the_discounted_return_bootstrapped_at_the_horizon():
    rewards = jnp.ones((4, 2))
    continues = jnp.ones((4, 2))
    values = jnp.full((5, 2), 100.0)
    returns = lambda_returns(rewards, continues, values, gamma=0.5, lambda_=1.0)
    np.testing.assert_allclose(returns[0], 1 + 0.5 + 0.25 + 0.125 + 0.0625 * 100.0)


def test_lambda_zero_is_the_one_step_target_and_termination_cuts_bootstrapping():
    rewards = jnp.array([[1.0], [1.0]])
    continues = jnp.array([[0.0], [1.0]])
    values = jnp.array([[5.0], [7.0], [9.0]])
    returns = lambda_returns(rewards, continues, values, gamma=0.9, lambda_=0.0)
    np.testing.assert_allclose(returns[:, 0], [1.0, 1.0 + 0.9 * 9.0])


def test_trajectory_weights_stop_counting_after_a_termination():
    continues = jnp.array([[1.0], [0.0], [1.0], [1.0]])
    np.testing.assert_allclose(trajectory_weights(continues, gamma=1.0)[:, 0], [1.0, 1.0, 0.0, 0.0])


def test_return_scale_never_amplifies_small_returns():
    returns = jnp.linspace(0.0, 100.0, 101)
    np.testing.assert_allclose(percentile_range(returns), 90.0, rtol=1e-5)
    np.testing.assert_allclose(normalise_by_scale(jnp.array(3.0), jnp.array(0.2)), 3.0)
    np.testing.assert_allclose(normalise_by_scale(jnp.array(3.0), jnp.array(30.0)), 0.1)


def test_the_debiased_return_scale_is_the_batch_range_from_the_first_update():
    returns = jnp.linspace(-500.0, 500.0, 101)
    first = update_return_scale(jnp.zeros(()), returns)
    assert float(first) == pytest.approx(0.01 * float(percentile_range(returns)))  # the raw running range
    assert float(debiased_scale(first, jnp.asarray(1))) == pytest.approx(float(percentile_range(returns)), rel=1e-5)
    scale = jnp.zeros(())
    for _ in range(50):
        scale = update_return_scale(scale, returns)
    assert float(debiased_scale(scale, jnp.asarray(50))) == pytest.approx(float(percentile_range(returns)), rel=1e-4)
    steady = jnp.asarray(float(percentile_range(returns)))
    assert float(debiased_scale(steady, jnp.asarray(10_000))) == pytest.approx(float(steady), rel=1e-6)
