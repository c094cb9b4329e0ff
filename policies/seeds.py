"""Many seeds in one call: the learners of an arm's seeds acting and learning as one.

PureJaxRL's way: the seeds' states are stacked on a leading seed axis and the learner's
pure update (`policies.sac.sac_functions`, `policies.ppo.ppo_functions`) is vmapped over
it, so on an accelerator one compiled program trains every seed. The real environments
step on the host, the seeds' side by side (seed by seed along the environment axis), and
the seeds act together too: one forward pass for all their observations.

Each seed is a learner built exactly as a run of that seed alone builds it, and keeps
its own weights, keys and random generator, so the seeds' results equal one-by-one runs
to float tolerance. On a CPU the vmapped work runs serially anyway, and one by one
compiles smaller programs: ``auto`` keeps the seeds apart there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies.networks import Actor
from policies.ppo import PPO
from policies.real_collection import Chunk
from policies.sac import SAC, chunk_transitions

SeedsInOneCall = Literal["auto", "always", "never"]
SEEDS_IN_ONE_CALL_HELP = ("train an arm's seeds as one vmapped program: always, never, or auto (on an accelerator; "
                          "one by one on a CPU)")


def seeds_in_one_call(choice: SeedsInOneCall, backend: str | None = None) -> bool:
    """Whether an arm's seeds train in one call: ``always``, ``never``, or with ``auto``
    where JAX's backend (default: the one in use) is an accelerator, not the CPU."""
    if choice not in ("auto", "always", "never"):
        raise ValueError(f"seeds in one call: auto, always or never, not {choice!r}")
    if choice == "auto":
        return (backend or jax.default_backend()) != "cpu"
    return choice == "always"


def stack_seeds(trees: Sequence):
    """Pytrees of one structure stacked leaf by leaf on a new leading seed axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def one_seed(tree, index: int):
    """Seed ``index``'s slice of a stacked pytree, in arrays of its own."""
    return jax.tree.map(lambda leaf: jnp.copy(leaf[index]), tree)


def learner_seeds(learners: Sequence[SAC | PPO]) -> LearnerSeeds:
    """The learners of several seeds (all SAC or all PPO, one configuration) as one."""
    kinds = {type(learner) for learner in learners}
    if kinds == {SAC}:
        return SACSeeds(learners)
    if kinds == {PPO}:
        return PPOSeeds(learners)
    names = sorted(kind.__name__ for kind in kinds)
    raise ValueError(f"seeds in one call need learners of one kind, SAC or PPO; got {names}")


class LearnerSeeds:
    """Several seeds' learners of one kind, stepping as one.

    ``act`` takes the observations of every seed's environments, seed by seed along the
    first axis; ``learn(chunks)`` (in each kind's class) takes one chunk per seed and
    returns each seed's metrics; ``actor(i)`` is seed ``i``'s actor.
    The learners keep their host-side bookkeeping (keys, step counts, random
    generators); their states are handed over (each learner's ``state`` becomes None, so
    no replay buffer is held twice): the trained states are here, stacked.
    """

    def __init__(self, learners: Sequence[SAC | PPO]):
        if not learners:
            raise ValueError("no learners")
        self.learners = list(learners)
        self.num_seeds = len(self.learners)
        self.steps_per_chunk = self.learners[0].steps_per_chunk
        self._actor_graph = nnx.graphdef(self.learners[0].actor)
        self.state = stack_seeds([learner.state for learner in self.learners])
        for learner in self.learners:
            learner.state = None
        self._sample_actions = jax.jit(jax.vmap(self.learners[0].functions.sample_actions))

    def act(self, observations: np.ndarray) -> np.ndarray:
        """Every seed's actions on its own environments' observations (``[N * E, ...]``)."""
        by_seed = np.split(np.asarray(observations), self.num_seeds)
        random_actions = self._random_actions(by_seed)
        if random_actions is not None:
            return np.concatenate(random_actions)
        actions = self._sample_actions(self.state.actor, jnp.asarray(np.stack(by_seed), jnp.float32), self._keys())
        return np.asarray(actions).reshape(len(observations), *actions.shape[2:])

    def actor(self, index: int) -> Actor:
        """Seed ``index``'s current actor, with arrays of its own (the state is donated)."""
        return nnx.merge(self._actor_graph, one_seed(self.state.actor, index))

    def _random_actions(self, by_seed: list[np.ndarray]) -> list[np.ndarray] | None:
        """Each seed's exploring actions where its learner acts at random, else None."""
        return None

    def _keys(self) -> jax.Array:
        return jnp.stack([learner.next_key() for learner in self.learners])


class SACSeeds(LearnerSeeds):
    """SAC learners of several seeds: each chunk stored, and trained on, in one vmapped call."""

    def __init__(self, learners: Sequence[SAC]):
        super().__init__(learners)
        functions = self.learners[0].functions
        # The stacked state (with the replay buffers) is donated, as one seed's is.
        self._store = jax.jit(jax.vmap(functions.store), donate_argnums=0)
        self._store_and_train = jax.jit(jax.vmap(functions.store_and_train), donate_argnums=0)

    def learn(self, chunks: Sequence[Chunk]) -> list[dict[str, float]]:
        transitions = stack_seeds([chunk_transitions(chunk) for chunk in chunks])
        if not self.learners[0].learning:  # the seeds step together: all learn, or none
            self.state = self._store(self.state, transitions)
            return [{} for _ in self.learners]
        self.state, metrics = self._store_and_train(self.state, transitions, self._keys())
        return _by_seed(metrics, self.num_seeds)

    def _random_actions(self, by_seed: list[np.ndarray]) -> list[np.ndarray] | None:
        actions = [learner.random_actions(observations) for learner, observations in zip(self.learners, by_seed)]
        return None if actions[0] is None else actions


class PPOSeeds(LearnerSeeds):
    """PPO learners of several seeds: each rollout's epochs of updates in one vmapped call."""

    def __init__(self, learners: Sequence[PPO]):
        super().__init__(learners)
        self._train = jax.jit(jax.vmap(self.learners[0].functions.train))

    def learn(self, chunks: Sequence[Chunk]) -> list[dict[str, float]]:
        rollouts = stack_seeds([learner.device_chunk(chunk) for learner, chunk in zip(self.learners, chunks)])
        clip_ranges = jnp.asarray([learner.next_clip_range() for learner in self.learners], jnp.float32)
        self.state, metrics = self._train(self.state, rollouts, clip_ranges, self._keys())
        return _by_seed(metrics, self.num_seeds)


def _by_seed(metrics: dict[str, jax.Array], num_seeds: int) -> list[dict[str, float]]:
    values = {name: np.asarray(value) for name, value in metrics.items()}
    return [{name: float(value[i]) for name, value in values.items()} for i in range(num_seeds)]
