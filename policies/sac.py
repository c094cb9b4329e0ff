"""Soft actor-critic (Haarnoja et al. 2018) for continuous actions, on the real environment.

The actor is the same tanh-Gaussian `Actor` the dreams train; two Q-networks (each the
shared `Critic` network, fed the observation and the action scaled to [-1, 1]) with
slowly following targets; the entropy temperature is tuned towards a target entropy.
New transitions go into a replay buffer on the device, and each jitted call writes a
chunk and runs as many updates as it holds steps (one update per real step, as in
Stable-Baselines3), fused in a `lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from policies import replay
from policies.networks import Actor, Critic, NetworkConfig
from policies.real_collection import Chunk
from tasks.config import config, option
from tasks.recording import RandomPolicy


@config
class SACConfig:
    """Defaults follow RL-Zoo's SAC (Stable-Baselines3 defaults, learning rate 1e-3).

    Small differences from Stable-Baselines3: SiLU networks (shared with the dreams), the
    pre-squash standard deviation bounded to [0.01, 2] instead of a clamped log-std, the
    temperature updated after the actor, and updates that start with the first whole
    chunk past ``learning_starts``.

    Attributes:
        learning_rate: Adam step size of actor, critics and temperature.
        batch_size: transitions per update.
        gamma: discount per step.
        target_rate: how fast target critics follow (Polyak tau).
        learning_starts: steps of uniform random actions before the first update.
        updates_per_call: real steps per chunk; the chunk's updates are one jitted call.
        initial_temperature: the entropy weight alpha at the start.
        buffer_size: replay capacity (rounded up to a power of two, at most the run's steps).
        network: actor and critic sizes.
    """

    learning_rate: float = option(1e-3, min=0)
    batch_size: int = option(256, min=1)
    gamma: float = option(0.99, min=0, max=1)
    target_rate: float = option(0.005, min=0, max=1)
    learning_starts: int = option(100, min=0)
    updates_per_call: int = option(50, min=1)
    initial_temperature: float = option(1.0, min=0)
    buffer_size: int = option(1_000_000, min=1)
    network: NetworkConfig = NetworkConfig(hidden_size=256, hidden_layers=2, min_std=0.01, max_std=2.0)


def soft_q_targets(rewards, terminations, next_q1, next_q2, next_log_probs, temperature, gamma):
    """Bellman targets of soft Q-learning: the reward plus, unless the episode terminated,
    the discounted smaller target Q of the next action minus the temperature times its
    log-probability (clipped double-Q keeps the targets from drifting upwards)."""
    soft_value = jnp.minimum(next_q1, next_q2) - temperature * next_log_probs
    return rewards + gamma * (1.0 - terminations) * soft_value


def temperature_loss(log_temperature, log_probs, target_entropy: float):
    """Raises the temperature while the policy's entropy is below the target, lowers it above."""
    return -jnp.mean(log_temperature * jax.lax.stop_gradient(log_probs + target_entropy))


class TwinQ(nnx.Module):
    """Two independent Q-networks over (observation, action in [-1, 1])."""

    def __init__(self, observation_size: int, action_size: int, config: NetworkConfig, rngs: nnx.Rngs):
        self.q1 = Critic(observation_size + action_size, config, rngs)
        self.q2 = Critic(observation_size + action_size, config, rngs)

    def __call__(self, observations: jax.Array, unit_actions: jax.Array) -> tuple[jax.Array, jax.Array]:
        inputs = jnp.concatenate([observations, unit_actions], axis=-1)
        return self.q1(inputs), self.q2(inputs)


class SACState(NamedTuple):
    actor: nnx.State
    critic: nnx.State
    target_critic: nnx.State
    log_temperature: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    temperature_opt: optax.OptState
    buffer: replay.ReplayBuffer
    updates: jax.Array


class SAC:
    """A SAC learner for one task: acts on observations and learns from collected chunks.

    Args:
        observation_size: size of the flat observation.
        action_space: a bounded Box.
        config: SAC settings.
        total_steps: real steps the run will take (bounds the replay capacity).
        seed: seed of the weights and of all sampling.
    """

    def __init__(self, observation_size: int, action_space, config: SACConfig, total_steps: int, seed: int):
        if hasattr(action_space, "n"):
            raise ValueError("SAC here is for continuous (Box) action spaces; use PPO for discrete actions")
        self.config = config
        self.steps_per_chunk = config.updates_per_call
        self._random = RandomPolicy(action_space)
        self._rng = np.random.default_rng(seed)
        self._key = jax.random.key(seed)
        self._steps = 0
        rngs = nnx.Rngs(seed)
        actor = Actor(observation_size, action_space, config.network, rngs)
        action_size = actor.action_size
        critic = TwinQ(observation_size, action_size, config.network, rngs)
        self._actor_graph, actor_state = nnx.split(actor)
        critic_graph, critic_state = nnx.split(critic)
        low = jnp.asarray(action_space.low, jnp.float32).reshape(-1)
        high = jnp.asarray(action_space.high, jnp.float32).reshape(-1)
        target_entropy = -float(action_size)
        optimizer = optax.adam(config.learning_rate)
        capacity = 1 << (min(config.buffer_size, max(total_steps, 1)) - 1).bit_length()
        self.state = SACState(
            actor=actor_state,
            critic=critic_state,
            target_critic=jax.tree.map(jnp.copy, critic_state),  # its own buffers: the state is donated
            log_temperature=jnp.log(jnp.asarray(config.initial_temperature, jnp.float32)),
            actor_opt=optimizer.init(nnx.state(actor, nnx.Param)),
            critic_opt=optimizer.init(nnx.state(critic, nnx.Param)),
            temperature_opt=optimizer.init(jnp.zeros(())),
            buffer=replay.empty_buffer(capacity, (observation_size,), (action_size,)),
            updates=jnp.zeros((), jnp.int32),
        )
        self.functions = sac_functions(self._actor_graph, critic_graph, config, low, high, target_entropy)
        # The state (with its replay buffer) is donated: written in place, never copied.
        self._store = jax.jit(self.functions.store, donate_argnums=0)
        self._store_and_train = jax.jit(self.functions.store_and_train, donate_argnums=0)
        self._sample_actions = jax.jit(self.functions.sample_actions)

    def act(self, observations: np.ndarray) -> np.ndarray:
        """Exploring actions: uniform random until ``learning_starts``, then the actor's samples."""
        random_actions = self.random_actions(observations)
        if random_actions is not None:
            return random_actions
        return np.asarray(self._sample_actions(self.state.actor, jnp.asarray(observations, jnp.float32),
                                               self.next_key()))

    def learn(self, chunk: Chunk) -> dict[str, float]:
        """Store a chunk; once past ``learning_starts``, run one update per stored step."""
        if not self.learning:
            self.state = self._store(self.state, chunk_transitions(chunk))
            return {}
        self.state, metrics = self._store_and_train(self.state, chunk_transitions(chunk), self.next_key())
        return {name: float(value) for name, value in metrics.items()}

    def random_actions(self, observations: np.ndarray) -> np.ndarray | None:
        """Counts the steps acted; uniform random actions until ``learning_starts``, then
        None (the actor acts)."""
        self._steps += len(observations)
        if self._steps <= self.config.learning_starts:
            return self._random(observations, self._rng)
        return None

    @property
    def learning(self) -> bool:
        """Whether the next chunk is learned from (it is only stored before ``learning_starts``)."""
        return self._steps >= self.config.learning_starts

    def next_key(self) -> jax.Array:
        """The key of the next sampling call; the learner's own key moves on."""
        self._key, key = jax.random.split(self._key)
        return key

    @property
    def actor(self) -> Actor:
        """The current actor, with arrays of its own (the train state's are donated to each update)."""
        return nnx.merge(self._actor_graph, jax.tree.map(jnp.copy, self.state.actor))


class SACFunctions(NamedTuple):
    """SAC's device work as pure functions, to jit as they are or vmapped over seeds.

    Attributes:
        store: ``(state, transitions) -> state``, the transitions written into the buffer.
        store_and_train: ``(state, transitions, key) -> (state, metrics)``: stored, then
            one update per transition, fused in a `lax.scan`.
        sample_actions: ``(actor_state, observations, key) -> actions``.
    """

    store: Callable
    store_and_train: Callable
    sample_actions: Callable


def sac_functions(actor_graph, critic_graph, config: SACConfig, low: jax.Array, high: jax.Array,
                  target_entropy: float) -> SACFunctions:
    """The pure functions of a SAC learner with these networks, action bounds and settings."""
    optimizer = optax.adam(config.learning_rate)

    def to_unit(actions):
        return 2.0 * (actions - low) / (high - low) - 1.0

    def critic_loss(critic_params, critic_rest, state: SACState, batch, key):
        observations, actions, rewards, terminations, next_observations = batch
        actor_module = nnx.merge(actor_graph, state.actor)
        next_actions, next_log_probs = actor_module.sample(next_observations, key)
        next_q1, next_q2 = nnx.merge(critic_graph, state.target_critic)(next_observations, to_unit(next_actions))
        targets = jax.lax.stop_gradient(soft_q_targets(rewards, terminations, next_q1, next_q2, next_log_probs,
                                                       jnp.exp(state.log_temperature), config.gamma))
        q1, q2 = nnx.merge(critic_graph, critic_params, critic_rest)(observations, to_unit(actions))
        return 0.5 * (jnp.mean((q1 - targets) ** 2) + jnp.mean((q2 - targets) ** 2)), jnp.mean(q1)

    def actor_loss(actor_params, actor_rest, state: SACState, observations, key):
        actor_module = nnx.merge(actor_graph, actor_params, actor_rest)
        actions, log_probs = actor_module.sample(observations, key)
        q = jnp.minimum(*nnx.merge(critic_graph, state.critic)(observations, to_unit(actions)))
        temperature = jax.lax.stop_gradient(jnp.exp(state.log_temperature))
        return jnp.mean(temperature * log_probs - q), log_probs

    def update(state: SACState, key):
        batch_key, critic_key, actor_key = jax.random.split(key, 3)
        batch = replay.sample(state.buffer, config.batch_size, batch_key)

        critic_params, critic_rest = nnx.split_state(state.critic, nnx.Param, ...)
        (loss_q, mean_q), grads = jax.value_and_grad(critic_loss, has_aux=True)(
            critic_params, critic_rest, state, batch, critic_key)
        step, critic_opt = optimizer.update(grads, state.critic_opt, critic_params)
        critic = nnx.merge_state(optax.apply_updates(critic_params, step), critic_rest)
        state = state._replace(critic=critic, critic_opt=critic_opt)

        actor_params, actor_rest = nnx.split_state(state.actor, nnx.Param, ...)
        (loss_pi, log_probs), grads = jax.value_and_grad(actor_loss, has_aux=True)(
            actor_params, actor_rest, state, batch[0], actor_key)
        step, actor_opt = optimizer.update(grads, state.actor_opt, actor_params)
        actor = nnx.merge_state(optax.apply_updates(actor_params, step), actor_rest)

        loss_t, grad = jax.value_and_grad(temperature_loss)(state.log_temperature, log_probs, target_entropy)
        step, temperature_opt = optimizer.update(grad, state.temperature_opt, state.log_temperature)
        target = optax.incremental_update(critic, state.target_critic, config.target_rate)
        state = state._replace(
            actor=actor, actor_opt=actor_opt, target_critic=target,
            log_temperature=optax.apply_updates(state.log_temperature, step),
            temperature_opt=temperature_opt, updates=state.updates + 1,
        )
        metrics = {"critic_loss": loss_q, "actor_loss": loss_pi, "q": mean_q,
                   "entropy": -jnp.mean(log_probs), "temperature": jnp.exp(state.log_temperature)}
        return state, metrics

    def insert(state: SACState, transitions) -> SACState:
        return state._replace(buffer=replay.insert(state.buffer, *transitions))

    def store_and_train(state: SACState, transitions, key):
        state = insert(state, transitions)
        state, metrics = jax.lax.scan(update, state, jax.random.split(key, config.updates_per_call))
        return state, jax.tree.map(jnp.mean, metrics)

    def sample_actions(actor_state, observations, key):
        return nnx.merge(actor_graph, actor_state).sample(observations, key)[0]

    return SACFunctions(insert, store_and_train, sample_actions)


def chunk_transitions(chunk: Chunk) -> tuple[jax.Array, ...]:
    """A chunk's transitions, one row per step of every environment, as SAC stores them."""
    return tuple(jnp.asarray(np.reshape(a, (-1, *a.shape[2:])), jnp.float32) for a in
                 (chunk.observations, chunk.actions, chunk.rewards, chunk.terminations, chunk.next_observations))
