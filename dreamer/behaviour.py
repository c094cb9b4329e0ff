"""Behaviour policies for recording: uniform random, or a saved policy with noise."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from policies.filtering import acting_policy
from policies.networks import Actor
from policies.saving import load_actor
from policies.versions import policy_folder
from tasks.errors import InputError
from tasks.recording import BehaviourPolicy, RandomPolicy
from tasks.registry import Task, check_spaces_match
from worldmodel.saving import load


def behaviour_policy(name: str, task: Task, noise: float = 0.0,
                     version: int | None = None) -> tuple[BehaviourPolicy, int | None]:
    """The policy ``collect --policy NAME --noise SIGMA [--version N]`` records with, and
    its version (None unless it is a version of a run made by `dreamer learn`).

    Args:
        name: ``random``, or a run directory holding a saved policy.
        task: the task whose action space the policy acts in.
        noise: exploration noise for a saved policy: Gaussian standard deviation on
            continuous actions (in units of half the action range), epsilon on discrete.
        version: a version of a run made by `dreamer learn` (default: its latest).
    """
    if name == "random":
        if version is not None:
            raise InputError("--version", "needs --policy to name a run directory, not 'random'")
        return RandomPolicy(task.action_space), None
    path = Path(name)
    if not path.exists():
        raise InputError(name, "no such run directory (expected 'random' or a run with a saved policy)")
    saved = saved_behaviour(path, version, mode="noisy", noise=noise)
    check_spaces_match(task, saved.task.observation_space, saved.task.action_space, name)
    return saved.behaviour, saved.spec.get("policy_version")


class SavedPolicy(NamedTuple):
    """A saved policy, ready to act in the real environment.

    Attributes:
        behaviour: the policy as `record_episodes` calls it.
        actor: the trained actor.
        task: the task it was trained on.
        spec: its ``policy.json``.
        world_model: the model whose latent state the actor reads, saved beside it (None
            for an actor on observations).
    """

    behaviour: BehaviourPolicy
    actor: Actor
    task: Task
    spec: dict
    world_model: object | None


def saved_behaviour(run: str | Path, version: int | None = None, mode: str = "deterministic",
                    noise: float = 0.0) -> SavedPolicy:
    """The policy saved in ``run`` (``version`` of a run that learns in rounds).

    A policy on a world model's latent state acts with the model saved beside it, which
    filters every real observation (`policies.filtering.FilteringPolicy`).
    """
    actor, task, spec = load_actor(run, version)
    world_model = None
    if spec["features"] != "observation":
        folder, _ = policy_folder(run, version)
        world_model = load(folder)
    return SavedPolicy(acting_policy(actor, world_model, mode, noise), actor, task, spec, world_model)
