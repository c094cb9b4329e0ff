"""One round of learning on the job: refit the world model warm, train the policy further in its dreams.

A round takes every episode learned from so far (the new ones included), fits the world
model on their training split starting from the weights it has, and continues the
policy's training in the refitted model's dreams, from start states drawn from the
training episodes. It neither records nor evaluates: `dreamer run` deploys the policy
before a round and measures it through the protocol after; a round from trace files
alone calls the same function, so the two can never drift apart.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Protocol

import jax
import orbax.checkpoint as ocp
from flax import nnx

from dreamer.actor_critic import DreamConfig
from dreamer.dream_losses import lowest_halt_reward
from dreamer.dreaming import PolicyInDreams
from dreamer.offline import halting
from tasks.episodes import Episodes
from tasks.errors import InputError
from tasks.registry import Task
from tasks.splits import SplitFractions, fitting_episodes
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fit import FitConfig, FitResult, fit_world_model
from worldmodel.rssm import RSSMConfig
from worldmodel.saving import build_model_for_spaces
from worldmodel.sharding import data_mesh


class RoundSettings(Protocol):
    """What a round is run with (fields of `RunConfig` and of every command that learns in rounds)."""

    model: str  # "ensemble" or "rssm"
    ensemble: EnsembleConfig
    rssm: RSSMConfig
    fit: FitConfig
    dream: DreamConfig
    dream_updates: int
    devices: int | None  # devices the fit and the dreams split their batches over (None: all)
    split_seed: int
    seed: int

    @property
    def fractions(self) -> SplitFractions: ...


class Round(NamedTuple):
    """A round's outcome: the model and policy to carry on with, and what the round measured.

    Attributes:
        model: the refitted world model.
        policy: the policy, trained further in the model's dreams.
        halt_reward: HALT's reward, fixed by the first round's training data (None
            where halting is off or its reward was set).
        fit: the refit's result (updates, validation loss).
        dream: the dream trainer's metrics (``dream_return`` among them).
    """

    model: object
    policy: PolicyInDreams
    halt_reward: float | None
    fit: FitResult
    dream: dict[str, float]


def learn_round(settings: RoundSettings, task: Task, episodes: Episodes, model, policy: PolicyInDreams | None,
                halt_reward: float | None, key: jax.Array, where: str, progress: bool = False,
                halt_multiple: float = 0.0) -> Round:
    """Refit ``model`` (a new one if None) on ``episodes``' training split, then train
    ``policy`` (a new one if None) further in its dreams.

    Args:
        settings: the fit and dream settings, the split and the seed of new weights.
        task: the task the episodes come from.
        episodes: every episode learned from so far, in the order they were recorded.
        model: the world model to refit warm, or None in the first round.
        policy: the policy to train further, or None in the first round.
        halt_reward: HALT's reward from the first round (ignored when ``policy`` is None).
        key: this round's key (fit and dream keys are split from it).
        where: what an error names (the run directory).
        progress: show the dream trainer's progress bar.
        halt_multiple: above 0, a new policy halts dreams as `dreamer dream` does: at this
            multiple of the first model's largest disagreement on real training
            transitions (`dreamer.offline.halting`); 0 keeps ``settings.dream``'s threshold.

    Raises:
        InputError: no episode landed in the training split.
    """
    train, validation = fitting_episodes(episodes, settings.split_seed, settings.fractions)
    if train is None:
        raise InputError(where, "no episode landed in the training split; lower the held-out fraction")
    if model is None:
        model = new_model(settings, task)
    fit_key, dream_key = jax.random.split(key)
    # The fit and the dreams share the devices, so the model they hand each other stays put.
    mesh = data_mesh(settings.devices)
    fit = fit_world_model(model, train, validation, settings.fit, seed=fit_key, progress=False, mesh=mesh)
    if policy is None:
        # Halting comes from the first training data and stays fixed (the trainer compiles it in).
        dream_settings = settings.dream
        if halt_multiple > 0:
            threshold, _ = halting(model, train, halt_multiple, dream_settings.uncertainty_penalty)
            dream_settings = dataclasses.replace(dream_settings, halt_threshold=threshold)
        halt_reward = lowest_halt_reward(train.rewards, dream_settings.uncertainty_penalty,
                                         dream_settings.halt_threshold)
        policy = PolicyInDreams(model, task, train, with_halt_reward(dream_settings, halt_reward), settings.seed,
                                mesh)
    policy.set_start_episodes(train)
    dream = policy.train(model, settings.dream_updates, dream_key, progress=progress)
    return Round(model, policy, halt_reward, fit, dream)


def with_halt_reward(dream: DreamConfig, halt_reward: float | None) -> DreamConfig:
    """The dream settings with HALT's reward from the data, where halting is on and none was set."""
    if dream.halt_threshold <= 0 or dream.halt_reward is not None:
        return dream
    return dataclasses.replace(dream, halt_reward=halt_reward)


def learner_checkpoint(model, policy: PolicyInDreams, **records: dict) -> ocp.args.Composite:
    """What a checkpoint of a run that learns in rounds holds: the policy's training state,
    the world model, and JSON records (progress, halting) beside them, so a later call
    never pairs one round's model with another round's policy."""
    return ocp.args.Composite(
        dream=policy.save_args(),
        world_model=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model))),
        **{name: ocp.args.JsonSave(record) for name, record in records.items()},
    )


def new_model(settings: RoundSettings, task: Task):
    """A freshly initialised world model of the kind and size ``settings`` name."""
    model_config = settings.rssm if settings.model == "rssm" else settings.ensemble
    return build_model_for_spaces(settings.model, task.observation_space, task.action_space, model_config,
                                  seed=settings.seed)


def restore_learner(manager: ocp.CheckpointManager, step: int, task: Task, settings: RoundSettings,
                    dream: DreamConfig, episodes: Episodes) -> tuple[object, PolicyInDreams]:
    """The world model and the policy (with its critic and optimiser state) saved at ``step``.

    ``dream`` must hold the halting values the policy was first built with.
    """
    model = new_model(settings, task)
    policy = PolicyInDreams(model, task, episodes, dream, settings.seed, data_mesh(settings.devices))
    model_state = nnx.state(model)
    restored = manager.restore(step, args=ocp.args.Composite(
        dream=policy.restore_args(),
        world_model=ocp.args.StandardRestore(nnx.to_pure_dict(model_state)),
    ))
    nnx.replace_by_pure_dict(model_state, restored["world_model"])
    nnx.update(model, model_state)
    policy.restore(restored["dream"])
    return model, policy
