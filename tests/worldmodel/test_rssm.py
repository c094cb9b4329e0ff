"""The recurrent latent world model (RSSM): the interface's conformance suite (for vector
and camera observations), its shapes, its categorical latents, its loss, and that it
learns Pendulum's dynamics."""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dreamer.cli import main
from tasks.episodes import Episode, Episodes
from tasks.registry import get_task
from tasks.traces import write_traces
from tasks.sampler import SequenceBatch, sample_sequences, sequence_data
from tests.worldmodel import conformance
from tests.worldmodel.conformance import check_world_model_conformance, real_transitions
from worldmodel.ensemble import EnsembleConfig, EnsembleModel
from worldmodel.fit import FitConfig, fit_settings
from worldmodel.saving import load
from worldmodel.rssm import (
    SIZE_PRESETS,
    RSSMConfig,
    RSSMModel,
    RSSMState,
    categorical_kl,
    mixture_log_probs,
    mode_one_hot,
    sample_one_hot,
    unimix_log_probs,
)

TINY = RSSMConfig(size="tiny")


def tiny_rssm(task_name: str, config: RSSMConfig = TINY, seed: int = 0) -> RSSMModel:
    task = get_task(task_name)
    space = task.action_space
    discrete = task.discrete_actions
    action_size = int(space.n) if discrete else int(space.shape[0])
    return RSSMModel(task.observation_space.shape, action_size, discrete, config, nnx.Rngs(seed),
                     action_start=int(space.start) if discrete else 0)


@functools.partial(jax.jit, static_argnums=0)
def _dream_once(graphdef, state, obs, action, next_obs, key):
    model = nnx.merge(graphdef, state)
    start = model.initial_state(obs)
    stepped, reward, continue_prob = model.step(start, action, key)
    return {
        "start": start,
        "stepped": stepped,
        "filtered": model.observe(start, action, next_obs),
        "features": model.features(start),
        "decoded": model.decode(stepped),
        "reward": reward,
        "continue_prob": continue_prob,
        "uncertainty": model.uncertainty(start, action),
    }


def square_frames_episodes(count: int = 3, length: int = 12, size: int = 8) -> Episodes:
    """Camera-frame episodes small enough for CPU tests: a white square on black,
    ``[size, size, 3]`` uint8, moved by a one-dimensional action each step."""
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(count):
        actions = rng.uniform(-2, 2, size=(length, 1)).astype(np.float32)
        columns = np.clip(np.round(size / 2 + np.concatenate([[0.0], np.cumsum(actions[:, 0])])), 0, size - 3)
        frames = np.zeros((length + 1, size, size, 3), np.uint8)
        for t, column in enumerate(columns.astype(int)):
            frames[t, 3:6, column:column + 3] = 255
        last = np.arange(length) == length - 1
        episodes.append(Episode(frames, actions, -np.abs(actions[:, 0]), np.zeros(length, bool), last))
    return Episodes.from_list(episodes)


def dream_once(model, obs, action, next_obs, key=None):
    """Every dreaming method once from ``obs``, jitted once per model structure."""
    key = jax.random.key(0) if key is None else key
    return jax.device_get(_dream_once(*nnx.split(model), obs, action, next_obs, key))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _loss(graphdef, state, batch, validation, key):
    model = nnx.merge(graphdef, state)
    return model.validation_loss(batch) if validation else model.loss(batch, key)


def loss_of(model, batch, key=None, validation=False):
    return jax.device_get(_loss(*nnx.split(model), batch, validation, key))


# -- the interface -----------------------------------------------------------------------


@pytest.mark.parametrize("task_name", ["pendulum", "cartpole"])
def test_the_rssm_conforms_to_the_world_model_interface(task_name, request):
    episodes = request.getfixturevalue(f"{task_name}_episodes")
    model = tiny_rssm(task_name)
    model.fit_statistics(episodes)
    check_world_model_conformance(model, episodes, sequence_length=6)


