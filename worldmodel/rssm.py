"""A recurrent state-space model (RSSM, as in PlaNet and DreamerV3) for vector and camera observations.

The state has two parts: a deterministic memory ``deter`` (the hidden state of a GRU that
reads the previous latent and action) and a stochastic latent ``stoch``, ``latents``
categorical variables of ``classes`` classes each, held as one-hot vectors. Two
distributions over the latent are learned:

- the posterior, from ``deter`` and an embedding of the real observation: filtering
  (`initial_state`, `observe`) and training use it;
- the prior, from ``deter`` alone: dreams (`step`) sample from it. It is a small
  ensemble of heads whose mixture is sampled, and whose disagreement is `uncertainty`.

Vector observations are encoded and reconstructed in symlog space by dense layers;
camera frames (observations ``[H, W, C]``, values 0..255) by the convolutional encoder
and decoder of `worldmodel.conv`, in centred pixel units, their squared error summed over
pixels. Rewards are two-hot categoricals over symlog bins (`worldmodel.twohot`), and a
Bernoulli head predicts whether the episode goes on. Both categorical distributions are
mixed with 1% uniform so no class is ever impossible, and samples carry straight-through
gradients, so a policy can be trained through the dynamics.

The objective (`loss`) filters the posterior through each window with one `lax.scan`
over time and adds reconstruction, reward and continue losses to DreamerV3's balanced
KL: the prior is pulled towards the (fixed) posterior with weight ``dynamics_weight``,
the posterior towards the (fixed) prior with ``representation_weight``, each clipped
below at ``free_bits`` nats so a KL already small is left alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from tasks.config import config, option
from tasks.episodes import Episodes
from tasks.normalizer import Normalizer, Statistic
from tasks.sampler import SequenceBatch
from worldmodel.conv import FrameDecoder, FrameEncoder, centred_to_frames, frames_to_centred
from worldmodel.layers import EnsembleLinear
from worldmodel.losses import weighted_binary_cross_entropy
from worldmodel.twohot import symexp, symlog, symlog_bins, twohot_decode, twohot_loss

REWARD_BINS = 255
FRAME_MAX_UPDATES = 2000  # fitting updates on camera frames unless told otherwise (see `fit_defaults`)


@dataclasses.dataclass(frozen=True)
class RSSMSizes:
    """The widths a size preset sets.

    Attributes:
        deter: units of the GRU's deterministic state.
        hidden: units of every hidden layer (and of the observation embedding).
        latents: categorical variables in the stochastic state.
        classes: classes of each categorical variable.
        layers: hidden layers of the encoder, the decoder and the reward and continue heads.
        depth: channels of the first convolution of the frame encoder (doubled at each
            halving of the frame) and of the frame decoder's last hidden layer.
    """

    deter: int
    hidden: int
    latents: int
    classes: int
    layers: int
    depth: int


# One field scales everything, as DreamerV3's size presets do; "tiny" is for CPU and
# tests, the others for an accelerator.
SIZE_PRESETS: dict[str, RSSMSizes] = {
    "tiny": RSSMSizes(deter=64, hidden=64, latents=8, classes=8, layers=1, depth=16),
    "small": RSSMSizes(deter=256, hidden=256, latents=16, classes=16, layers=2, depth=32),
    "medium": RSSMSizes(deter=1024, hidden=512, latents=32, classes=16, layers=2, depth=48),
    "large": RSSMSizes(deter=2048, hidden=768, latents=32, classes=32, layers=3, depth=64),
}


@config
class RSSMConfig:
    """Size and objective settings of the recurrent latent model.

    Attributes:
        size: the preset of every width (`SIZE_PRESETS`): tiny, small, medium or large.
        free_bits: KL (nats, summed over latents) below which neither KL term pulls.
        dynamics_weight: weight of the KL that trains the prior towards the posterior.
        representation_weight: weight of the KL that keeps the posterior near the prior.
        unimix: share of the uniform distribution mixed into every categorical.
        prior_heads: prior heads whose disagreement is the model's uncertainty.
    """

    size: Literal["tiny", "small", "medium", "large"] = option("tiny", help="width preset (tiny for a CPU, "
                                                                             "larger ones for an accelerator)")
    free_bits: float = option(1.0, min=0, help="KL below this many nats is not penalised")
    dynamics_weight: float = option(0.5, min=0, help="weight of KL(stop-grad posterior || prior)")
    representation_weight: float = option(0.1, min=0, help="weight of KL(posterior || stop-grad prior)")
    unimix: float = option(0.01, min=0, max=0.99, help="uniform share mixed into the latent distributions")
    prior_heads: int = option(3, min=1, help="prior heads; their disagreement is the uncertainty")

    @property
    def sizes(self) -> RSSMSizes:
        return SIZE_PRESETS[self.size]


@struct.dataclass
class RSSMState:
    """The model's state for a batch.

    Attributes:
        deter: ``[B, deter]`` the GRU's state.
        stoch: ``[B, latents, classes]`` the stochastic latent, one one-hot per variable.
    """

    deter: jax.Array
    stoch: jax.Array


class RSSMModel(nnx.Module):
    """The recurrent latent world model; its state is an `RSSMState`.

    Observations of shape ``[H, W, C]`` are camera frames (`reads_frames`), read by
    convolutions; any other shape is a vector, flattened.
    """

    kind = "rssm"
    context_length = 8  # real steps filtered before a fidelity rollout, so the memory holds the motion

    def __init__(
        self,
        observation_shape: tuple[int, ...],
        action_size: int,
        discrete_actions: bool,
        config: RSSMConfig,
        rngs: nnx.Rngs,
        action_start: int = 0,
    ):
        self.observation_shape = tuple(observation_shape)
        self.action_size = action_size
        self.discrete_actions = discrete_actions
        self.action_start = action_start  # Discrete(n, start=s): actions s..s+n-1 are one-hot 0..n-1
        self.config = config
        sizes = config.sizes
        self._obs_size = math.prod(self.observation_shape)
        self.reads_frames = len(self.observation_shape) == 3
        stoch_size = sizes.latents * sizes.classes
        feature_size = sizes.deter + stoch_size

        # Layers are made in a fixed order: it sets which random numbers each one starts from.
        if self.reads_frames:
            self.encoder = FrameEncoder(self.observation_shape, sizes.depth, rngs)
            embedding_size = self.encoder.embedding_size
        else:
            self.encoder = NormedMLP(self._obs_size, sizes.hidden, sizes.layers, rngs)
            embedding_size = sizes.hidden
        self.transition_input = NormedMLP(stoch_size + action_size, sizes.hidden, 1, rngs)
        self.gru = LayerNormGRUCell(sizes.hidden, sizes.deter, rngs)
        self.posterior = NormedMLP(sizes.deter + embedding_size, sizes.hidden, 1, rngs)
        self.posterior_out = nnx.Linear(sizes.hidden, stoch_size, rngs=rngs)
        heads = config.prior_heads
        self.prior_hidden = EnsembleLinear(heads, sizes.deter, sizes.hidden, rngs)
        self.prior_norm = nnx.LayerNorm(sizes.hidden, rngs=rngs)
        self.prior_out = EnsembleLinear(heads, sizes.hidden, stoch_size, rngs)
        if self.reads_frames:
            self.decoder = FrameDecoder(feature_size, self.observation_shape, sizes.depth, rngs)
        else:
            self.decoder = NormedMLP(feature_size, sizes.hidden, sizes.layers, rngs)
            self.decoder_out = nnx.Linear(sizes.hidden, self._obs_size, rngs=rngs)
        self.reward_head = NormedMLP(feature_size, sizes.hidden, sizes.layers, rngs)
        # Zero logits predict a reward of exactly 0 at the start, instead of a random one.
        self.reward_out = nnx.Linear(sizes.hidden, REWARD_BINS, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
        self.continue_head = NormedMLP(feature_size, sizes.hidden, sizes.layers, rngs)
        self.continue_out = nnx.Linear(sizes.hidden, 1, rngs=rngs)
        self.action_norm = Normalizer(action_size)
        self.terminal_weight = Statistic(jnp.ones(()))

    # -- statistics from data -------------------------------------------------------

    @property
    def fit_defaults(self) -> dict:
        """`worldmodel.fit`'s settings where FitConfig leaves them None.

        Windows of 32 steps so the memory learns from what came before, 16 per update as
        DreamerV3 takes (its 64 steps are twice a CPU's cost). A window of camera frames
        costs a few hundred times one of vectors: fewer updates, each a larger step, keep
        a fit on 30 Pendulum episodes within 30 minutes on two CPU cores.
        """
        if self.reads_frames:
            return {"batch_size": 16, "sequence_length": 32, "learning_rate": 6e-4, "max_updates": FRAME_MAX_UPDATES}
        return {"batch_size": 16, "sequence_length": 32, "learning_rate": 3e-4, "max_updates": 20000}

    def fit_statistics(self, episodes: Episodes) -> None:
        """Set the action normaliser and the termination class weight from training episodes.

        Observations need no statistics: vectors enter and leave the model in symlog
        space, frames in centred pixel units.
        """
        self.action_norm.fit(np.asarray(self.encode_action(jnp.asarray(episodes.actions))))
        terminal = int(episodes.terminations.sum())
        # As in the ensemble: terminal steps are rare, so they are up-weighted for
        # balanced accuracy, and `step` removes the weight's prior again.
        ratio = (episodes.num_steps - terminal) / terminal if terminal else 1.0
        self.terminal_weight.set_value(jnp.asarray(min(max(ratio, 1.0), 1000.0), dtype=jnp.float32))

    # -- the world-model interface ------------------------------------------------------

    def loss(self, batch: SequenceBatch, key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Reconstruction, reward, continue and balanced KL losses on posterior samples.

        Args:
            batch: windows of real steps; the first observation of each starts its filter.
            key: randomness of the latent samples; by default one folded from the batch's
                contents (the interface's ``loss(batch)`` takes no key, and a batch drawn
                afresh every update gives fresh draws).
        """
        if key is None:
            key = _key_from_contents(batch)
        return self._objective(batch, key)

    def validation_loss(self, batch: SequenceBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
        """`loss` with each posterior's mode instead of a sample: the same batch always scores the same."""
        return self._objective(batch, None)

    def initial_state(self, obs: jax.Array) -> RSSMState:
        """The posterior's mode for a first observation, from an empty memory (zero ``deter``)."""
        embedding = self._embed(obs)
        deter = jnp.zeros((embedding.shape[0], self.config.sizes.deter), embedding.dtype)
        return RSSMState(deter, mode_one_hot(self._posterior_log_probs(deter, embedding)))

    def observe(self, state: RSSMState, action: jax.Array, next_obs: jax.Array) -> RSSMState:
        """One GRU step, then the posterior's mode given the real ``next_obs``."""
        deter = self._transition(state, action)
        return RSSMState(deter, mode_one_hot(self._posterior_log_probs(deter, self._embed(next_obs))))

    def step(self, state: RSSMState, action: jax.Array, key: jax.Array) -> tuple[RSSMState, jax.Array, jax.Array]:
        """One GRU step, then a latent drawn from the prior heads' mixture; its reward and continue probability."""
        deter = self._transition(state, action)
        stoch = sample_one_hot(mixture_log_probs(self._prior_log_probs(deter)), key)
        next_state = RSSMState(deter, stoch)
        features = self.features(next_state)
        reward = twohot_decode(self.reward_out(self.reward_head(features)), symlog_bins(REWARD_BINS))
        # The head trains with terminal steps up-weighted (balanced accuracy); adding
        # log(weight) to the continue logit undoes that prior, so dreams see calibrated odds.
        continue_prob = jax.nn.sigmoid(self._continue_logit(features) + jnp.log(self.terminal_weight[...]))
        return next_state, reward, continue_prob

    def features(self, state: RSSMState) -> jax.Array:
        """``[B, deter + latents * classes]``: the memory and the flattened latent."""
        return jnp.concatenate([state.deter, state.stoch.reshape(state.stoch.shape[0], -1)], axis=-1)

    def decode(self, state: RSSMState) -> jax.Array:
        """The predicted observation ``[B, *observation_shape]``: for frames, float32
        pixel values in ``[0, 255]`` (not rounded), for vectors the task's values."""
        features = self.features(state)
        if self.reads_frames:
            return centred_to_frames(self.decoder(features))
        predicted = symexp(self.decoder_out(self.decoder(features)))
        return predicted.reshape(features.shape[0], *self.observation_shape)

    def uncertainty(self, state: RSSMState, action: jax.Array) -> jax.Array:
        """How much the prior heads disagree about the next latent, ``[B]``.

        Each class probability's standard deviation across heads, summed over the classes
        of a variable and averaged over variables: zero when the heads agree, about 1 when
        each head is sure of a different class.
        """
        probs = jnp.exp(self._prior_log_probs(self._transition(state, action)))
        return probs.std(axis=0).sum(axis=-1).mean(axis=-1)

    # -- action encoding ----------------------------------------------------------------

    def encode_action(self, action: jax.Array) -> jax.Array:
        """Actions as model inputs: one-hot for discrete, float for continuous."""
        if self.discrete_actions:
            return jax.nn.one_hot(jnp.asarray(action).astype(jnp.int32) - self.action_start, self.action_size)
        return jnp.asarray(action, dtype=jnp.float32)

    # -- internals ----------------------------------------------------------------------

    def _objective(self, batch: SequenceBatch, key: jax.Array | None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The training objective; ``key`` None takes posterior modes instead of samples."""
        batch_size, steps = batch.reward.shape
        sizes = self.config.sizes
        embeddings = self._embed(batch.obs)
        actions = self._action_inputs(batch.action.reshape(batch_size * steps, *batch.action.shape[2:]))
        actions = actions.reshape(batch_size, steps, self.action_size)

        def draw(log_probs, draw_key):
            return mode_one_hot(log_probs) if draw_key is None else sample_one_hot(log_probs, draw_key)

        first_key, step_keys = None, None
        if key is not None:
            first_key, step_keys = jax.random.split(key)
            step_keys = jax.random.split(step_keys, steps)
        first_deter = jnp.zeros((batch_size, sizes.deter), jnp.float32)
        first_stoch = draw(self._posterior_log_probs(first_deter, embeddings[:, 0]), first_key)

        def filter_step(state, inputs):
            action, embedding, step_key = inputs
            deter = self._transition_inputs(state, action)
            posterior = self._posterior_log_probs(deter, embedding)
            next_state = RSSMState(deter, draw(posterior, step_key))
            return next_state, (next_state, posterior)

        # Time-major for the scan; steps past an episode's end are filtered too, then masked.
        _, (filtered, posteriors) = jax.lax.scan(
            filter_step,
            RSSMState(first_deter, first_stoch),
            (jnp.swapaxes(actions, 0, 1), jnp.swapaxes(embeddings[:, 1:], 0, 1), step_keys),
        )
        mask = batch.mask.T.astype(jnp.float32)  # [T, B]

        # Every state's observation: the first one, then one per step.
        deters = jnp.concatenate([first_deter[None], filtered.deter], axis=0)
        stochs = jnp.concatenate([first_stoch[None], filtered.stoch], axis=0)
        features = jnp.concatenate([deters, stochs.reshape(steps + 1, batch_size, -1)], axis=-1)
        squared = self._reconstruction_error(features, jnp.swapaxes(batch.obs, 0, 1))
        # A window's first observation is real where its first step is.
        obs_weights = jnp.concatenate([mask[:1], mask], axis=0)
        reconstruction_loss = _masked_mean(squared, obs_weights)

        # The state reached by a step predicts that step's reward and whether it ended.
        reached = features[1:]
        reward_logits = self.reward_out(self.reward_head(reached))
        reward_loss = _masked_mean(twohot_loss(reward_logits, batch.reward.T, symlog_bins(REWARD_BINS)), mask)
        continue_loss = weighted_binary_cross_entropy(
            -self._continue_logit(reached), batch.terminated.T, mask, self.terminal_weight[...]
        )

        head_priors = self._prior_log_probs(filtered.deter)  # [heads, T, B, latents, classes]
        fixed_posterior = jax.lax.stop_gradient(posteriors)
        dynamics_kl = categorical_kl(fixed_posterior[None], head_priors)  # [heads, T, B]
        dynamics = _masked_mean(jnp.maximum(dynamics_kl, self.config.free_bits).mean(axis=0), mask)
        prior = mixture_log_probs(head_priors)
        representation_kl = categorical_kl(posteriors, jax.lax.stop_gradient(prior))
        representation = _masked_mean(jnp.maximum(representation_kl, self.config.free_bits), mask)

        total = (reconstruction_loss + reward_loss + continue_loss
                 + self.config.dynamics_weight * dynamics + self.config.representation_weight * representation)
        return total, {
            "reconstruction": reconstruction_loss,
            "reward": reward_loss,
            "continue": continue_loss,
            "kl": _masked_mean(representation_kl, mask),
            "kl_dynamics": dynamics,
            "kl_representation": representation,
        }

    def _embed(self, obs: jax.Array) -> jax.Array:
        """``[..., *observation_shape] -> [..., embedding]``: frames through the convolutions
        (as they come, uint8 or float), vectors in symlog space."""
        if self.reads_frames:
            return self.encoder(obs)
        leading = obs.shape[: obs.ndim - len(self.observation_shape)]
        flat = jnp.asarray(obs, dtype=jnp.float32).reshape(*leading, self._obs_size)
        return self.encoder(symlog(flat))

    def _reconstruction_error(self, features: jax.Array, obs: jax.Array) -> jax.Array:
        """Squared error of the decoded ``features [..., F]`` against ``obs [..., *observation_shape]``,
        summed over the observation: ``[...]``. Frames in centred pixel units, vectors in symlog space."""
        leading = features.shape[:-1]
        if self.reads_frames:
            difference = self.decoder(features) - frames_to_centred(obs)
        else:
            target = symlog(jnp.asarray(obs, dtype=jnp.float32).reshape(*leading, self._obs_size))
            difference = self.decoder_out(self.decoder(features)) - target
        return jnp.sum(difference.reshape(*leading, -1) ** 2, axis=-1)

    def _action_inputs(self, action: jax.Array) -> jax.Array:
        encoded = self.encode_action(action).reshape(-1, self.action_size)
        return self.action_norm.normalize(encoded)

    def _transition(self, state: RSSMState, action: jax.Array) -> jax.Array:
        """The next ``deter`` after ``action`` (as the task gives it)."""
        return self._transition_inputs(state, self._action_inputs(action))

    def _transition_inputs(self, state: RSSMState, action_inputs: jax.Array) -> jax.Array:
        """The next ``deter`` after an encoded, normalised action ``[B, action_size]``."""
        stoch = state.stoch.reshape(state.stoch.shape[0], -1)
        return self.gru(self.transition_input(jnp.concatenate([stoch, action_inputs], axis=-1)), state.deter)

    def _posterior_log_probs(self, deter: jax.Array, embedding: jax.Array) -> jax.Array:
        logits = self.posterior_out(self.posterior(jnp.concatenate([deter, embedding], axis=-1)))
        return self._latent_log_probs(logits)

    def _prior_log_probs(self, deter: jax.Array) -> jax.Array:
        """Each head's log-probabilities ``[heads, *deter.shape[:-1], latents, classes]``."""
        leading = deter.shape[:-1]
        flat = deter.reshape(1, -1, deter.shape[-1])
        heads = self.config.prior_heads
        # EnsembleLinear wants the head axis first: every head reads the same states.
        hidden = jax.nn.silu(self.prior_norm(self.prior_hidden(jnp.broadcast_to(flat, (heads, *flat.shape[1:])))))
        logits = self.prior_out(hidden).reshape(heads, *leading, -1)
        return self._latent_log_probs(logits)

    def _latent_log_probs(self, logits: jax.Array) -> jax.Array:
        sizes = self.config.sizes
        logits = logits.reshape(*logits.shape[:-1], sizes.latents, sizes.classes)
        return unimix_log_probs(logits, self.config.unimix)

    def _continue_logit(self, features: jax.Array) -> jax.Array:
        return self.continue_out(self.continue_head(features))[..., 0]


# -- layers ----------------------------------------------------------------------------


class NormedMLP(nnx.Module):
    """Dense layers, each followed by LayerNorm and SiLU (DreamerV3's hidden layers); any leading axes."""

    def __init__(self, in_features: int, width: int, layers: int, rngs: nnx.Rngs):
        sizes = [in_features] + [width] * layers
        # No bias: the LayerNorm right after has its own.
        self.linears = nnx.List([nnx.Linear(a, b, use_bias=False, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in sizes[1:]])

    def __call__(self, x: jax.Array) -> jax.Array:
        for linear, norm in zip(self.linears, self.norms):
            x = jax.nn.silu(norm(linear(x)))
        return x


class LayerNormGRUCell(nnx.Module):
    """A GRU cell whose three gates come from one normalised dense layer (DreamerV3)."""

    def __init__(self, in_features: int, size: int, rngs: nnx.Rngs):
        self.gates = nnx.Linear(in_features + size, 3 * size, use_bias=False, rngs=rngs)
        self.norm = nnx.LayerNorm(3 * size, rngs=rngs)

    def __call__(self, inputs: jax.Array, state: jax.Array) -> jax.Array:
        gates = self.norm(self.gates(jnp.concatenate([inputs, state], axis=-1)))
        reset, candidate, update = jnp.split(gates, 3, axis=-1)
        candidate = jnp.tanh(jax.nn.sigmoid(reset) * candidate)
        # Shifted by -1 so a fresh cell leans on its memory, which keeps gradients alive over time.
        update = jax.nn.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * state


# -- categorical latents: pure functions ---------------------------------------------------


def unimix_log_probs(logits: jax.Array, unimix: float) -> jax.Array:
    """Log-probabilities of ``softmax(logits)`` mixed with ``unimix`` of the uniform, over the last axis."""
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.log((1.0 - unimix) * probs + unimix / logits.shape[-1])


def mixture_log_probs(head_log_probs: jax.Array) -> jax.Array:
    """Log-probabilities of the equal-weight mixture of the heads on the leading axis."""
    return jax.nn.logsumexp(head_log_probs, axis=0) - jnp.log(head_log_probs.shape[0])


def sample_one_hot(log_probs: jax.Array, key: jax.Array) -> jax.Array:
    """One-hot draws from categoricals over the last axis, with straight-through gradients.

    The value is exactly one-hot; the gradient is that of the probabilities.
    """
    index = jax.random.categorical(key, log_probs, axis=-1)
    return _straight_through(jax.nn.one_hot(index, log_probs.shape[-1], dtype=log_probs.dtype), log_probs)


def mode_one_hot(log_probs: jax.Array) -> jax.Array:
    """The most probable class of each categorical as a one-hot, with straight-through gradients."""
    index = jnp.argmax(log_probs, axis=-1)
    return _straight_through(jax.nn.one_hot(index, log_probs.shape[-1], dtype=log_probs.dtype), log_probs)


def categorical_kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """``KL(p || q)`` of ``[..., latents, classes]`` categoricals, summed over latents: ``[...]``."""
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=(-2, -1))


def _straight_through(one_hot: jax.Array, log_probs: jax.Array) -> jax.Array:
    probs = jnp.exp(log_probs)
    # Bracketed so the value is exactly the one-hot: (one_hot + probs) - probs may round.
    return one_hot + (probs - jax.lax.stop_gradient(probs))


def _masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _key_from_contents(batch: SequenceBatch) -> jax.Array:
    """A key that changes with the batch: its observations' and actions' sums, bit for bit."""
    total = jnp.sum(batch.obs.astype(jnp.float32)) + jnp.sum(batch.action.astype(jnp.float32))
    return jax.random.fold_in(jax.random.key(0), jax.lax.bitcast_convert_type(total, jnp.uint32))
