"""Proximal policy optimisation (Schulman et al. 2017), for discrete and continuous actions.

The actor and the value network are the shared `Actor` and `Critic`. Each rollout of
``num_envs`` x ``steps_per_rollout`` real steps becomes one jitted call: old
log-probabilities and values are computed once with the acting parameters, generalised
advantages (GAE) run backwards as a `lax.scan`, and all epochs of minibatch updates are
a nested `lax.scan`. Truncated episodes bootstrap from their final observation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from policies.networks import Actor, Critic, NetworkConfig
from policies.real_collection import Chunk
from tasks.config import config, option


@config
class PPOConfig:
    """Defaults are RL-Zoo's PPO settings for CartPole-v1 (tanh networks, as
    Stable-Baselines3's; with SiLU the first 475 came 2-5x later).

    Attributes:
        num_envs: environments collecting side by side.
        steps_per_rollout: steps of every environment between updates.
        minibatch_size: transitions per gradient step (the rollout must hold a multiple).
        epochs: passes over each rollout.
        gamma: discount per step.
        gae_lambda: GAE's bias-variance trade-off.
        learning_rate: Adam step size at the start, decayed linearly to zero.
        clip_range: the ratio clip at the start, decayed linearly to zero.
        entropy: weight of the entropy bonus.
        value_weight: weight of the value loss.
        max_grad_norm: gradients are clipped to this global norm.
        network: actor and critic sizes.
    """

    num_envs: int = option(8, min=1)
    steps_per_rollout: int = option(32, min=1)
    minibatch_size: int = option(256, min=1)
    epochs: int = option(20, min=1)
    gamma: float = option(0.98, min=0, max=1)
    gae_lambda: float = option(0.8, min=0, max=1)
    learning_rate: float = option(1e-3, min=0)
    clip_range: float = option(0.2, min=0)
    entropy: float = option(0.0, min=0)
    value_weight: float = option(0.5, min=0)
    max_grad_norm: float = option(0.5, min=0)
    network: NetworkConfig = NetworkConfig(hidden_size=64, hidden_layers=2, activation="tanh")

    def __post_init__(self):
        rollout = self.num_envs * self.steps_per_rollout
        if rollout % self.minibatch_size:
            raise ValueError(f"a rollout of {rollout} transitions does not split into minibatches of {self.minibatch_size}")


def generalized_advantages(rewards, values, next_values, terminations, episode_ends, gamma, lambda_):
    """GAE over time-major ``[T, N]`` arrays; an episode end stops the backward sum, and
    only a termination (not a truncation) drops the bootstrap value."""
    deltas = rewards + gamma * (1.0 - terminations) * next_values - values

    def backward(following, inputs):
        delta, end = inputs
        advantage = delta + gamma * lambda_ * (1.0 - end) * following
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(rewards[0]), (deltas, episode_ends), reverse=True)
    return advantages


def clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip):
    """PPO's policy loss: the probability ratio times the advantage, with the ratio held
    within ``1 +- clip`` wherever moving it further would only look better."""
    ratio = jnp.exp(log_probs - old_log_probs)
    return -jnp.mean(jnp.minimum(ratio * advantages, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * advantages))


class PPOState(NamedTuple):
    actor: nnx.State
    critic: nnx.State
    opt: optax.OptState
    updates: jax.Array


class PPO:
    """A PPO learner for one task.

    Args:
        observation_size: size of the flat observation.
        action_space: Box (bounded) or Discrete.
        config: PPO settings.
        total_steps: real steps the run will take (sets the length of the decay schedules).
        seed: seed of the weights and of all sampling.
    """

    def __init__(self, observation_size: int, action_space, config: PPOConfig, total_steps: int, seed: int):
        self.config = config
        self.steps_per_chunk = config.steps_per_rollout
        rollout = config.num_envs * config.steps_per_rollout
        self.rollouts = max(1, -(-total_steps // rollout))
        self._rollouts_done = 0
        self._key = jax.random.key(seed)
        rngs = nnx.Rngs(seed)
        actor = Actor(observation_size, action_space, config.network, rngs)
        critic = Critic(observation_size, config.network, rngs)
        self._discrete = actor.discrete
        self._actor_graph, actor_state = nnx.split(actor)
        critic_graph, critic_state = nnx.split(critic)
        minibatches = rollout // config.minibatch_size
        schedule = optax.linear_schedule(config.learning_rate, 0.0, self.rollouts * config.epochs * minibatches)
        optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5))
        params = (nnx.state(actor, nnx.Param), nnx.state(critic, nnx.Param))
        self.state = PPOState(actor_state, critic_state, optimizer.init(params), jnp.zeros((), jnp.int32))

        self.functions = ppo_functions(self._actor_graph, critic_graph, config, optimizer)
        self._train = jax.jit(self.functions.train)
        self._sample_actions = jax.jit(self.functions.sample_actions)

    def act(self, observations: np.ndarray) -> np.ndarray:
        """The actor's sampled actions (PPO explores with its own distribution)."""
        return np.asarray(self._sample_actions(self.state.actor, jnp.asarray(observations, jnp.float32),
                                               self.next_key()))

    def learn(self, chunk: Chunk) -> dict[str, float]:
        """All epochs of updates on one rollout, with the clip range decayed by progress."""
        rollout = self.device_chunk(chunk)
        clip = self.next_clip_range()
        self.state, metrics = self._train(self.state, rollout, jnp.float32(clip), self.next_key())
        return {name: float(value) for name, value in metrics.items()}

    def next_clip_range(self) -> float:
        """The clip range of the next rollout (decayed linearly to zero by the last one)."""
        clip = self.config.clip_range * max(0.0, 1.0 - self._rollouts_done / self.rollouts)
        self._rollouts_done += 1
        return clip

    def device_chunk(self, chunk: Chunk) -> Chunk:
        """A rollout on the device, as the update reads it; refuses one of another shape."""
        expected = (self.config.steps_per_rollout, self.config.num_envs)
        if chunk.rewards.shape != expected:
            raise ValueError(f"PPO expects rollouts of {expected} (steps, environments), got {chunk.rewards.shape}")
        return Chunk(*(jnp.asarray(a, jnp.int32 if self._discrete and i == 1 else jnp.float32)
                       for i, a in enumerate(chunk)))

    def next_key(self) -> jax.Array:
        """The key of the next sampling call; the learner's own key moves on."""
        self._key, key = jax.random.split(self._key)
        return key

    @property
    def actor(self) -> Actor:
        return nnx.merge(self._actor_graph, self.state.actor)


