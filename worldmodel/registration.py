"""The dream environments in gymnasium's registry, so ``gym.make`` and ``gym.make_vec`` find them.

Registering names only the entry points as strings; nothing of JAX, orbax or the
models is imported until an environment is made.
"""

from __future__ import annotations

import gymnasium as gym

DREAM_ENV_ID = "dreamer/Dream-v0"


def register_environments() -> None:
    """Register ``dreamer/Dream-v0`` (once; later calls do nothing).

    The episode limit is the environment's own (the task's horizon, or ``horizon=``),
    so the registration sets no ``max_episode_steps``; ``gym.make(...,
    max_episode_steps=n)`` and ``gym.make_vec(..., max_episode_steps=n)`` still cut
    episodes shorter.
    """
    if DREAM_ENV_ID in gym.registry:
        return
    gym.register(
        id=DREAM_ENV_ID,
        entry_point="worldmodel.dream_env:DreamEnv",
        vector_entry_point="worldmodel.dream_vector_env:DreamVectorEnv",
    )
