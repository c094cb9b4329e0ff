"""Symlog and two-hot regression: the pure functions of worldmodel/twohot.py."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodel.twohot import symexp, symlog, symlog_bins, twohot_decode, twohot_encode, twohot_loss

BINS = symlog_bins()


def test_symlog_matches_its_formula_and_is_odd():
    x = jnp.array([-1000.0, -3.0, -0.5, 0.0, 0.5, 3.0, 1000.0])

    np.testing.assert_allclose(symlog(x), np.sign(x) * np.log1p(np.abs(x)), rtol=1e-6)
    np.testing.assert_allclose(symlog(-x), -symlog(x))
    assert float(symlog(jnp.array(math.e - 1))) == pytest.approx(1.0)


def test_symexp_undoes_symlog_and_the_reverse():
    x = jnp.array([-1e6, -123.4, -1.0, -1e-3, 0.0, 1e-3, 1.0, 123.4, 1e6])
    y = jnp.linspace(-12.0, 12.0, 49)

    np.testing.assert_allclose(symexp(symlog(x)), x, rtol=1e-5)
    np.testing.assert_allclose(symlog(symexp(y)), y, rtol=1e-5, atol=1e-6)


def test_symlog_is_close_to_the_identity_near_zero():
    x = jnp.linspace(-1e-3, 1e-3, 11)
    np.testing.assert_allclose(symlog(x), x, atol=1e-6)


def test_standard_bins_are_255_even_steps_from_minus_20_to_20():
    assert BINS.shape == (255,)
    assert float(BINS[0]) == -20.0 and float(BINS[-1]) == 20.0
    np.testing.assert_allclose(np.diff(BINS), 40.0 / 254, rtol=1e-4)
    assert float(BINS[127]) == pytest.approx(0.0, abs=1e-6)  # an odd count puts a bin on zero
    with pytest.raises(ValueError):
        symlog_bins(1)


def test_twohot_weights_sum_to_one_and_sit_on_the_two_bins_around_the_value():
    bins = jnp.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    values = jnp.array([[-1.75, 0.25], [2.5, 1.0]])

    encoded = np.asarray(twohot_encode(values, bins))

    assert encoded.shape == (2, 2, 5)
    np.testing.assert_allclose(encoded.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(encoded[0, 0], [0.75, 0.25, 0, 0, 0])
    np.testing.assert_allclose(encoded[0, 1], [0, 0, 0.75, 0.25, 0])
    np.testing.assert_allclose(encoded[1, 0], [0, 0, 0, 0.25, 0.75])  # uneven bins: 1 to 3
    np.testing.assert_allclose(encoded[1, 1], [0, 0, 0, 1, 0])  # exactly on a bin: all of it there
    assert (encoded >= 0).all()


def test_twohot_gives_the_value_back_as_its_weighted_mean_of_bins():
    values = jnp.asarray(np.random.default_rng(0).uniform(-20, 20, size=1000), dtype=jnp.float32)
    np.testing.assert_allclose(twohot_encode(values, BINS) @ BINS, values, atol=1e-4)


def test_twohot_clips_values_beyond_the_outer_bins_to_them():
    encoded = np.asarray(twohot_encode(jnp.array([-1e9, -20.0, 20.0, 25.0, jnp.inf]), BINS))

    for row, edge in zip(encoded, [0, 0, -1, -1, -1]):
        expected = np.zeros(len(BINS))
        expected[edge] = 1.0
        np.testing.assert_allclose(row, expected, atol=1e-6)


def test_decoding_the_log_of_an_encoding_round_trips_within_bin_resolution():
    targets = jnp.array([-5000.0, -37.5, -1.0, -0.01, 0.0, 0.3, 2.0, 150.0, 1e5])

    probs = twohot_encode(symlog(targets), BINS)
    decoded = np.asarray(twohot_decode(jnp.log(probs + 1e-30), BINS))

    # Exact in symlog space up to float error; the mean of two bins is the value itself.
    np.testing.assert_allclose(symlog(decoded), symlog(targets), atol=1e-4)
    spacing = float(BINS[1] - BINS[0])
    # Within half a bin of the value in symlog space, whatever the scale.
    assert np.all(np.abs(np.asarray(symlog(decoded) - symlog(targets))) < spacing / 2)


def test_uniform_logits_decode_to_zero_on_symmetric_bins():
    assert float(twohot_decode(jnp.zeros((3, len(BINS))), BINS)[0]) == pytest.approx(0.0, abs=1e-4)


def test_twohot_loss_is_lowest_with_the_logits_of_the_targets_own_bins():
    bins = jnp.linspace(-2.0, 2.0, 9)
    target = symexp(jnp.array(0.8))  # between the bins at symlog 0.5 and 1.0
    best = jnp.log(twohot_encode(symlog(target), bins) + 1e-9)
    shifted = jnp.roll(best, 1)

    assert float(twohot_loss(best, target, bins)) < float(twohot_loss(shifted, target, bins))
    assert float(twohot_loss(best, target, bins)) < float(twohot_loss(jnp.zeros(9), target, bins))
    # Its minimum over the logits is the entropy of the two-hot target: 0.4 / 0.6 weights.
    entropy = -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))
    assert float(twohot_loss(best, target, bins)) == pytest.approx(entropy, abs=1e-4)


def test_twohot_loss_gradient_descent_finds_the_target():
    target = jnp.array([42.0, -3.0])
    loss = lambda logits: twohot_loss(logits, target, BINS).sum()  # noqa: E731
    descend = jax.jit(lambda logits: jax.lax.fori_loop(0, 300, lambda _, x: x - jax.grad(loss)(x), logits))
    logits = descend(jnp.zeros((2, len(BINS))))

    np.testing.assert_allclose(twohot_decode(logits, BINS), target, rtol=0.05)
    # The most probable bin is one of the two around the target's symlog.
    top = np.asarray(BINS)[np.argmax(np.asarray(logits), axis=-1)]
    assert np.all(np.abs(top - np.asarray(symlog(target))) < float(BINS[1] - BINS[0]))


def test_twohot_loss_is_unreduced_and_sends_no_gradient_to_the_target():
    logits = jnp.zeros((4, 3, len(BINS)))
    targets = jnp.ones((4, 3))

    assert twohot_loss(logits, targets, BINS).shape == (4, 3)
    assert float(jnp.abs(jax.grad(lambda t: twohot_loss(logits, t, BINS).sum())(targets)).sum()) == 0.0
