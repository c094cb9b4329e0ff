"""Saving a trained actor into its run directory, and loading it back with one call.

    RUN/policy.json            the task, what the actor sees, its network config, its spaces
    RUN/checkpoints/policy/    its parameters and input statistics (an orbax checkpoint)
    RUN/policy.stablehlo       its acting step, exported for `policies.load_policy`

An actor trained in the dreams of a model with memory acts on the model's latent state
(``features`` "latent" in policy.json): its exported step holds the model too, and the
model is saved in the same run directory (`worldmodel.saving`), where Python-side acting
(`policies.filtering.FilteringPolicy`) loads it from.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from flax import nnx

from policies.networks import Actor, NetworkConfig
from tasks.errors import InputError
from tasks.json_files import read_json_object
from tasks.module_state import restore_module_state, save_module_state
from policies.deployment import EXPORT_FILE, POLICY_FILE, deployment_record, export_actor, export_filtering_actor
from policies.filtering import reads_observations
from policies.versions import policy_folder
from tasks.registry import Task, task_from_record

SPEC_FIELDS = {"task": str, "features": str, "feature_size": int, "network": dict}


def save_policy(run_dir: str | Path, actor: Actor, task: Task, provenance: dict[str, Any] | None = None,
                world_model=None) -> None:
    """Write ``policy.json`` and the actor's state into ``run_dir``, replacing older ones.

    ``world_model``: the model the actor was trained in, where the actor reads its latent
    state (the caller saves that model in ``run_dir`` too).
    """
    run_dir = Path(run_dir)
    latent = not reads_observations(world_model)
    spec = {
        **task.record(),
        "features": "latent" if latent else "observation",
        "feature_size": int(actor.input_norm.mean[...].shape[0]),
        "network": dataclasses.asdict(actor.config),
        **(provenance or {}),
    }
    save_module_state(run_dir / "checkpoints" / "policy", actor)
    # The step `policies.load_policy` runs, written before policy.json names it.
    shape = task.observation_space.shape
    if latent:
        step, state_size, action_slot = export_filtering_actor(world_model, actor, shape)
        (run_dir / EXPORT_FILE).write_bytes(step)
        spec["deployment"] = deployment_record(task.observation_space, task.action_space, state_size, action_slot)
    else:
        (run_dir / EXPORT_FILE).write_bytes(export_actor(actor, shape))
        spec["deployment"] = deployment_record(task.observation_space, task.action_space)
    (run_dir / POLICY_FILE).write_text(json.dumps(spec, indent=2))


def load_actor(run_dir: str | Path, version: int | None = None) -> tuple[Actor, Task, dict[str, Any]]:
    """The actor saved in ``run_dir`` (``version`` of a run that learns in rounds, default
    its latest), its task, and its ``policy.json``."""
    try:
        run_dir, _ = policy_folder(run_dir, version)
    except ValueError as error:  # a damaged rounds.json
        raise InputError(run_dir, str(error)) from None
    path = Path(run_dir) / POLICY_FILE
    if not path.is_file():
        raise InputError(run_dir, "holds no saved policy (no policy.json in this run directory)")
    spec = read_json_object(path, SPEC_FIELDS, "a saved policy")
    if spec["feature_size"] < 1:
        raise InputError(path, f"is damaged: feature_size must be at least 1, got {spec['feature_size']}")
    task = task_from_record(spec)
    try:
        actor = Actor(spec["feature_size"], task.action_space, NetworkConfig(**spec["network"]), nnx.Rngs(0))
    except (TypeError, ValueError) as error:
        raise InputError(path, f"is damaged: {error}") from None
    restore_module_state(Path(run_dir) / "checkpoints" / "policy", actor, run_dir, "policy")
    return actor, task, spec