def test_the_rssm_conforms_to_the_world_model_interface_on_camera_frames(monkeypatch):
    episodes = square_frames_episodes()
    model = RSSMModel((8, 8, 3), 1, False, TINY, nnx.Rngs(0))
    model.fit_statistics(episodes)
    assert model.reads_frames
    # Decoded frames are pixel values up to 255: jitted and eager decoding agree to float32
    # rounding times 255 (about 1e-4), beyond the suite's absolute 1e-5, which is meant
    # for observations near unit scale. Decoded frames are compared in [0, 1] units; every
    # other output exactly as the suite compares it.
    suite_comparison = conformance._assert_trees_close

    def compare_frames_in_unit_scale(a, b, what):
        if isinstance(a, dict) and "decoded" in a:
            a, b = ({k: v / 255.0 if k.endswith("decoded") else v for k, v in tree.items()} for tree in (a, b))
        suite_comparison(a, b, what)

    monkeypatch.setattr(conformance, "_assert_trees_close", compare_frames_in_unit_scale)
    check_world_model_conformance(model, episodes, batch_sizes=(3,), sequence_length=4)


def test_fit_settings_left_unset_are_the_models_own_and_set_ones_win():
    frames, vectors = (RSSMModel(shape, 1, False, TINY, nnx.Rngs(0)) for shape in ((8, 8, 3), (3,)))
    for model in (frames, vectors):
        settings = fit_settings(FitConfig(), model)
        assert (settings.batch_size, settings.sequence_length) == (16, 32)
    on_frames, on_vectors = fit_settings(FitConfig(), frames), fit_settings(FitConfig(), vectors)
    assert on_vectors.learning_rate == 3e-4
    assert on_frames.max_updates < on_vectors.max_updates and on_frames.learning_rate > on_vectors.learning_rate
    ensemble = EnsembleModel((3,), 1, False, EnsembleConfig(), nnx.Rngs(0))
    settings = fit_settings(FitConfig(), ensemble)
    assert (settings.batch_size, settings.sequence_length, settings.learning_rate) == (256, 1, 1e-3)
    chosen = FitConfig(batch_size=8, sequence_length=4, learning_rate=1e-2, max_updates=7)
    assert fit_settings(chosen, frames) == chosen


def test_states_features_and_decoding_have_the_presets_widths(cartpole_episodes):
    model = tiny_rssm("cartpole")
    model.fit_statistics(cartpole_episodes)
    sizes = SIZE_PRESETS["tiny"]

    out = dream_once(model, *real_transitions(cartpole_episodes, 5))

    for name in ("start", "stepped", "filtered"):
        assert isinstance(out[name], RSSMState)
        assert out[name].deter.shape == (5, sizes.deter)
        assert out[name].stoch.shape == (5, sizes.latents, sizes.classes)
    assert out["features"].shape == (5, sizes.deter + sizes.latents * sizes.classes)
    assert out["decoded"].shape == (5, 4)
    np.testing.assert_array_equal(out["start"].deter, 0.0)  # a first observation starts from an empty memory


def test_size_presets_scale_the_model_and_bad_settings_are_refused():
    assert RSSMConfig().size == "tiny"  # the default is for a CPU
    medium = RSSMConfig(size="medium").sizes
    assert (medium.latents, medium.classes) == (32, 16)
    widths = [SIZE_PRESETS[size].deter for size in ("tiny", "small", "medium", "large")]
    assert widths == sorted(widths) and len(set(widths)) == 4

    small = nnx.state(tiny_rssm("pendulum", RSSMConfig(size="small")), nnx.Param)
    tiny = nnx.state(tiny_rssm("pendulum"), nnx.Param)
    count = lambda params: sum(leaf.size for leaf in jax.tree.leaves(params))  # noqa: E731
    assert count(small) > 4 * count(tiny)

    with pytest.raises(ValueError, match="size"):
        RSSMConfig(size="huge")
    with pytest.raises(ValueError, match="unimix"):
        RSSMConfig(unimix=1.0)
    with pytest.raises(ValueError, match="prior_heads"):
        RSSMConfig(prior_heads=0)


def test_latents_are_exact_one_hots_after_filtering_and_dreaming(pendulum_episodes):
    model = tiny_rssm("pendulum")
    model.fit_statistics(pendulum_episodes)

    out = dream_once(model, *real_transitions(pendulum_episodes, 7))

    for name in ("start", "stepped", "filtered"):
        stoch = out[name].stoch
        assert set(np.unique(stoch)) <= {0.0, 1.0}, name
        np.testing.assert_array_equal(stoch.sum(-1), 1.0, err_msg=name)


