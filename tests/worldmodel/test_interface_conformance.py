"""What every world model must do, and what the ensemble does on top.

`check_world_model_conformance` (tests/worldmodel/conformance.py) is the suite any model
of the `WorldModel` interface must pass; it is run here on the ensemble for a continuous
task (Pendulum) and a discrete one (CartPole). The ensemble-specific tests and the loss
functions follow.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tasks.registry import get_task
from tests.worldmodel.conformance import check_world_model_conformance, real_transitions
from worldmodel.ensemble import ELITE_ROWS, EnsembleConfig, EnsembleModel
from worldmodel.losses import gaussian_nll, soft_bound, weighted_binary_cross_entropy
from worldmodel.saving import build_model

TINY = EnsembleConfig(members=3, elites=2, hidden_size=32, hidden_layers=2, termination_hidden=16)


# -- the ensemble passes it --------------------------------------------------------------


def tiny_ensemble(task_name: str, config: EnsembleConfig = TINY, seed: int = 0) -> EnsembleModel:
    task = get_task(task_name)
    space = task.action_space
    discrete = task.discrete_actions
    action_size = int(space.n) if discrete else int(space.shape[0])
    return build_model("ensemble", task.observation_space.shape, action_size, discrete, config, seed=seed)


@pytest.mark.parametrize("task_name", ["pendulum", "cartpole"])
def test_the_ensemble_conforms_to_the_world_model_interface(task_name, request):
    episodes = request.getfixturevalue(f"{task_name}_episodes")
    model = tiny_ensemble(task_name)
    model.fit_statistics(episodes)
    check_world_model_conformance(model, episodes)


# -- the ensemble ------------------------------------------------------------------------


def _with_all_members_as(model: EnsembleModel, member: int) -> EnsembleModel:
    """A copy of ``model`` whose every member has member ``member``'s weights."""
    copy = nnx.clone(model)
    for layer in [*copy.hidden, copy.head]:
        for param in (layer.kernel, layer.bias):
            param[...] = jnp.broadcast_to(param[...][member], param[...].shape)
    return copy


@functools.partial(jax.jit, static_argnums=0)
def _step_and_uncertainty(graphdef, state, obs, action, key):
    model = nnx.merge(graphdef, state)
    start = model.initial_state(obs)
    return model.step(start, action, key)[0], model.uncertainty(start, action)


def step_and_uncertainty(model, obs, action, key=None):
    """The next state from ``obs`` and the uncertainty there, jitted once for all copies of a model."""
    key = jax.random.key(0) if key is None else key
    return jax.device_get(_step_and_uncertainty(*nnx.split(model), obs, action, key))


def test_select_elites_keeps_the_members_with_the_lowest_errors(pendulum_episodes):
    model = tiny_ensemble("pendulum")  # 3 members, 2 elites
    model.fit_statistics(pendulum_episodes)

    model.select_elites(jnp.array([2.0, 0.5, 1.0]))

    assert sorted(np.asarray(model.elite_members[...]).tolist()) == [1, 2]


def test_dream_steps_come_only_from_the_elites(pendulum_episodes):
    model = tiny_ensemble("pendulum")
    model.fit_statistics(pendulum_episodes)
    model.select_elites(jnp.array([2.0, 0.5, 1.0]))
    obs, action, _ = real_transitions(pendulum_episodes, 1)

    by_member = {m: step_and_uncertainty(_with_all_members_as(model, m), obs, action)[0].tobytes() for m in range(TINY.members)}
    assert len(set(by_member.values())) == TINY.members  # the members do differ
    seen = {step_and_uncertainty(model, obs, action, key)[0].tobytes() for key in jax.random.split(jax.random.key(1), 32)}

    assert seen == {by_member[1], by_member[2]}


def test_uncertainty_is_zero_when_the_members_agree_and_positive_otherwise(pendulum_episodes):
    model = tiny_ensemble("pendulum")
    model.fit_statistics(pendulum_episodes)
    obs, action, _ = real_transitions(pendulum_episodes, 13)

    np.testing.assert_allclose(step_and_uncertainty(_with_all_members_as(model, 0), obs, action)[1], 0.0, atol=1e-6)
    assert (step_and_uncertainty(model, obs, action)[1] > 1e-3).all()


@functools.partial(jax.jit, static_argnums=0)
def _fused_step(graphdef, state, obs, action, key):
    model = nnx.merge(graphdef, state)
    return model.step_with_uncertainty(model.initial_state(obs), action, key)


