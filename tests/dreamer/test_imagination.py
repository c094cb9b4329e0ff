import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dreamer.imagination import imagine
from policies.networks import Actor, NetworkConfig
from tasks.registry import get_task
from worldmodel.ensemble import EnsembleConfig, EnsembleModel

TINY = EnsembleConfig(members=3, elites=2, hidden_size=16, hidden_layers=2, termination_hidden=8)


def _model_and_actor(task_name, episodes):
    task = get_task(task_name)
    discrete = task.discrete_actions
    size = int(task.action_space.n) if discrete else task.action_space.shape[0]
    model = EnsembleModel(task.observation_space.shape, size, discrete, TINY, nnx.Rngs(0))
    model.fit_statistics(episodes)
    actor = Actor(task.observation_space.shape[0], task.action_space, NetworkConfig(hidden_size=16), nnx.Rngs(1))
    return model, actor


def test_scan_rollout_equals_a_step_by_step_python_rollout(pendulum_episodes):
    model, actor = _model_and_actor("pendulum", pendulum_episodes)
    start = model.initial_state(jnp.asarray(pendulum_episodes.observations[:9]))
    key = jax.random.key(3)
    dream = jax.jit(lambda s, k: imagine(model, actor.sample, s, 6, k, with_uncertainty=True))(start, key)

    state = start
    for t, step_key in enumerate(jax.random.split(key, 6)):
        policy_key, model_key = jax.random.split(step_key)
        features = model.features(state)
        action, log_prob = actor.sample(features, policy_key)
        np.testing.assert_allclose(dream.features[t], features, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dream.actions[t], action, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dream.log_probs[t], log_prob, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dream.uncertainties[t], model.uncertainty(state, action), rtol=1e-4, atol=1e-6)
        state, reward, continue_prob = model.step(state, action, model_key)
        np.testing.assert_allclose(dream.rewards[t], reward, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dream.continues[t], continue_prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dream.features[-1], model.features(state), rtol=1e-4, atol=1e-5)


def test_imagination_is_batched_time_major_and_works_for_discrete_actions(cartpole_episodes):
    model, actor = _model_and_actor("cartpole", cartpole_episodes)
    start = model.initial_state(jnp.asarray(cartpole_episodes.observations[:5]))
    dream = imagine(model, actor.sample, start, 4, jax.random.key(0))
    assert dream.features.shape == (5, 5, 4)
    assert dream.actions.shape == (4, 5) and dream.actions.dtype in (jnp.int32, jnp.int64)
    assert dream.rewards.shape == dream.continues.shape == dream.log_probs.shape == (4, 5)
    assert not dream.uncertainties.any()


def test_gradients_flow_through_the_dynamics_into_the_policy(pendulum_episodes):
    model, actor = _model_and_actor("pendulum", pendulum_episodes)
    graph, params, rest = nnx.split(actor, nnx.Param, ...)
    start = model.initial_state(jnp.asarray(pendulum_episodes.observations[:16]))

    def dream_return(params):
        policy = nnx.merge(graph, params, rest)
        return imagine(model, policy.sample, start, 5, jax.random.key(0)).rewards.sum()

    grads = jax.grad(dream_return)(params)
    norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and sum(norms) > 0
