"""A policy on held-out real episodes: its real return, the behaviour's, and the dream's.

For each held-out episode the real environment is reset with the episode's recorded
seed, so the policy starts exactly where the behaviour did; the world model dreams the
same policy from the episode's first observation. The dream-to-real gap says how far
the model's verdict on this policy can be trusted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dreamer.confidence import mean_with_interval, ratio_with_interval
from dreamer.imagination import imagine
from policies.acting import ActorPolicy
from policies.networks import Actor
from tasks.episodes import UNKNOWN_SEED, Episodes
from tasks.errors import InputError
from tasks.recording import BehaviourPolicy, record_episodes
from tasks.registry import Task


def dream_returns(world_model, actor: Actor, start_observations: np.ndarray, horizon: int, key: jax.Array,
                  samples: int = 8) -> np.ndarray:
    """Expected undiscounted return of the deterministic actor in the model, per start.

    Each start is dreamed ``samples`` times (the model samples its dynamics) over
    ``horizon`` steps; step t's reward counts with the probability that the dream is
    still running, the product of the continue probabilities before it.
    """
    starts = np.repeat(np.asarray(start_observations, np.float32), samples, axis=0)
    model_graph, model_state = nnx.split(world_model)
    actor_graph, actor_state = nnx.split(actor)
    totals = _dream_totals(model_graph, actor_graph, model_state, actor_state, jnp.asarray(starts), key, horizon)
    return np.asarray(totals).reshape(len(start_observations), samples).mean(axis=1)


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _dream_totals(model_graph, actor_graph, model_state, actor_state, starts, key, horizon):
    model = nnx.merge(model_graph, model_state)
    actor = nnx.merge(actor_graph, actor_state)

    def policy(features, _key):
        return actor.mode(features), jnp.zeros(features.shape[0])

    dream = imagine(model, policy, model.initial_state(starts), horizon, key)
    running = jnp.cumprod(jnp.concatenate([jnp.ones_like(dream.continues[:1]), dream.continues[:-1]]), axis=0)
    return jnp.sum(running * dream.rewards, axis=0)


def check_replayable(episodes: Episodes, source) -> None:
    """Raise `InputError` naming ``source`` unless every episode has its reset seed."""
    if (episodes.seeds == UNKNOWN_SEED).any():
        raise InputError(source, "has held-out episodes without a recorded reset seed; they cannot be replayed")


def evaluate_on_heldout(task: Task, actor: Actor, heldout: Episodes, world_model=None, seed: int = 0,
                        acting: BehaviourPolicy | None = None) -> dict:
    """Per-episode and summary figures of ``actor`` on the held-out episodes.

    Args:
        task: the real environment the episodes were recorded in.
        actor: the policy, acting deterministically.
        heldout: the held-out episodes (their reset seeds must be recorded).
        world_model: a model of the interface, for the dream-predicted returns (optional).
        seed: seed of the model's sampling and of the bootstrap intervals.
        acting: how the actor acts in the real environment (default: on observations;
            an actor on a model's latent state acts through that model, which must then
            be ``world_model`` too).

    Returns:
        ``{"episodes": [{"seed", "behaviour_return", "real_return", "dream_return"}], "summary": {...}}``.
    """
    check_replayable(heldout, "the held-out episodes")
    seeds = heldout.seeds
    acting = acting or ActorPolicy(actor)
    real = record_episodes(task, acting, seeds, num_envs=min(len(seeds), 16), progress=False).returns()
    behaviour = heldout.returns()
    dream = None
    if world_model is not None:
        dream = dream_returns(world_model, actor, heldout.first_observations(), task.horizon, jax.random.key(seed))
    episodes = [
        {"seed": int(s), "behaviour_return": float(b), "real_return": float(r),
         "dream_return": None if dream is None else float(d)}
        for s, b, r, d in zip(seeds, behaviour, real, dream if dream is not None else [None] * len(seeds))
    ]
    return {"episodes": episodes, "summary": summarise_heldout(behaviour, real, dream, seed)}


def summarise_heldout(behaviour: np.ndarray, real: np.ndarray, dream: np.ndarray | None, seed: int = 0) -> dict:
    """Means with 95% bootstrap intervals: real return, improvement, dream-to-real gap
    (absolute, and relative: the mean absolute gap over the mean absolute real return)."""
    mean_real, real_ci = mean_with_interval(real, seed=seed)
    improvement, improvement_ci = mean_with_interval(real - behaviour, seed=seed)
    summary = {
        "episodes": int(len(real)),
        "mean_real_return": mean_real,
        "real_return_ci95": real_ci,
        "mean_behaviour_return": float(np.mean(behaviour)),
        "improvement": improvement,
        "improvement_ci95": improvement_ci,
        "mean_dream_return": None,
        "gap_abs_mean": None, "gap_abs_ci95": None,
        "gap_relative_mean": None, "gap_relative_ci95": None,
    }
    if dream is not None:
        gap = np.abs(dream - real)
        summary["mean_dream_return"] = float(np.mean(dream))
        summary["gap_abs_mean"], summary["gap_abs_ci95"] = mean_with_interval(gap, seed=seed)
        # The mean gap over the mean size of the real return: a per-episode ratio would
        # explode on an episode whose real return is near zero.
        summary["gap_relative_mean"], summary["gap_relative_ci95"] = ratio_with_interval(gap, np.abs(real), seed=seed)
    return summary
