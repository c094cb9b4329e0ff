"""A trained actor as a behaviour policy for the real environment.

Evaluation acts deterministically (the actor's mode). Recording and deployment may add
exploration: the actor's own sampling, or the mode with Gaussian noise on continuous
actions (sigma in units of half the action range, clipped to the bounds) and
epsilon-greedy on discrete ones.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies.networks import Actor


class ActorPolicy:
    """Calls a jitted actor on a batch of observations.

    Args:
        actor: the trained actor.
        mode: ``deterministic`` (the mode), ``sample`` (the actor's own distribution), or
            ``noisy`` (the mode plus ``noise``).
        noise: Gaussian sigma (continuous) or epsilon (discrete) for ``noisy``.
    """

    def __init__(self, actor: Actor, mode: str = "deterministic", noise: float = 0.0):
        if mode not in ("deterministic", "sample", "noisy"):
            raise ValueError(f"unknown acting mode {mode}")
        self.mode, self.noise = mode, noise
        self.discrete = actor.discrete
        self.action_size = actor.action_size
        self.action_start = actor.action_start
        self.action_shape = () if actor.discrete else (actor.action_size,)
        self.action_dtype = np.int64 if actor.discrete else np.float32
        if not actor.discrete:
            self.low = np.asarray(actor.action_low[...])
            self.high = np.asarray(actor.action_high[...])
        self._graph, self._state = nnx.split(actor)

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        key = jax.random.key(int(rng.integers(2**31)))
        observations = jnp.asarray(observations, dtype=jnp.float32)
        actions = np.asarray(_act(self._graph, self._state, observations, key, self.mode == "sample"))
        if self.mode != "noisy" or self.noise <= 0:
            return actions
        if self.discrete:
            explore = rng.random(len(actions)) < self.noise
            random_actions = self.action_start + rng.integers(0, self.action_size, len(actions))
            return np.where(explore, random_actions, actions)
        noisy = actions + rng.normal(0.0, self.noise, actions.shape) * 0.5 * (self.high - self.low)
        return np.clip(noisy, self.low, self.high).astype(actions.dtype)


# One jitted function for every ActorPolicy: policies of the same shape (a new one each
# round or evaluation) reuse its compiled program instead of compiling their own.
@functools.partial(jax.jit, static_argnums=(0, 4))
def _act(graph, state, observations, key, sample: bool):
    actor = nnx.merge(graph, state)
    if sample:
        return actor.sample(observations, key)[0]
    return actor.mode(observations)
