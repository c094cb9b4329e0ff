"""The losses of training in dreams, as pure functions of time-major arrays ``[H, B]``.

The dream trainer (`dreamer.actor_critic`) imagines trajectories and then calls these:
how halting reshapes a dream (MOReL's absorbing HALT state), the actor's objective
(the pathwise gradient through the model, or the score-function estimator), and the
critic's regression. Each is small enough to check by hand, and is tested that way.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Halted(NamedTuple):
    """A dream after halting: what the returns and the losses are computed from.

    Attributes:
        rewards: ``[H, B]``; the lowest training reward from the halting step on.
        continues: ``[H, B]``; 1 from the halting step on (HALT is absorbing, not an end).
        values: ``[H + 1, B]``; ``halt_reward / (1 - gamma)`` for every state in HALT.
        active: ``[H, B]``; 1 where the step starts outside HALT (the policy acts there).
    """

    rewards: jax.Array
    continues: jax.Array
    values: jax.Array
    active: jax.Array


def lowest_halt_reward(rewards, uncertainty_penalty: float, threshold: float) -> float:
    """The reward of HALT: below every reward a dream that goes on can earn.

    That is the lowest training reward, less the largest disagreement penalty a step
    below the threshold can pay; with it, halting never pays more than going on.
    """
    return float(jnp.min(jnp.asarray(rewards))) - uncertainty_penalty * threshold


def halt(rewards: jax.Array, continues: jax.Array, values: jax.Array, uncertainties: jax.Array,
         threshold: float, halt_reward: float, gamma: float) -> Halted:
    """Send a dream to MOReL's absorbing HALT state at its first unknown step.

    A step whose disagreement exceeds ``threshold`` is unknown to the model: it earns
    ``halt_reward`` (the lowest reward seen in training) and leads to HALT, where every
    later step earns ``halt_reward`` too, forever. The value of HALT is therefore
    ``halt_reward / (1 - gamma)``, below the value of any real state, so a halted return
    never exceeds the return of a dream that went on: halting repels the policy from
    states the model does not know, whatever the sign of the rewards. (Setting the
    continuation to zero instead would make a halted dream worth 0, which attracts the
    policy wherever rewards are negative.)

    Args:
        rewards, continues, uncertainties: ``[H, B]`` of the dream.
        values: ``[H + 1, B]`` the critic's values of the dream's states.
        threshold: disagreement above which a step is unknown; 0 turns halting off.
        halt_reward: the reward of an unknown step and of every step in HALT.
        gamma: the discount.
    """
    if threshold <= 0:
        return Halted(rewards, continues, values, jnp.ones_like(rewards))
    unknown = uncertainties > threshold
    halted_from = jnp.cumsum(unknown, axis=0) > 0  # this step is unknown, or one before it was
    halted_before = jnp.concatenate([jnp.zeros_like(halted_from[:1]), halted_from[:-1]], axis=0)
    halt_value = halt_reward / (1.0 - gamma)
    return Halted(
        rewards=jnp.where(halted_from, halt_reward, rewards),
        continues=jnp.where(halted_from, 1.0, continues),
        values=values.at[1:].set(jnp.where(halted_from, halt_value, values[1:])),
        active=1.0 - halted_before.astype(rewards.dtype),
    )


def pathwise_objective(returns: jax.Array, return_scale: jax.Array) -> jax.Array:
    """``[H, B]`` what the actor maximises when gradients flow through the model: the scaled returns."""
    return returns / jnp.maximum(1.0, return_scale)


def policy_log_probs(actor, features: jax.Array, actions: jax.Array) -> jax.Array:
    """The current policy's log-probability of the dream's actions, taken as given.

    The actions are stop-gradient: the result's gradient is the score ``grad log pi(a)``,
    the ingredient of the score-function (REINFORCE) estimator.
    """
    return actor.log_prob(features, jax.lax.stop_gradient(actions))


def score_function_objective(log_probs: jax.Array, advantages: jax.Array) -> jax.Array:
    """``[H, B]`` the REINFORCE surrogate: its gradient is ``E[grad log pi(a) * advantage]``.

    ``log_probs`` must be the log-probability of the *stop-gradient* action under the
    current policy (`policy_log_probs`): only then is the gradient the score-function
    estimator. The log-density of a reparameterised
    sample has no gradient in the Gaussian's mean at all.
    """
    return log_probs * jax.lax.stop_gradient(advantages)


def critic_loss(predictions: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted half squared error of the critic's ``[H, B]`` predictions against fixed targets."""
    targets = jax.lax.stop_gradient(targets)
    return jnp.mean(weights * 0.5 * (predictions - targets) ** 2)