def test_filtering_reads_the_real_observation_and_dreaming_reads_the_key(pendulum_episodes):
    model = tiny_rssm("pendulum")
    model.fit_statistics(pendulum_episodes)
    obs, action, next_obs = real_transitions(pendulum_episodes, 13)

    one = dream_once(model, obs, action, next_obs, jax.random.key(1))
    other_observation = dream_once(model, obs, action, -next_obs, jax.random.key(1))
    other_key = dream_once(model, obs, action, next_obs, jax.random.key(2))

    assert not np.array_equal(one["filtered"].stoch, other_observation["filtered"].stoch)
    np.testing.assert_array_equal(one["filtered"].stoch, other_key["filtered"].stoch)  # filtering draws nothing
    assert not np.array_equal(one["stepped"].stoch, other_key["stepped"].stoch)
    np.testing.assert_array_equal(one["stepped"].deter, other_key["stepped"].deter)  # the memory is deterministic


def _with_all_prior_heads_as(model: RSSMModel, head: int) -> RSSMModel:
    copy = nnx.clone(model)
    for layer in (copy.prior_hidden, copy.prior_out):
        for param in (layer.kernel, layer.bias):
            param[...] = jnp.broadcast_to(param[...][head], param[...].shape)
    return copy


def test_uncertainty_is_zero_when_the_prior_heads_agree_and_positive_otherwise(pendulum_episodes):
    model = tiny_rssm("pendulum")
    model.fit_statistics(pendulum_episodes)
    inputs = real_transitions(pendulum_episodes, 13)

    np.testing.assert_allclose(dream_once(_with_all_prior_heads_as(model, 1), *inputs)["uncertainty"], 0.0, atol=1e-6)
    assert (dream_once(model, *inputs)["uncertainty"] > 1e-3).all()


def test_dreamed_observations_carry_gradients_back_to_the_action(pendulum_episodes):
    model = tiny_rssm("pendulum")
    model.fit_statistics(pendulum_episodes)
    obs, action, _ = real_transitions(pendulum_episodes, 4)
    graphdef, state = nnx.split(model)

    def dreamed(action):
        dreamer = nnx.merge(graphdef, state)
        next_state, reward, _ = dreamer.step(dreamer.initial_state(obs), action, jax.random.key(0))
        return jnp.sum(dreamer.decode(next_state)) + jnp.sum(reward)

    gradient = np.asarray(jax.jit(jax.grad(dreamed))(action))
    assert np.isfinite(gradient).all() and np.abs(gradient).min() > 0


def test_discrete_actions_are_one_hot_counted_from_the_spaces_start():
    model = RSSMModel((4,), 3, True, TINY, nnx.Rngs(0), action_start=-1)
    np.testing.assert_array_equal(model.encode_action(jnp.array([-1, 1, 0])), np.eye(3)[[0, 2, 1]])
    assert model.encode_action(jnp.array([0.5])).dtype == jnp.float32


def test_fit_statistics_sets_the_action_scale_and_weighs_rare_terminations(cartpole_episodes):
    model = tiny_rssm("cartpole")

    model.fit_statistics(cartpole_episodes)

    terminal = int(cartpole_episodes.terminations.sum())
    expected = (cartpole_episodes.num_steps - terminal) / terminal
    assert float(model.terminal_weight[...]) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(model.action_norm.mean[...].sum(), 1.0, rtol=1e-5)  # one-hot means sum to one


# -- the loss ------------------------------------------------------------------------------


