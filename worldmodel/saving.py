"""Saving a fitted world model into its run directory, and loading it with one call.

    RUN/model.json          what model it is: kind, spaces, config, and where its data came from
    RUN/checkpoints/model/  its parameters and statistics (an orbax checkpoint)

`load(run_dir)` rebuilds the model from ``model.json`` and restores its state, so any
code that speaks the world-model interface can use a saved model of any kind.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from tasks.errors import InputError
from tasks.json_files import read_json_object
from tasks.module_state import restore_module_state, save_module_state
from tasks.registry import observation_kind
from worldmodel.conv import downsampling_stages
from worldmodel.ensemble import EnsembleConfig, EnsembleModel
from worldmodel.rssm import RSSMConfig, RSSMModel

MODEL_FILE = "model.json"
MODEL_KINDS: dict[str, tuple[type, type]] = {"ensemble": (EnsembleModel, EnsembleConfig), "rssm": (RSSMModel, RSSMConfig)}
SPEC_FIELDS = {"kind": str, "observation_shape": list, "action_size": int, "discrete_actions": bool, "config": dict}


def build_model(
    kind: str,
    observation_shape: tuple[int, ...],
    action_size: int,
    discrete_actions: bool,
    config: Any,
    seed: int = 0,
    action_start: int = 0,
) -> nnx.Module:
    """A freshly initialised model of ``kind`` (``action_start``: the first action of a
    ``Discrete(n, start)`` space)."""
    if kind not in MODEL_KINDS:
        raise InputError(kind, f"unknown world model (known: {', '.join(MODEL_KINDS)})")
    model_cls, _ = MODEL_KINDS[kind]
    return model_cls(tuple(observation_shape), action_size, discrete_actions, config, nnx.Rngs(seed),
                     action_start=action_start)


def build_model_for_spaces(kind: str, observation_space, action_space, config: Any, seed: int = 0) -> nnx.Module:
    """A freshly initialised model of ``kind`` for a task's (or a trace file's) spaces."""
    if observation_kind(observation_space) == "image":
        if kind != "rssm":
            raise InputError(f"observations {observation_space}", f"are camera frames; the {kind} models vector "
                                                                   "observations only (--model rssm reads frames)")
        try:
            downsampling_stages(observation_space.shape)
        except ValueError as error:  # foreign frames of a size the convolutions cannot halve
            raise InputError(f"observations {observation_space}", f"{error}; resize them") from None
    discrete = hasattr(action_space, "n")
    action_size = int(action_space.n) if discrete else int(np.prod(action_space.shape))
    start = int(action_space.start) if discrete else 0
    return build_model(kind, observation_space.shape, action_size, discrete, config, seed=seed, action_start=start)


def save_model(run_dir: str | Path, model: nnx.Module, provenance: dict[str, Any] | None = None) -> None:
    """Write ``model.json`` and the model's state into ``run_dir``, replacing older ones.

    Args:
        run_dir: the run directory.
        model: the fitted model.
        provenance: extra facts kept in ``model.json`` (task, trace file, split seed).
    """
    run_dir = Path(run_dir)
    spec = {
        "kind": model.kind,
        "observation_shape": list(model.observation_shape),
        "action_size": model.action_size,
        "discrete_actions": model.discrete_actions,
        "action_start": model.action_start,
        "config": dataclasses.asdict(model.config),
        **(provenance or {}),
    }
    save_module_state(run_dir / "checkpoints" / "model", model)
    (run_dir / MODEL_FILE).write_text(json.dumps(spec, indent=2))


def load_spec(run_dir: str | Path) -> dict[str, Any]:
    """The contents of a run directory's ``model.json``."""
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise InputError(run_dir, "holds no fitted world model (no model.json; run `dreamer fit` first)")
    spec = read_json_object(path, SPEC_FIELDS, "a fitted world model")
    if spec["kind"] not in MODEL_KINDS:
        raise InputError(path, f"is damaged: unknown world model kind {spec['kind']!r} (known: {', '.join(MODEL_KINDS)})")
    return spec


def load(run_dir: str | Path) -> nnx.Module:
    """The world model saved in ``run_dir``, ready to step."""
    spec = load_spec(run_dir)
    _, config_cls = MODEL_KINDS[spec["kind"]]
    try:
        config = config_cls(**spec["config"])
        model = build_model(spec["kind"], tuple(spec["observation_shape"]), spec["action_size"],
                            spec["discrete_actions"], config, action_start=int(spec.get("action_start", 0)))
    except (TypeError, ValueError) as error:
        raise InputError(Path(run_dir) / MODEL_FILE, f"is damaged: {error}") from None
    restore_module_state(Path(run_dir) / "checkpoints" / "model", model, run_dir, "model")
    return model
