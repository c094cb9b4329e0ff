"""Actor-critic training inside a world model's dreams (the Dreamer recipe).

Every update imagines trajectories from a batch of real start states, computes
lambda-returns with a slowly updated target critic, and updates:

- the actor, for continuous actions by backpropagating the returns through the model's
  dynamics (default) or by REINFORCE, for discrete actions by REINFORCE with the critic
  as baseline; returns are divided by a running 5-95 percentile range and an entropy
  bonus keeps exploration alive;
- the critic, by regressing the lambda-returns.

Offline, imagined rewards can be penalised by the model's disagreement (MOPO) and a
dream can be halted where disagreement passes a threshold (MOReL).

`make_dream_trainer` returns pure functions: ``init() -> DreamState`` and
``train(state, world_model_state, starts, key) -> (state, metrics)``, where one jitted
``train`` call runs ``updates_per_call`` updates in a `lax.scan`.
`make_dream_trainer_for_seeds` is the same trainer for several seeds at once, vmapped
over a leading seed axis (the PureJaxRL way), so one compiled call trains them all.

Data parallel over a device mesh (`worldmodel.sharding`), as fitting is: each update's
start states, and so its dreams, are split over the mesh's devices; the networks, their
optimiser state, the world model and the start buffer are replicated on every device,
and the compiler reduces the gradients (GSPMD). The same batch is drawn whatever the
number of devices, so one device and many compute the same updates.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dreamer.imagination import imagine
from dreamer.start_states import StartStates, filtered_starts
from dreamer.dream_losses import critic_loss, halt, pathwise_objective, policy_log_probs, score_function_objective
from dreamer.returns import (debiased_scale, lambda_returns, normalise_by_scale, trajectory_weights,
                             update_return_scale)
from dreamer.twohot_critic import TwohotCritic
from policies.distributions import categorical_entropy
from policies.networks import Actor, Critic, NetworkConfig
from tasks.config import config, option
from worldmodel.sharding import check_batch_divides, data_mesh, replicate, split_batch


@config
class DreamConfig:
    """How a policy is trained in dreams.

    Attributes:
        horizon: imagined steps per trajectory.
        batch_size: start states per update.
        gamma: discount per step.
        lambda_: TD(lambda) mixing of the returns.
        actor_learning_rate: Adam step size of the actor.
        critic_learning_rate: Adam step size of the critic.
        entropy: weight of the entropy bonus.
        target_rate: how fast the target critic follows the critic per update.
        gradient: continuous actions learn by backprop through the dynamics, or by REINFORCE.
        saturation_limit: the actor's pre-tanh mean may grow to this size freely...
        saturation_penalty: ...and beyond it pays this times the squared excess. A mean
            deep in tanh's flat tails passes almost no gradient back from the dynamics,
            so an actor that slams into a bound early would stay there for good.
        uncertainty_penalty: MOPO's lambda: imagined reward minus this times disagreement.
        halt_threshold: a step whose disagreement exceeds this sends the dream to MOReL's
            absorbing HALT state (0 disables); see `dreamer.dream_losses.halt`.
        halt_reward: the reward of every step from the halting one on (None: set from the
            data, `dreamer.dream_losses.lowest_halt_reward`, by whoever turns halting on).
        updates_per_call: updates fused into one jitted call.
        value_head: ``squared_error`` regresses raw returns with one output;
            ``twohot`` predicts a categorical over symlog bins (DreamerV3,
            `dreamer.twohot_critic`), whose gradients do not grow with the returns' scale.
        return_scale_start: the running 5-95 percentile range that returns are divided by
            starts at ``zero`` and grows (so the first updates are barely normalised), or
            is ``debiased`` as Adam debiases its moments (`dreamer.returns.debiased_scale`),
            right from the first update.
        network: actor and critic sizes.
    """

    horizon: int = option(15, min=1)
    batch_size: int = option(256, min=1)
    gamma: float = option(0.99, min=0, max=1)
    lambda_: float = option(0.95, min=0, max=1)
    actor_learning_rate: float = option(1e-3, min=0)
    critic_learning_rate: float = option(1e-3, min=0)
    entropy: float = option(3e-4, min=0)
    target_rate: float = option(0.02, min=0, max=1)
    gradient: Literal["dynamics", "reinforce"] = "dynamics"
    saturation_limit: float = option(2.0, min=0)
    saturation_penalty: float = option(1.0, min=0)
    uncertainty_penalty: float = option(0.0, min=0)
    halt_threshold: float = option(0.0, min=0)
    halt_reward: float | None = None
    updates_per_call: int = option(100, min=1)
    value_head: Literal["squared_error", "twohot"] = "squared_error"
    return_scale_start: Literal["zero", "debiased"] = "zero"
    network: NetworkConfig = option(NetworkConfig())

    def __post_init__(self):
        if self.gamma == 0:
            raise ValueError("gamma must be above 0")
        if self.halt_threshold > 0 and self.gamma >= 1:
            raise ValueError("halting needs gamma below 1 (HALT is worth halt_reward / (1 - gamma))")


class DreamState(NamedTuple):
    """Everything a dream trainer carries from one update to the next."""

    actor: nnx.State
    critic: nnx.State
    target_critic: nnx.State
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    return_scale: jax.Array
    updates: jax.Array


def dream_mesh(devices: int | None, config: DreamConfig) -> Mesh:
    """The mesh a dream trainer splits its batches over: the first ``devices`` local
    devices (None: all). Commands call it before they write anything.

    Raises:
        InputError: more devices are asked for than exist, or they cannot share
            ``config.batch_size`` equally.
    """
    mesh = data_mesh(devices)
    check_batch_divides(mesh, config.batch_size, "--dream.batch-size")
    return mesh


def make_networks(feature_size: int, action_space, config: DreamConfig, seed: int) -> tuple[Actor, Critic | TwohotCritic]:
    rngs = nnx.Rngs(seed)
    critic_class = TwohotCritic if config.value_head == "twohot" else Critic
    return Actor(feature_size, action_space, config.network, rngs), critic_class(feature_size, config.network, rngs)


def make_dream_trainer(world_model_graph, actor: Actor, critic: Critic, config: DreamConfig, context: int = 0,
                       mesh: Mesh | None = None):
    """Pure ``init`` and jitted ``train`` functions for the given network shapes.

    Args:
        world_model_graph: the world model's graph (`nnx.graphdef`).
        actor: the actor whose shape and initial weights the trainer starts from.
        critic: the critic, likewise.
        config: dream settings.
        context: how many real steps the model filters before each dream start (its
            ``context_length``: 0 for the ensemble).
        mesh: devices each update's start states are split over (`worldmodel.sharding`);
            None: all local devices. ``init`` returns a state replicated over it; the
            world model's state and the start states given to ``train`` must be
            replicated over it too (`worldmodel.sharding.replicate`), or not yet placed.

    Raises:
        InputError: the mesh's devices cannot share ``config.batch_size`` equally.
    """
    mesh = mesh or data_mesh()
    initial_state, train_calls = _dream_calls(world_model_graph, actor, critic, config, context, mesh)
    actor_state, critic_state = nnx.state(actor), nnx.state(critic)

    def init() -> DreamState:
        return replicate(initial_state(actor_state, critic_state), mesh)

    # Outputs replicated: the next call, checkpoints and the actor read them whole.
    return init, jax.jit(train_calls, out_shardings=NamedSharding(mesh, PartitionSpec()))


def make_dream_trainer_for_seeds(world_model_graph, actors: list[Actor], critics: list[Critic], config: DreamConfig,
                                 context: int = 0, mesh: Mesh | None = None, world_model_per_seed: bool = False):
    """The dream trainer of several seeds as one program: PureJaxRL's ``vmap(train)``.

    Seed ``i`` trains from ``actors[i]`` and ``critics[i]`` with ``keys[i]``, and its
    updates equal those of `make_dream_trainer` on the same networks and key, to float
    tolerance; on an accelerator one compiled call trains them all side by side.

    Args:
        world_model_graph, config, context, mesh: as for `make_dream_trainer`.
        actors: one actor per seed, all of one shape (each seed's initial weights).
        critics: one critic per seed, likewise.
        world_model_per_seed: the world model's state given to ``train`` has a leading
            seed axis (each seed dreams in its own model); otherwise all seeds share one.

    Returns:
        ``init() -> DreamState`` whose every leaf has a leading seed axis, and the jitted
        ``train(states, world_model_state, starts, keys) -> (states, metrics)``, where
        ``keys`` holds one key per seed, the start states are shared, and every metric
        has one value per seed.
    """
    if len(actors) != len(critics) or not actors:
        raise ValueError(f"one actor and one critic per seed, got {len(actors)} actors and {len(critics)} critics")
    mesh = mesh or data_mesh()
    initial_state, train_calls = _dream_calls(world_model_graph, actors[0], critics[0], config, context, mesh)

    def init() -> DreamState:
        states = [initial_state(nnx.state(actor), nnx.state(critic)) for actor, critic in zip(actors, critics)]
        return replicate(jax.tree.map(lambda *leaves: jnp.stack(leaves), *states), mesh)

    seeds_train = jax.vmap(train_calls, in_axes=(0, 0 if world_model_per_seed else None, None, 0))
    return init, jax.jit(seeds_train, out_shardings=NamedSharding(mesh, PartitionSpec()))


def _dream_calls(world_model_graph, actor: Actor, critic: Critic, config: DreamConfig, context: int, mesh: Mesh):
    """The trainer as two pure functions: ``initial_state(actor_state, critic_state)`` and
    ``train_calls(state, world_model_state, starts, key)`` (``updates_per_call`` updates)."""
    check_batch_divides(mesh, config.batch_size, "--dream.batch-size")
    actor_graph, critic_graph = nnx.graphdef(actor), nnx.graphdef(critic)
    actor_optimizer = optax.chain(optax.clip_by_global_norm(100.0), optax.adam(config.actor_learning_rate))
    critic_optimizer = optax.chain(optax.clip_by_global_norm(100.0), optax.adam(config.critic_learning_rate))
    discrete = actor.discrete
    use_dynamics_gradient = config.gradient == "dynamics" and not discrete
    if config.halt_threshold > 0 and config.halt_reward is None:
        raise ValueError("halting needs a halt_reward (see dreamer.dream_losses.lowest_halt_reward)")

    def initial_state(actor_state: nnx.State, critic_state: nnx.State) -> DreamState:
        actor_params = nnx.state(nnx.merge(actor_graph, actor_state), nnx.Param)
        critic_params = nnx.state(nnx.merge(critic_graph, critic_state), nnx.Param)
        return DreamState(
            actor=actor_state,
            critic=critic_state,
            target_critic=critic_state,
            actor_opt=actor_optimizer.init(actor_params),
            critic_opt=critic_optimizer.init(critic_params),
            return_scale=jnp.zeros(()),
            updates=jnp.zeros((), dtype=jnp.int32),
        )

    def imagine_from(actor_module, world_model, starts: StartStates, key):
        start_key, dream_key = jax.random.split(key)
        # The indices one device would draw, each device keeping its slice of them: its
        # share of the starts, filtered and dreamed on that device alone.
        index = split_batch(jax.random.randint(start_key, (config.batch_size,), 0, starts.count), mesh)
        first = split_batch(filtered_starts(world_model, starts, index, context), mesh)

        def policy(features, policy_key):
            action, log_prob = actor_module.sample(features, policy_key)
            if not use_dynamics_gradient:
                action = jax.lax.stop_gradient(action)
            return action, log_prob

        needs_uncertainty = config.uncertainty_penalty > 0 or config.halt_threshold > 0
        return imagine(world_model, policy, first, config.horizon, dream_key, with_uncertainty=needs_uncertainty)

    def actor_loss(actor_params, actor_rest, state: DreamState, world_model, starts, key):
        actor_module = nnx.merge(actor_graph, actor_params, actor_rest)
        target_critic = nnx.merge(critic_graph, state.target_critic)
        dream = imagine_from(actor_module, world_model, starts, key)
        penalised = dream.rewards - config.uncertainty_penalty * dream.uncertainties
        halted = halt(penalised, dream.continues, target_critic(dream.features), dream.uncertainties,
                      config.halt_threshold, config.halt_reward, config.gamma)
        rewards, continues, values = halted.rewards, halted.continues, halted.values
        returns = lambda_returns(rewards, continues, values, config.gamma, config.lambda_)
        # Steps that start in HALT teach nothing: the policy does not act there.
        weights = jax.lax.stop_gradient(trajectory_weights(continues, config.gamma) * halted.active)
        return_scale = update_return_scale(state.return_scale, jax.lax.stop_gradient(returns))
        scale = debiased_scale(return_scale, state.updates + 1) if config.return_scale_start == "debiased" else return_scale
        if use_dynamics_gradient:
            objective = pathwise_objective(returns, scale)
        else:
            advantage = normalise_by_scale(returns - values[:-1], scale)
            log_probs = policy_log_probs(actor_module, dream.features[:-1], dream.actions)
            objective = score_function_objective(log_probs, advantage)
        # The entropy bonus uses the sample's own (reparameterised) log-density: its
        # gradient is the pathwise estimate of the entropy's gradient.
        entropy = -dream.log_probs if not discrete else _categorical_entropy(actor_module, dream.features[:-1])
        loss = -jnp.mean(weights * (objective + config.entropy * entropy))
        if not discrete:
            features = jax.lax.stop_gradient(dream.features[:-1])
            excess = jax.nn.relu(jnp.abs(actor_module.pre_squash_mean(features)) - config.saturation_limit)
            loss = loss + config.saturation_penalty * jnp.mean(excess**2)
        aux = (jax.lax.stop_gradient(dream), jax.lax.stop_gradient(returns), weights, return_scale, rewards)
        return loss, aux

    def critic_objective(critic_params, critic_rest, features, returns, weights):
        critic_module = nnx.merge(critic_graph, critic_params, critic_rest)
        if isinstance(critic_module, TwohotCritic):
            return critic_module.loss(features[:-1], returns, weights)
        return critic_loss(critic_module(features[:-1]), returns, weights)

    def update(carry, key):
        state, world_model_state, starts = carry
        world_model = nnx.merge(world_model_graph, world_model_state)
        actor_params, actor_rest = _split_params(state.actor)
        (loss_a, (dream, returns, weights, return_scale, rewards)), actor_grads = jax.value_and_grad(
            actor_loss, has_aux=True
        )(actor_params, actor_rest, state, world_model, starts, key)
        actor_updates, actor_opt = actor_optimizer.update(actor_grads, state.actor_opt, actor_params)
        actor_params = optax.apply_updates(actor_params, actor_updates)

        critic_params, critic_rest = _split_params(state.critic)
        loss_c, critic_grads = jax.value_and_grad(critic_objective)(critic_params, critic_rest, dream.features, returns, weights)
        critic_updates, critic_opt = critic_optimizer.update(critic_grads, state.critic_opt, critic_params)
        critic_params = optax.apply_updates(critic_params, critic_updates)
        critic_full = _merge_params(critic_params, critic_rest)
        target = optax.incremental_update(critic_full, state.target_critic, config.target_rate)
        new_state = DreamState(
            actor=_merge_params(actor_params, actor_rest),
            critic=critic_full,
            target_critic=target,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            return_scale=return_scale,
            updates=state.updates + 1,
        )
        metrics = {
            "actor_loss": loss_a,
            "critic_loss": loss_c,
            "dream_return": jnp.mean(jnp.sum(weights * rewards, axis=0)),
            "dream_reward": jnp.mean(rewards),
            "lambda_return": jnp.mean(returns[0]),
            "return_scale": return_scale,
            "uncertainty": jnp.mean(dream.uncertainties),
            "continue": jnp.mean(dream.continues),
        }
        return (new_state, world_model_state, starts), metrics

    def train_calls(state: DreamState, world_model_state, starts: StartStates, key):
        keys = jax.random.split(key, config.updates_per_call)
        (state, _, _), metrics = jax.lax.scan(update, (state, world_model_state, starts), keys)
        return state, jax.tree.map(jnp.mean, metrics)

    return initial_state, train_calls


def _categorical_entropy(actor_module: Actor, features):
    logits = actor_module.net(actor_module.input_norm.normalize(features))
    return categorical_entropy(logits)


def _split_params(state: nnx.State):
    return nnx.split_state(state, nnx.Param, ...)


def _merge_params(params: nnx.State, rest: nnx.State) -> nnx.State:
    return nnx.merge_state(params, rest)