class PPOFunctions(NamedTuple):
    """PPO's device work as pure functions, to jit as they are or vmapped over seeds.

    Attributes:
        train: ``(state, chunk, clip, key) -> (state, metrics)``: advantages, then all
            epochs of minibatch updates on one rollout, as nested `lax.scan`s.
        sample_actions: ``(actor_state, observations, key) -> actions``.
    """

    train: Callable
    sample_actions: Callable


def ppo_functions(actor_graph, critic_graph, config: PPOConfig,
                  optimizer: optax.GradientTransformation) -> PPOFunctions:
    """The pure functions of a PPO learner with these networks, settings and optimiser."""
    rollout = config.num_envs * config.steps_per_rollout
    minibatches = rollout // config.minibatch_size

    def loss(params, rests, batch, clip):
        observations, actions, old_log_probs, advantages, returns = batch
        actor_module = nnx.merge(actor_graph, params[0], rests[0])
        critic_module = nnx.merge(critic_graph, params[1], rests[1])
        log_probs = actor_module.log_prob(observations, actions)
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip)
        value_loss = jnp.mean((critic_module(observations) - returns) ** 2)
        entropy = -jnp.mean(log_probs)
        total = policy_loss + config.value_weight * value_loss - config.entropy * entropy
        return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                       "clip_fraction": jnp.mean(jnp.abs(jnp.exp(log_probs - old_log_probs) - 1.0) > clip)}

    def train(state: PPOState, chunk: Chunk, clip, key):
        actor_module = nnx.merge(actor_graph, state.actor)
        critic_module = nnx.merge(critic_graph, state.critic)
        values = critic_module(chunk.observations)
        next_values = critic_module(chunk.next_observations)
        advantages = generalized_advantages(chunk.rewards, values, next_values, chunk.terminations,
                                            chunk.episode_ends, config.gamma, config.gae_lambda)
        flat = lambda x: x.reshape(rollout, *x.shape[2:])  # noqa: E731
        data = (flat(chunk.observations), flat(chunk.actions),
                flat(actor_module.log_prob(chunk.observations, chunk.actions)),
                flat(advantages), flat(advantages + values))
        actor_params, actor_rest = nnx.split_state(state.actor, nnx.Param, ...)
        critic_params, critic_rest = nnx.split_state(state.critic, nnx.Param, ...)
        rests = (actor_rest, critic_rest)

        def minibatch_step(carry, batch):
            params, opt = carry
            (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, rests, batch, clip)
            step, opt = optimizer.update(grads, opt, params)
            return (optax.apply_updates(params, step), opt), metrics

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, rollout).reshape(minibatches, config.minibatch_size)
            return jax.lax.scan(minibatch_step, carry, jax.tree.map(lambda x: x[order], data))

        (params, opt), metrics = jax.lax.scan(
            epoch, ((actor_params, critic_params), state.opt), jax.random.split(key, config.epochs))
        new_state = PPOState(nnx.merge_state(params[0], actor_rest), nnx.merge_state(params[1], critic_rest),
                             opt, state.updates + config.epochs * minibatches)
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["explained_variance"] = 1.0 - jnp.var(data[4] - flat(values)) / (jnp.var(data[4]) + 1e-8)
        return new_state, metrics

    def sample_actions(actor_state, observations, key):
        return nnx.merge(actor_graph, actor_state).sample(observations, key)[0]

    return PPOFunctions(train, sample_actions)