def test_steps_past_an_episodes_end_do_not_change_the_loss(pendulum_episodes):
    model = tiny_rssm("pendulum")
    model.fit_statistics(pendulum_episodes)
    batch = sample_sequences(sequence_data(pendulum_episodes), jax.random.key(0), 5, 6)
    mask = jnp.arange(6)[None, :] < jnp.array([6, 3, 1, 6, 4])[:, None]
    batch = batch._replace(mask=mask)
    noise = np.random.default_rng(0)
    # Steps from the first masked one on, and the observations after them, are garbage.
    past_end = ~np.asarray(mask)
    garbage = SequenceBatch(
        obs=jnp.where(jnp.concatenate([jnp.zeros((5, 1), bool), ~mask], 1)[..., None],
                      noise.normal(size=batch.obs.shape) * 100, batch.obs),
        action=jnp.where(past_end[..., None], noise.normal(size=batch.action.shape), batch.action),
        reward=jnp.where(past_end, 1e3, batch.reward),
        terminated=jnp.where(past_end, True, batch.terminated),
        mask=mask,
    )
    key = jax.random.key(4)

    clean_loss, clean_metrics = loss_of(model, batch, key)
    garbage_loss, garbage_metrics = loss_of(model, garbage, key)

    np.testing.assert_allclose(garbage_loss, clean_loss, rtol=1e-5)
    for name in clean_metrics:
        np.testing.assert_allclose(garbage_metrics[name], clean_metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_loss_draws_latents_from_its_key_and_validation_uses_the_modes(pendulum_episodes):
    model = tiny_rssm("pendulum")
    model.fit_statistics(pendulum_episodes)
    data = sequence_data(pendulum_episodes)
    batch = sample_sequences(data, jax.random.key(0), 8, 5)

    assert loss_of(model, batch)[0] == loss_of(model, batch)[0]  # no key: one folded from the batch
    assert loss_of(model, batch, jax.random.key(1))[0] != loss_of(model, batch, jax.random.key(2))[0]
    assert loss_of(model, batch, validation=True)[0] == loss_of(model, batch, validation=True)[0]
    other = sample_sequences(data, jax.random.key(1), 8, 5)
    assert loss_of(model, other)[0] != loss_of(model, batch)[0]
    metrics = loss_of(model, batch)[1]
    assert set(metrics) == {"reconstruction", "reward", "continue", "kl", "kl_dynamics", "kl_representation"}
    # Free bits: neither KL term is ever below them.
    assert metrics["kl_dynamics"] >= TINY.free_bits - 1e-6 and metrics["kl_representation"] >= TINY.free_bits - 1e-6


# -- the categorical latents' pure functions -------------------------------------------------


def test_unimix_keeps_every_class_possible_and_probabilities_normalised():
    logits = jnp.array([[50.0, -50.0, 0.0, -50.0], [0.0, 0.0, 0.0, 0.0]])

    probs = np.exp(np.asarray(unimix_log_probs(logits, 0.01)))

    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert probs.min() >= 0.01 / 4 * (1 - 1e-5)
    np.testing.assert_allclose(probs[0, 0], 0.99 + 0.0025, rtol=1e-5)
    np.testing.assert_allclose(probs[1], 0.25, rtol=1e-6)


def test_the_mixture_of_identical_heads_is_each_head_and_of_two_heads_their_mean():
    head = unimix_log_probs(jax.random.normal(jax.random.key(0), (2, 3, 5)), 0.01)
    np.testing.assert_allclose(mixture_log_probs(jnp.stack([head, head, head])), head, atol=1e-6)
    other = unimix_log_probs(jax.random.normal(jax.random.key(1), (2, 3, 5)), 0.01)
    mixed = np.exp(np.asarray(mixture_log_probs(jnp.stack([head, other]))))
    np.testing.assert_allclose(mixed, 0.5 * (np.exp(head) + np.exp(other)), rtol=1e-5)


def test_categorical_kl_sums_over_latents_and_is_zero_only_for_equal_distributions():
    p = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
    q = jnp.log(jnp.array([[[0.25, 0.75], [0.9, 0.1]]]))

    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # the second latent adds nothing
    np.testing.assert_allclose(categorical_kl(p, q), [expected], rtol=1e-6)
    np.testing.assert_allclose(categorical_kl(p, p), [0.0], atol=1e-7)
    assert float(categorical_kl(q, p)[0]) > 0


def test_samples_follow_the_probabilities_and_pass_their_gradients_straight_through():
    log_probs = jnp.log(jnp.array([0.1, 0.6, 0.3]))
    draws = jax.vmap(lambda key: sample_one_hot(log_probs, key))(jax.random.split(jax.random.key(0), 20000))

    assert set(np.unique(np.asarray(draws))) == {0.0, 1.0}
    np.testing.assert_allclose(np.asarray(draws).mean(0), [0.1, 0.6, 0.3], atol=0.015)
    np.testing.assert_array_equal(mode_one_hot(log_probs), [0.0, 1.0, 0.0])

    logits = jnp.array([0.3, -0.2, 0.5])
    weights = jnp.array([1.0, 2.0, 3.0])
    sampled = lambda x: jnp.sum(weights * sample_one_hot(jax.nn.log_softmax(x), jax.random.key(1)))  # noqa: E731
    through_sample = jax.grad(sampled)(logits)
    through_probs = jax.grad(lambda x: jnp.sum(weights * jax.nn.softmax(x)))(logits)
    np.testing.assert_allclose(through_sample, through_probs, rtol=1e-5)


# -- learning ------------------------------------------------------------------------------


@pytest.mark.long
def test_a_tiny_rssm_learns_pendulum_better_than_nothing_changes(record_random):
    """1000 Adam updates on 20 random episodes (with 6, its codes overfit); then, on two
    unseen episodes, the model filters the real steps and predicts each next observation
    from the one before."""
    train_episodes = record_random("pendulum", 20)
    model = tiny_rssm("pendulum")
    model.fit_statistics(train_episodes)
    data = sequence_data(train_episodes)
    optimizer = optax.adam(3e-3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def train(params, key):
        def update(carry, update_key):
            params, opt_state = carry
            batch = sample_sequences(data, update_key, 16, 16)
            loss, grads = jax.value_and_grad(lambda p: nnx.merge(graphdef, p, rest).loss(batch)[0])(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(update, (params, optimizer.init(params)), jax.random.split(key, 1000))
        return params, losses

    params, losses = train(params, jax.random.key(0))
    losses = np.asarray(losses)
    assert np.isfinite(losses).all()
    assert losses[-50:].mean() < 0.4 * losses[:50].mean()

    unseen = list(record_random("pendulum", 2, seed=100))
    obs = jnp.asarray(np.stack([episode.observations for episode in unseen], axis=1))  # [T + 1, 2, 3]
    actions = jnp.asarray(np.stack([episode.actions for episode in unseen], axis=1))

    @jax.jit
    def one_step_predictions(params):
        trained = nnx.merge(graphdef, params, rest)

        def predict_then_filter(state, inputs):
            action, next_obs, key = inputs
            predicted, _, _ = trained.step(state, action, key)
            return trained.observe(state, action, next_obs), trained.decode(predicted)

        keys = jax.random.split(jax.random.key(1), actions.shape[0])
        return jax.lax.scan(predict_then_filter, trained.initial_state(obs[0]), (actions, obs[1:], keys))[1]

    predicted = np.asarray(one_step_predictions(params))
    scale = train_episodes.observations.std(axis=0)
    context = 8  # the memory needs a few real steps before it knows the velocity's trend
    model_rmse = np.sqrt(np.mean(((predicted - obs[1:]) / scale)[context:] ** 2))
    nothing_changes_rmse = np.sqrt(np.mean(((obs[:-1] - obs[1:]) / scale)[context:] ** 2))
    assert model_rmse < 0.8 * nothing_changes_rmse, (model_rmse, nothing_changes_rmse)


def test_fit_and_check_a_recurrent_model_from_the_command_line(tmp_path, record_random):
    task = get_task("pendulum")
    traces, out = tmp_path / "traces", tmp_path / "rssm"
    write_traces(traces, record_random("pendulum", 10), task)
    unseen = tmp_path / "unseen"
    write_traces(unseen, record_random("pendulum", 2, seed=1), task)
    assert main(["fit", "--traces", str(traces), "--model", "rssm", "--rssm.size", "tiny", "--fit.batch-size", "8",
                 "--fit.max-updates", "20", "--fit.updates-per-call", "10", "--out", str(out)]) == 0
    model = load(out)
    assert isinstance(model, RSSMModel) and model.config.size == "tiny"
    assert main(["check", "--world-model", str(out), "--traces", str(unseen), "--split", "all",
                 "--fidelity.horizon", "5", "--out", str(tmp_path / "check")]) == 0
    report = json.loads((tmp_path / "check" / "fidelity.json").read_text())
    assert report["context"] == RSSMModel.context_length  # rollouts start after filtering real steps
    assert all(np.isfinite(x) for x in report["predictors"]["model"]["obs_rmse"] if x is not None)
