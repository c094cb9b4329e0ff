"""A probabilistic ensemble of MLPs in observation space (the PETS / MBPO family).

Each member maps ``(observation, action)`` to a Gaussian over the change in observation
and the reward. The members are one set of stacked weights evaluated as batched
matmuls. A small classifier on the next observation predicts termination, so tasks that
end (CartPole, Hopper) end in dreams too.

Imagination uses only the elites (the members best on validation data) and computes
only one member per state: at every step the batch is cut into as many groups as there
are elites and each group is given a different elite, the assignment rotated by a
random shift. Every trajectory thus sees a uniformly drawn elite at every step (the
"TS1" trajectory sampling of PETS) at the cost of a single member's forward pass.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tasks.episodes import Episodes
from tasks.sampler import SequenceBatch
from worldmodel.layers import EnsembleLinear, apply_ensemble_linear
from worldmodel.losses import gaussian_nll, soft_bound, weighted_binary_cross_entropy
from tasks.config import config, option
from tasks.normalizer import Normalizer, Statistic


ELITE_ROWS = 1024  # rows every elite predicts at once (`EnsembleModel._predict_every_elite`)


@config
class EnsembleConfig:
    """Size and likelihood settings of the ensemble.

    Attributes:
        members: ensemble members trained side by side.
        elites: members kept for imagination, chosen on validation error.
        hidden_size: units per hidden layer.
        hidden_layers: hidden layers per member.
        termination_hidden: units per hidden layer of the termination classifier.
        min_logvar: initial soft lower bound of the predicted log-variance.
        max_logvar: initial soft upper bound of the predicted log-variance.
        logvar_bound_weight: pulls the learned bounds together (PETS).
        dream_noise: add the predicted Gaussian noise to imagined steps; off by default,
            since most control tasks are deterministic and the member choice already
            carries the model's uncertainty.
    """

    members: int = option(7, min=1)
    elites: int = option(5, min=1)
    hidden_size: int = option(200, min=1)
    hidden_layers: int = option(4, min=1)
    termination_hidden: int = option(64, min=1)
    min_logvar: float = -10.0
    max_logvar: float = 0.5
    logvar_bound_weight: float = 0.01
    dream_noise: bool = False

    def __post_init__(self):
        if not 1 <= self.elites <= self.members:
            raise ValueError(f"elites must be between 1 and members ({self.members}), got {self.elites}")
        if self.min_logvar >= self.max_logvar:
            raise ValueError(f"min_logvar ({self.min_logvar}) must be below max_logvar ({self.max_logvar})")


class EnsembleModel(nnx.Module):
    """The ensemble world model; its state is the observation itself, ``[B, *obs_shape]``."""

    kind = "ensemble"
    # `worldmodel.fit`'s settings where FitConfig leaves them None: a one-step model learns
    # from single transitions, many per member per update.
    fit_defaults = {"batch_size": 256, "sequence_length": 1, "learning_rate": 1e-3, "max_updates": 20000}
    context_length = 0  # real steps to filter before a rollout: none, the state is the observation

    def __init__(
        self,
        observation_shape: tuple[int, ...],
        action_size: int,
        discrete_actions: bool,
        config: EnsembleConfig,
        rngs: nnx.Rngs,
        action_start: int = 0,
    ):
        self.observation_shape = tuple(observation_shape)
        self.action_size = action_size
        self.discrete_actions = discrete_actions
        self.action_start = action_start  # Discrete(n, start=s): actions s..s+n-1 are one-hot 0..n-1
        self.config = config
        obs_size = math.prod(self.observation_shape)
        self._obs_size = obs_size
        target_size = obs_size + 1  # observation change, then reward
        sizes = [obs_size + action_size] + [config.hidden_size] * config.hidden_layers
        self.hidden = nnx.List(
            [EnsembleLinear(config.members, a, b, rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.head = EnsembleLinear(config.members, config.hidden_size, 2 * target_size, rngs)
        self.max_logvar = nnx.Param(jnp.full(target_size, config.max_logvar, dtype=jnp.float32))
        self.min_logvar = nnx.Param(jnp.full(target_size, config.min_logvar, dtype=jnp.float32))
        width = config.termination_hidden
        self.termination = nnx.List(
            [nnx.Linear(obs_size, width, rngs=rngs), nnx.Linear(width, width, rngs=rngs), nnx.Linear(width, 1, rngs=rngs)]
        )
        self.obs_norm = Normalizer(obs_size)
        self.action_norm = Normalizer(action_size)
        self.target_norm = Normalizer(target_size)
        self.elite_members = Statistic(jnp.arange(config.elites))
        self.terminal_weight = Statistic(jnp.ones(()))

    # -- statistics from data -------------------------------------------------------

    def fit_statistics(self, episodes: Episodes) -> None:
        """Set normalisers and the termination class weight from training episodes."""
        before, after = episodes.transitions()
        obs = episodes.observations.reshape(len(episodes.observations), -1).astype(np.float64)
        actions = np.asarray(self.encode_action(jnp.asarray(episodes.actions)))
        self.obs_norm.fit(obs[before])
        self.action_norm.fit(actions)
        self.target_norm.fit(np.concatenate([obs[after] - obs[before], episodes.rewards[:, None]], axis=1))
        terminal = int(episodes.terminations.sum())
        # Terminal steps are rare; weighting them by the class ratio trains the classifier
        # for balanced accuracy rather than for "never ends".
        ratio = (episodes.num_steps - terminal) / terminal if terminal else 1.0
        self.terminal_weight.set_value(jnp.asarray(min(max(ratio, 1.0), 1000.0), dtype=jnp.float32))

    def select_elites(self, member_errors: jax.Array) -> None:
        """Keep the members with the lowest validation error for imagination."""
        order = jnp.argsort(jnp.asarray(member_errors))
        self.elite_members.set_value(order[: self.config.elites])

    # -- the world-model interface ------------------------------------------------------

    def loss(self, batch: SequenceBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Gaussian NLL of each member on its own share of the batch, plus termination BCE.

        The batch's leading axis is split evenly over the members, so each member trains
        on different samples (the bootstrap-like diversity of PETS / MBPO).
        """
        inputs, targets, next_obs, terminated, mask = self._transitions(batch)
        members = self.config.members
        per_member = inputs.shape[0] // members
        if per_member * members != inputs.shape[0]:
            raise ValueError(f"batch of {inputs.shape[0]} transitions does not split over {members} members")
        mean, logvar = self._predict(self._split_members(inputs, members), None)
        nll = gaussian_nll(mean, logvar, self._split_members(targets, members))
        weights = self._split_members(mask, members).astype(jnp.float32)
        nll = jnp.sum(nll * weights) / jnp.maximum(weights.sum(), 1.0)
        bound = self.config.logvar_bound_weight * (self.max_logvar[...].sum() - self.min_logvar[...].sum())
        bce = self._termination_loss(next_obs, terminated, mask)
        mse = jnp.sum(jnp.mean((mean - self._split_members(targets, members)) ** 2, -1) * weights) / jnp.maximum(weights.sum(), 1.0)
        return nll + bound + bce, {"nll": nll, "mse": mse, "termination_bce": bce}

    def validation_loss(self, batch: SequenceBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Every member on the whole batch: mean normalised MSE, and each member's own."""
        inputs, targets, next_obs, terminated, mask = self._transitions(batch)
        members = self.config.members
        replicated = jnp.broadcast_to(inputs, (members, *inputs.shape))
        mean, _ = self._predict(replicated, None)
        weights = mask.astype(jnp.float32)
        member_mse = jnp.sum(jnp.mean((mean - targets) ** 2, -1) * weights, -1) / jnp.maximum(weights.sum(), 1.0)
        bce = self._termination_loss(next_obs, terminated, mask)
        return member_mse.mean() + bce, {"member_mse": member_mse, "termination_bce": bce}

    def initial_state(self, obs: jax.Array) -> jax.Array:
        return jnp.asarray(obs, dtype=jnp.float32)

    def observe(self, state: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
        # The state is the observation, so a real observation filters it completely.
        return jnp.asarray(next_obs, dtype=jnp.float32)

    def step(self, state: jax.Array, action: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        batch = state.shape[0]
        elites = self.config.elites
        member_key, noise_key = jax.random.split(key)
        inputs = self._inputs(state.reshape(batch, -1), action)
        padding = (-batch) % elites
        groups = jnp.pad(inputs, ((0, padding), (0, 0))).reshape(elites, -1, inputs.shape[-1])
        shift = jax.random.randint(member_key, (), 0, elites)
        members = self.elite_members[...][(jnp.arange(elites) + shift) % elites]
        mean, logvar = self._predict(groups, members)
        if self.config.dream_noise:
            mean = mean + jnp.exp(0.5 * logvar) * jax.random.normal(noise_key, mean.shape)
        return self._outcome(state, mean.reshape(-1, mean.shape[-1])[:batch])

    def step_with_uncertainty(self, state: jax.Array, action: jax.Array,
                              key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """`step` and `uncertainty` from one forward pass of every elite.

        `uncertainty` needs all the elites' predictions anyway; the step takes each row's
        from its own elite among them (the same elite, and the same noise, `step` gives
        it), instead of a forward pass of its own.
        """
        batch = state.shape[0]
        elites = self.config.elites
        member_key, noise_key = jax.random.split(key)
        inputs = self._inputs(state.reshape(batch, -1), action)
        mean, logvar = self._predict_every_elite(inputs)
        disagreement = self._disagreement(mean)
        # As in `step`: rows fall in `elites` equal groups, group g served by elite slot g + shift.
        group = -(-batch // elites)
        shift = jax.random.randint(member_key, (), 0, elites)
        rows = jnp.arange(batch)
        slot = (rows // group + shift) % elites
        mean, logvar = mean[slot, rows], logvar[slot, rows]
        if self.config.dream_noise:
            noise = jax.random.normal(noise_key, (elites, group, mean.shape[-1])).reshape(-1, mean.shape[-1])[:batch]
            mean = mean + jnp.exp(0.5 * logvar) * noise
        return *self._outcome(state, mean), disagreement

    def step_rows(self, state: jax.Array, action: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """`step` with one key per row: each row steps exactly as a batch of one with its key.

        Every elite predicts every row and each row keeps its own elite's prediction, so
        this costs all the elites' forward passes, as `uncertainty` does.
        """
        batch = state.shape[0]
        elites = self.config.elites
        inputs = self._inputs(state.reshape(batch, -1), action)
        mean, logvar = self._predict_every_elite(inputs)
        pairs = jax.vmap(jax.random.split)(keys)
        # As in `step` for a batch of one: the row is in the first group, served by elite `shift`.
        shift = jax.vmap(lambda key: jax.random.randint(key, (), 0, elites))(pairs[:, 0])
        rows = jnp.arange(batch)
        mean, logvar = mean[shift, rows], logvar[shift, rows]
        if self.config.dream_noise:
            noise = jax.vmap(lambda key: jax.random.normal(key, (elites, 1, mean.shape[-1]))[0, 0])(pairs[:, 1])
            mean = mean + jnp.exp(0.5 * logvar) * noise
        return self._outcome(state, mean)

    def _outcome(self, state: jax.Array, mean: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Next state, reward and continue probability from the normalised predictions ``[B, out]``."""
        batch = state.shape[0]
        prediction = self.target_norm.denormalize(mean)
        next_obs = state + prediction[:, : self._obs_size].reshape(state.shape)
        reward = prediction[:, self._obs_size]
        # The classifier trains with terminal steps up-weighted (for balanced accuracy);
        # shifting its logit by log(weight) undoes that prior, so dreams see calibrated odds.
        calibrated = self._termination_logit(next_obs.reshape(batch, -1)) - jnp.log(self.terminal_weight[...])
        continue_prob = jax.nn.sigmoid(-calibrated)
        return next_obs, reward, continue_prob

    def features(self, state: jax.Array) -> jax.Array:
        return state.reshape(state.shape[0], -1)

    def decode(self, state: jax.Array) -> jax.Array:
        return state

    def uncertainty(self, state: jax.Array, action: jax.Array) -> jax.Array:
        """Spread of the elites' predicted next observations, in normalised units.

        The standard deviation across elites per dimension, then its Euclidean norm over
        dimensions: zero where the elites agree, large off the data.
        """
        batch = state.shape[0]
        mean, _ = self._predict_every_elite(self._inputs(state.reshape(batch, -1), action))
        return self._disagreement(mean)

    def _disagreement(self, elite_means: jax.Array) -> jax.Array:
        """``[B]``: the elites' predicted observation changes ``[elites, B, out]`` spread, per row."""
        return jnp.linalg.norm(elite_means[..., : self._obs_size].std(axis=0), axis=-1)

    # -- action encoding ----------------------------------------------------------------

    def encode_action(self, action: jax.Array) -> jax.Array:
        """Actions as model inputs: one-hot for discrete, float for continuous."""
        if self.discrete_actions:
            return jax.nn.one_hot(jnp.asarray(action).astype(jnp.int32) - self.action_start, self.action_size)
        return jnp.asarray(action, dtype=jnp.float32)

    # -- internals ----------------------------------------------------------------------

    def _inputs(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        encoded = self.encode_action(action).reshape(obs.shape[0], self.action_size)
        return jnp.concatenate([self.obs_norm.normalize(obs), self.action_norm.normalize(encoded)], axis=-1)

    def _transitions(self, batch: SequenceBatch):
        """Flatten a sequence batch into normalised inputs and targets, one row per step."""
        obs = batch.obs.reshape(*batch.obs.shape[:2], -1).astype(jnp.float32)
        steps = batch.reward.size
        before = obs[:, :-1].reshape(steps, -1)
        after = obs[:, 1:].reshape(steps, -1)
        action = batch.action.reshape(steps, *batch.action.shape[2:])
        inputs = self._inputs(before, action)
        targets = self.target_norm.normalize(
            jnp.concatenate([after - before, batch.reward.reshape(steps, 1)], axis=-1)
        )
        return inputs, targets, after, batch.terminated.reshape(steps), batch.mask.reshape(steps)

    @staticmethod
    def _split_members(values: jax.Array, members: int) -> jax.Array:
        return values.reshape(members, values.shape[0] // members, *values.shape[1:])

    def _predict_every_elite(self, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Every elite's mean and log-variance ``[elites, B, out]`` for ``inputs [B, in]``.

        Large batches go through `ELITE_ROWS` rows at a time: all the elites' activations
        of a whole large batch (elites x B x hidden) outgrow the caches, and the pass then
        runs slower than it does in parts.
        """
        elites, batch = self.config.elites, inputs.shape[0]
        every = lambda x: self._predict(jnp.broadcast_to(x, (elites, *x.shape)), self.elite_members[...])  # noqa: E731
        if batch <= ELITE_ROWS:
            return every(inputs)
        parts = -(-batch // ELITE_ROWS)
        padded = jnp.pad(inputs, ((0, parts * ELITE_ROWS - batch), (0, 0))).reshape(parts, ELITE_ROWS, -1)
        mean, logvar = jax.lax.map(every, padded)  # [parts, elites, rows, out]
        whole = lambda x: x.swapaxes(0, 1).reshape(elites, parts * ELITE_ROWS, -1)[:, :batch]  # noqa: E731
        return whole(mean), whole(logvar)

    def _predict(self, x: jax.Array, members: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """Mean and bounded log-variance, normalised, for ``x [n, B, in]``.

        ``members [n]`` picks which member serves each leading slice; None means all.
        """
        def weights(layer: EnsembleLinear):
            if members is None:
                return layer.kernel[...], layer.bias[...]
            return layer.kernel[...][members], layer.bias[...][members]

        for layer in self.hidden:
            x = jax.nn.silu(apply_ensemble_linear(*weights(layer), x))
        out = apply_ensemble_linear(*weights(self.head), x)
        mean, raw_logvar = jnp.split(out, 2, axis=-1)
        logvar = soft_bound(raw_logvar, self.min_logvar[...], self.max_logvar[...])
        return mean, logvar

    def _termination_logit(self, next_obs: jax.Array) -> jax.Array:
        x = self.obs_norm.normalize(next_obs)
        for layer in self.termination[:-1]:
            x = jax.nn.silu(layer(x))
        return self.termination[-1](x)[..., 0]

    def _termination_loss(self, next_obs: jax.Array, terminated: jax.Array, mask: jax.Array) -> jax.Array:
        logits = self._termination_logit(next_obs)
        return weighted_binary_cross_entropy(logits, terminated, mask, self.terminal_weight[...])
