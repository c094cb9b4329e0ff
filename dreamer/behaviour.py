"""Behaviour policies for recording: uniform random, or a saved policy with noise."""

from __future__ import annotations

from pathlib import Path

from policies.acting import ActorPolicy
from policies.saving import load_actor
from tasks.errors import InputError
from tasks.recording import BehaviourPolicy, RandomPolicy
from tasks.registry import Task, check_spaces_match


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
    actor, policy_task, spec = load_actor(path, version)
    check_spaces_match(task, policy_task.observation_space, policy_task.action_space, name)
    return ActorPolicy(actor, mode="noisy", noise=noise), spec.get("policy_version")
