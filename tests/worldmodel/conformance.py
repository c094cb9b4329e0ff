"""The conformance suite every model of the `WorldModel` interface must pass.

`check_world_model_conformance(model, episodes)` exercises every method of the interface
eagerly and under `jax.jit` at several batch sizes; the tests of each model call it
(the ensemble's in test_interface_conformance.py, the RSSM's in test_rssm.py). A helper
module rather than a fixture file: pytest's importlib mode imports ``tests.worldmodel``
as a namespace package, so tests import it as ``tests.worldmodel.conformance``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tasks.episodes import Episodes
from tasks.sampler import sample_sequences, sequence_data
from worldmodel.interface import WorldModel



def check_world_model_conformance(
    model,
    episodes: Episodes,
    *,
    batch_sizes: tuple[int, ...] = (1, 13),
    sequence_length: int = 1,
    stochastic: bool = True,
) -> None:
    """Assert that ``model`` behaves as the world-model interface promises.

    Every method is exercised under ``jax.jit`` (through nnx.split and nnx.merge) at each
    batch size, and eagerly at the largest, where both must agree.

    Args:
        model: a world model whose data statistics are already set (``fit_statistics``).
        episodes: real episodes of the model's task, for batches and start states.
        batch_sizes: dream batch sizes to try; odd ones and 1 belong here.
        sequence_length: the window length of the training batch given to ``loss``.
        stochastic: the model draws something from the step key (an ensemble's member,
            a latent sample), so different keys give different next states.
    """
    assert isinstance(model, WorldModel)
    _check_loss(model, episodes, sequence_length)

    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda state, *args: _dream(nnx.merge(graphdef, state), *args))
    dream = lambda *args: jitted(state, *args)  # noqa: E731
    for batch_size in batch_sizes:
        inputs = real_transitions(episodes, batch_size)
        _check_dream_outputs(model, dream(*inputs, jax.random.key(batch_size)), batch_size)

    largest = max(batch_sizes)
    inputs = real_transitions(episodes, largest)
    eager = _dream(model, *inputs, jax.random.key(largest))
    _check_dream_outputs(model, eager, largest)
    _assert_trees_close(eager, dream(*inputs, jax.random.key(largest)), "jitted dreaming differs from eager dreaming")

    first, again = dream(*inputs, jax.random.key(7)), dream(*inputs, jax.random.key(7))
    for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg="the same key gave another dream step")
    if stochastic:
        one = real_transitions(episodes, min(batch_sizes), seed=1)
        outcomes = {
            b"".join(np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(dream(*one, key)["next_state"]))
            for key in jax.random.split(jax.random.key(3), 32)
        }
        assert len(outcomes) >= 2, "32 different keys all gave the same next state"


def real_transitions(episodes: Episodes, batch_size: int, seed: int = 0):
    """``batch_size`` real (obs, action, next_obs) triples drawn from ``episodes``."""
    before, after = episodes.transitions()
    rows = np.random.default_rng(seed).choice(len(before), size=batch_size, replace=False)
    return (jnp.asarray(episodes.observations[before[rows]]), jnp.asarray(episodes.actions[rows]),
            jnp.asarray(episodes.observations[after[rows]]))


def _assert_finite_scalar(value, what: str) -> None:
    value = np.asarray(value)
    assert value.shape == (), f"{what} has shape {value.shape}, expected a scalar"
    assert np.isfinite(value), f"{what} is {value}"


def _assert_same_structure(a, b, what: str) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b), f"{what} changed the state's structure"
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert (x.shape, x.dtype) == (y.shape, y.dtype), f"{what} changed a state leaf's shape or dtype"


def _assert_trees_close(a, b, what: str) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5, err_msg=what)


def _check_loss(model, episodes: Episodes, sequence_length: int) -> None:
    """``loss`` gives a finite scalar and finite scalar metrics, with finite, non-zero gradients."""
    members = getattr(getattr(model, "config", None), "members", 1)
    batch = sample_sequences(sequence_data(episodes), jax.random.key(0), 4 * members, sequence_length)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: nnx.merge(graphdef, p, rest).loss(batch), has_aux=True))

    (loss, metrics), grads = value_and_grad(params)

    _assert_finite_scalar(loss, "loss")
    assert isinstance(metrics, dict) and metrics, "loss gave no metrics"
    for name, value in metrics.items():
        assert isinstance(name, str)
        _assert_finite_scalar(value, f"loss metric {name}")
    leaves = jax.tree.leaves(grads)
    assert leaves, "the model has no nnx.Param to train"
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves), "a gradient is not finite"
    assert any(np.any(np.asarray(g) != 0) for g in leaves), "every gradient is zero"


def _dream(model, obs, action, next_obs, key):
    """Every dreaming method once, from real observations."""
    state = model.initial_state(obs)
    next_state, reward, continue_prob = model.step(state, action, key)
    return {
        "state": state,
        "next_state": next_state,
        "reward": reward,
        "continue_prob": continue_prob,
        "features": model.features(state),
        "next_features": model.features(next_state),
        "decoded": model.decode(state),
        "next_decoded": model.decode(next_state),
        "filtered": model.observe(state, action, next_obs),
        "uncertainty": model.uncertainty(state, action),
    }


def _check_dream_outputs(model, out: dict, b: int) -> None:
    """Shapes, ranges and state structure of `_dream`'s outputs at batch size ``b``."""
    out = jax.device_get(out)
    _assert_same_structure(out["state"], out["next_state"], "step")
    _assert_same_structure(out["state"], out["filtered"], "observe")
    for leaf in jax.tree.leaves(out["state"]):
        assert leaf.shape[0] == b, "a state leaf lacks the leading batch axis"
    assert out["reward"].shape == (b,)
    assert out["continue_prob"].shape == (b,)
    assert ((out["continue_prob"] >= 0) & (out["continue_prob"] <= 1)).all()
    assert out["features"].ndim == 2 and out["features"].shape[0] == b
    assert out["next_features"].shape == out["features"].shape
    assert out["decoded"].shape == (b, *model.observation_shape)
    assert out["next_decoded"].shape == (b, *model.observation_shape)
    assert out["uncertainty"].shape == (b,)
    assert (out["uncertainty"] >= 0).all()
    for name, value in out.items():
        for leaf in jax.tree.leaves(value):
            assert np.isfinite(np.asarray(leaf)).all(), f"{name} is not finite"
