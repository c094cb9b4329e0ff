"""Camera-frame tasks: classic-control environments seen only through their renders.

``pendulum-pixels`` and ``cartpole-pixels`` are the gymnasium environments underneath,
rendered off screen (no display is needed) and shrunk to 64 x 64 RGB frames; the reward
and the termination still come from the environment. A frame hides what a single state
would show (Pendulum's angular velocity, CartPole's velocities), which is what a world
model with memory is for. Importing this module registers the environments with
gymnasium (`tasks.registry` does), so a trace file that names one can be replayed.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

FRAME_SIZE = 64
PIXEL_ENVIRONMENTS = {  # our gymnasium id -> the environment it renders, its horizon, the render's share kept
    # Pendulum's render leaves a wide margin around the swing: its central 56% holds all
    # of it, so the rod is 5 pixels wide in the frame instead of 3.
    "dreamer/PendulumPixels-v0": ("Pendulum-v1", 200, 0.56),
    # The cart may roam the whole width before the episode ends: the frame keeps it all.
    "dreamer/CartPolePixels-v0": ("CartPole-v1", 500, 1.0),
}

# pygame renders into memory; without these it looks for a display and a sound card.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def shrink_frame(frame: np.ndarray, size: int = FRAME_SIZE, keep: float = 1.0) -> np.ndarray:
    """The central ``keep`` share (per side) of an RGB frame ``[H, W, 3]`` uint8, averaged
    down to ``[size, size, 3]`` uint8."""
    height, width = frame.shape[:2]
    top, left = round(height * (1 - keep) / 2), round(width * (1 - keep) / 2)
    kept = frame[top:height - top, left:width - left]
    return np.asarray(Image.fromarray(kept).resize((size, size), Image.BOX))


class FrameObservation(gym.ObservationWrapper):
    """Replaces the environment's observation with its render, shrunk to a square frame."""

    def __init__(self, env: gym.Env, size: int = FRAME_SIZE, keep: float = 1.0):
        if env.render_mode != "rgb_array":
            raise ValueError(f"{env.spec.id if env.spec else env}: needs render_mode='rgb_array' to give frames")
        super().__init__(env)
        self.size, self.keep = size, keep
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        return shrink_frame(self.env.render(), self.size, self.keep)


def make_pixel_env(rendered_id: str, keep: float = 1.0, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """``rendered_id`` seen through 64 x 64 frames of the central ``keep`` of its render
    (its keyword arguments pass through)."""
    # The frames are the observation whatever render mode a caller asks for.
    return FrameObservation(gym.make(rendered_id, render_mode="rgb_array", **kwargs), keep=keep)


def register_pixel_environments() -> None:
    for env_id, (rendered_id, horizon, keep) in PIXEL_ENVIRONMENTS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="tasks.pixels:make_pixel_env",
                         kwargs={"rendered_id": rendered_id, "keep": keep},
                         max_episode_steps=horizon, reward_threshold=gym.spec(rendered_id).reward_threshold)