@pytest.mark.parametrize("dream_noise", [False, True])
def test_one_pass_of_every_elite_gives_the_step_and_the_uncertainty(pendulum_episodes, dream_noise):
    config = EnsembleConfig(members=5, elites=3, hidden_size=32, hidden_layers=2, termination_hidden=16,
                            dream_noise=dream_noise)
    model = tiny_ensemble("pendulum", config)
    model.fit_statistics(pendulum_episodes)
    for batch in (1, 7, 13):
        obs, action, _ = real_transitions(pendulum_episodes, batch)
        for key in jax.random.split(jax.random.key(batch), 4):
            graphdef, state = nnx.split(model)
            next_obs, reward, continues, uncertainty = jax.device_get(_fused_step(graphdef, state, obs, action, key))
            start = model.initial_state(obs)
            expected_obs, expected_reward, expected_continue = jax.device_get(model.step(start, action, key))
            np.testing.assert_allclose(next_obs, expected_obs, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(reward, expected_reward, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(continues, expected_continue, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(uncertainty, jax.device_get(model.uncertainty(start, action)), rtol=1e-5)


def test_every_elite_predicts_a_batch_larger_than_one_part_as_it_predicts_it_whole(pendulum_episodes):
    model = tiny_ensemble("pendulum")
    model.fit_statistics(pendulum_episodes)
    rows = 2 * ELITE_ROWS + 37  # three parts, the last padded
    inputs = jax.random.normal(jax.random.key(0), (rows, 4))
    elites = model.config.elites

    in_parts = jax.jit(lambda x: model._predict_every_elite(x))(inputs)
    whole = jax.jit(lambda x: model._predict(jnp.broadcast_to(x, (elites, *x.shape)), model.elite_members[...]))(inputs)

    for part, expected in zip(in_parts, whole):
        assert part.shape == (elites, rows, 4)
        np.testing.assert_allclose(part, expected, rtol=1e-6, atol=1e-6)


# -- the loss functions ------------------------------------------------------------------


def test_gaussian_nll_sums_over_the_last_axis_without_the_constant():
    mean = jnp.array([[0.0, 1.0], [2.0, 2.0]])
    logvar = jnp.array([[0.0, math.log(4.0)], [math.log(0.25), 0.0]])
    target = jnp.array([[1.0, 3.0], [2.5, 2.0]])

    # row 0: 0.5 * (1 / 1 + 0 + 4 / 4 + log 4) = 1 + log 2
    # row 1: 0.5 * (0.25 / 0.25 + log 0.25 + 0 + 0) = 0.5 - log 2
    np.testing.assert_allclose(gaussian_nll(mean, logvar, target), [1 + math.log(2), 0.5 - math.log(2)], rtol=1e-6)


def test_soft_bound_matches_its_softplus_formula_and_keeps_gradients():
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    lower, upper = -1.0, 1.0

    # upper - softplus(upper - raw), then lower + softplus(that - lower); at raw = 0:
    # -1 + softplus(2 - log(1 + e)) = -1 + log(1 + e^2 / (1 + e))
    np.testing.assert_allclose(soft_bound(jnp.array(0.0), lower, upper), -1 + math.log(1 + math.e**2 / (1 + math.e)), rtol=1e-6)
    np.testing.assert_allclose(soft_bound(jnp.array(3.0), lower, upper), lower + softplus(upper - softplus(upper - 3.0) - lower), rtol=1e-6)
    assert float(soft_bound(jnp.array(-1e3), lower, upper)) == pytest.approx(lower, abs=1e-6)
    gradient = jax.grad(lambda x: soft_bound(x, lower, upper))
    assert float(gradient(5.0)) > 0 and float(gradient(-5.0)) > 0  # outside the range, unlike a clip


def test_soft_bound_stays_within_the_ensembles_default_log_variance_bounds():
    config = EnsembleConfig()
    raw = jnp.linspace(-1e3, 1e3, 2001)
    bounded = np.asarray(soft_bound(raw, config.min_logvar, config.max_logvar))
    assert (np.diff(bounded) >= 0).all()
    assert bounded.min() >= config.min_logvar
    assert bounded.max() <= config.max_logvar + 1e-4  # exceeds it by log(1 + e^-10.5), see below


def test_soft_bound_stays_above_lower_and_within_its_documented_overshoot_of_upper():
    lower, upper = -1.0, 1.0
    bounded = np.asarray(soft_bound(jnp.array([-1e3, -5.0, 0.0, 1.0, 5.0, 50.0, 1e3]), lower, upper))
    assert (bounded >= lower).all(), bounded
    assert (bounded <= upper + math.log1p(math.exp(lower - upper)) + 1e-6).all(), bounded
    assert np.all(np.diff(bounded) >= 0)


def test_weighted_binary_cross_entropy_weights_positives_and_ignores_masked_entries():
    logits = jnp.array([2.0, -1.0, 0.5, 0.0])
    labels = jnp.array([True, False, True, False])
    mask = jnp.array([True, True, False, True])

    # positives weigh 3, negatives 1; the masked 0.5 counts for nothing:
    # (3 * log(1 + e^-2) + log(1 + e^-1) + log 2) / (3 + 1 + 1)
    expected = (3 * math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2)) / 5
    np.testing.assert_allclose(weighted_binary_cross_entropy(logits, labels, mask, 3.0), expected, rtol=1e-6)

    plain = np.mean([math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log(2)])
    np.testing.assert_allclose(weighted_binary_cross_entropy(logits, labels, mask, 1.0), plain, rtol=1e-6)
    assert float(weighted_binary_cross_entropy(logits, labels, jnp.zeros(4, bool), 3.0)) == 0.0
