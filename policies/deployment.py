"""A saved policy as a plain callable for the controller side: numpy in, numpy out.

    from policies import load_policy
    policy = load_policy("runs/plant")
    action = policy(observation)          # one observation, or a batch of them
    policy.reset()                        # at the start of every episode

Saving a policy also exports its acting step with ``jax.export``: serialised StableHLO
(never pickle) that holds the weights and runs on CPU, GPU or TPU. The step takes
``(state, observations, key)`` and gives ``(mode, sample, state)``: the deterministic
action, a sampled one, and the policy's state for the next step. A feed-forward actor's
state is empty; a policy that remembers (an actor on a recurrent world model's latent,
with the model inside the step) carries the model's state and the last action there,
`reset` starts it over, and `applied` corrects the last action where the controller
applied another. Loading needs only jax and numpy: none of this
project's model code, no environment, no task registry. The spaces the policy acts in
are stored beside the step, so observations are checked without making an environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from policies.versions import policy_folder

EXPORT_FILE = "policy.stablehlo"
POLICY_FILE = "policy.json"
PLATFORMS = ("cpu", "cuda", "tpu")


def space_record(space: Any) -> dict[str, Any]:
    """A Box or Discrete space as plain JSON values (no gymnasium needed to read it)."""
    if hasattr(space, "n"):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    return {"type": "Box", "shape": list(space.shape), "dtype": str(np.dtype(space.dtype)),
            "low": np.asarray(space.low, dtype=np.float64).ravel().tolist(),
            "high": np.asarray(space.high, dtype=np.float64).ravel().tolist()}


def export_actor(actor, observation_shape: tuple[int, ...], state_size: int = 0) -> bytes:
    """The actor's acting step, exported for any batch size and serialised.

    Args:
        actor: a `policies.networks.Actor` whose input is the flattened observation.
        observation_shape: one observation's shape.
        state_size: length of the state carried between steps (0: none).
    """
    from flax import nnx  # only the saving side needs the model code

    graph, params = nnx.split(actor)

    def step(state, observations, key_data):
        model = nnx.merge(graph, params)
        flat = observations.reshape(observations.shape[0], -1)
        sample, _ = model.sample(flat, jax.random.wrap_key_data(key_data))
        return model.mode(flat), sample, state

    (batch,) = jax.export.symbolic_shape("batch")
    exported = jax.export.export(jax.jit(step), platforms=PLATFORMS)(
        jax.ShapeDtypeStruct((batch, state_size), jnp.float32),
        jax.ShapeDtypeStruct((batch, *observation_shape), jnp.float32),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    return bytes(exported.serialize())


def export_filtering_actor(world_model, actor, observation_shape: tuple[int, ...]) -> tuple[bytes, int, list[int]]:
    """The acting step of an actor on a world model's latent state, with the model inside.

    The carried state is ``[model state, flattened | last action | started]``: a row whose
    ``started`` is 0 takes the model's `initial_state` of its observation, any other
    filters the observation with the last action (`observe`). The step leaves the action
    slot empty; `DeployedPolicy` writes the action it returns there.

    Returns:
        The serialised step, the state's length, and the action slot ``[start, stop)``.
    """
    from flax import nnx

    from policies.filtering import filter_or_start

    model_graph, model_params = nnx.split(world_model)
    actor_graph, actor_params = nnx.split(actor)
    template = world_model.initial_state(jnp.zeros((1, *observation_shape), jnp.float32))
    leaves, treedef = jax.tree.flatten(template)
    widths = [int(np.prod(leaf.shape[1:])) for leaf in leaves]
    model_width = sum(widths)
    action_width = 1 if actor.discrete else actor.action_size
    state_size = model_width + action_width + 1

    def step(state, observations, key_data):
        model, acting = nnx.merge(model_graph, model_params), nnx.merge(actor_graph, actor_params)
        batch = observations.shape[0]
        pieces = jnp.split(state[:, :model_width], np.cumsum(widths)[:-1], axis=1)
        model_state = treedef.unflatten([p.reshape(batch, *leaf.shape[1:]) for p, leaf in zip(pieces, leaves)])
        last_action = state[:, model_width:model_width + action_width]
        last_action = jnp.round(last_action[:, 0]).astype(jnp.int32) if actor.discrete else last_action
        new = filter_or_start(model, model_state, last_action, observations, state[:, -1] < 0.5)
        features = model.features(new)
        sample, _ = acting.sample(features, jax.random.wrap_key_data(key_data))
        carried = [leaf.reshape(batch, -1) for leaf in jax.tree.leaves(new)]
        carried += [jnp.zeros((batch, action_width)), jnp.ones((batch, 1))]
        return acting.mode(features), sample, jnp.concatenate(carried, axis=1).astype(jnp.float32)

    (batch,) = jax.export.symbolic_shape("batch")
    exported = jax.export.export(jax.jit(step), platforms=PLATFORMS)(
        jax.ShapeDtypeStruct((batch, state_size), jnp.float32),
        jax.ShapeDtypeStruct((batch, *observation_shape), jnp.float32),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    return bytes(exported.serialize()), state_size, [model_width, model_width + action_width]


def deployment_record(observation_space: Any, action_space: Any, state_size: int = 0,
                      action_slot: list[int] | None = None) -> dict[str, Any]:
    """What `load_policy` reads from ``policy.json`` besides the exported step."""
    record = {"file": EXPORT_FILE, "state_size": state_size,
              "observation_space": space_record(observation_space), "action_space": space_record(action_space)}
    if action_slot is not None:
        record["action_slot"] = action_slot
    return record


class DeployedPolicy:
    """A saved policy's acting step with the state it carries between calls.

    ``policy(observation)`` takes one observation (the recorded shape) or a batch (that
    shape with a leading batch axis) of real numbers, and returns one action or a batch.
    ``deterministic=False`` samples from the policy, reproducibly with ``seed``.
    """

    def __init__(self, exported: jax.export.Exported, deployment: dict[str, Any], source: str):
        self._step = jax.jit(exported.call)
        self._state_size = int(deployment["state_size"])
        self.observation_space = deployment["observation_space"]
        self.action_space = deployment["action_space"]
        self._observation_shape = tuple(self.observation_space["shape"])
        self._source = source
        self._action_slot = deployment.get("action_slot")  # where the state holds the last action
        self._state: np.ndarray | None = None
        self._rng = np.random.default_rng()

    def reset(self) -> None:
        """Start a new episode: forget the state carried from earlier steps."""
        self._state = None

    def applied(self, action) -> None:
        """Tell a policy that remembers which action was actually applied after its last
        call, where it differs from the one it returned (clipped, or overridden by a
        safety layer): its model filters the next observation with this one."""
        if self._action_slot is None or self._state is None:
            return
        start, stop = self._action_slot
        self._state[:, start:stop] = np.asarray(action, np.float32).reshape(len(self._state), stop - start)

    def __call__(self, observation, *, deterministic: bool = True, seed: int | None = None) -> np.ndarray:
        observations, single = self._batch(observation)
        if self._state is None or len(self._state) != len(observations):
            self._state = np.zeros((len(observations), self._state_size), np.float32)
        generator = np.random.default_rng(seed) if seed is not None else self._rng
        key_data = generator.integers(0, 2**32, size=2, dtype=np.uint32)
        mode, sample, state = self._step(self._state, observations, key_data)
        self._state = np.array(state)
        actions = np.asarray(mode if deterministic else sample)
        if self.action_space["type"] == "Discrete":
            actions = actions.astype(np.int64)
        self.applied(actions)
        return actions[0] if single else actions

    def _batch(self, observation) -> tuple[np.ndarray, bool]:
        observations = np.asarray(observation)
        if not (np.issubdtype(observations.dtype, np.integer) or np.issubdtype(observations.dtype, np.floating)):
            raise ValueError(f"{self._source}: observations must be real numbers, got dtype {observations.dtype}")
        shape = self._observation_shape
        if observations.shape == shape:
            return observations[None].astype(np.float32), True
        if observations.ndim == len(shape) + 1 and observations.shape[1:] == shape and len(observations):
            return observations.astype(np.float32), False
        raise ValueError(f"{self._source}: expected an observation of shape {shape} or a batch of shape "
                         f"(n, {', '.join(map(str, shape))}), got {observations.shape}")


def load_policy(run: str | Path, version: int | None = None) -> DeployedPolicy:
    """The policy saved in the run directory ``run``, as a callable.

    Args:
        run: a run directory holding a saved policy.
        version: which version of a run made by `dreamer learn` (default: its latest).

    Raises:
        FileNotFoundError: ``run`` holds no saved policy (or not that version), or one
            saved without its exported step (saved by an older version: save it again).
        ValueError: ``policy.json`` is damaged.
    """
    run, _ = policy_folder(run, version)
    spec_path = run / POLICY_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{run}: holds no saved policy (no {POLICY_FILE})")
    try:
        deployment = json.loads(spec_path.read_text())["deployment"]
        export_path = run / deployment["file"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{spec_path}: has no readable 'deployment' record ({error!r})") from None
    if not export_path.is_file():
        raise FileNotFoundError(f"{run}: holds no exported policy step ({export_path.name} is missing)")
    return DeployedPolicy(jax.export.deserialize(bytearray(export_path.read_bytes())), deployment, str(run))
