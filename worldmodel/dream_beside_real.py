"""A dream beside what really happened: one held-out episode, replayed in the model.

The model observes the episode's first real steps (its context), then imagines the rest
from the recorded actions alone. For vector observations a picture puts each
observation dimension of the dream over the real one (`plot_dream_beside_real`); for
camera frames a GIF shows, step by step, the real frame, the model's frame and their
difference side by side (`write_dream_video`), with the observed context framed in
green and the imagined steps in orange. Either way a reader sees where and how the
model drifts. `dreamer check` draws a few sampled held-out episodes this way.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tasks.episodes import Episode, Episodes
from worldmodel.fidelity import model_predictions, open_loop_windows

MAX_DIMENSIONS = 8  # panels drawn; wider observations show their first dimensions
OBSERVED_COLOUR = (40, 170, 60)  # the border of frames the model saw (its context)
DREAMED_COLOUR = (235, 130, 20)  # the border of frames it imagined from the actions alone
BORDER = 3  # pixels of that border, around each panel, after scaling
HEADER = 14  # pixels of the text line above the panels
PANEL_LABELS = ("real", "model", "|real - model|")


def dream_of_episode(model: nnx.Module, episode: Episode, context: int, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """The episode's real observations ``[T + 1, *obs_shape]`` and the model's dream of
    them after ``context`` observed steps, ``[T - context, *obs_shape]``."""
    windows = open_loop_windows(Episodes.from_list([episode]), len(episode) - context, len(episode), context)
    dreamed = model_predictions(model, windows, key).obs[0]
    return episode.observations, dreamed


def frames_of_episode(model: nnx.Module, episode: Episode, context: int, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """The episode's real frames ``[T + 1, H, W, C]`` and the model's frames beside them,
    the same shape, float32 in 0..255: for steps ``0..context`` what the model makes of
    the frames it observed (each decoded from its filtered state), then its dream of the
    rest from the recorded actions (`dream_of_episode`)."""
    real, dreamed = dream_of_episode(model, episode, context, key)
    observed = jnp.asarray(real[None, :context + 1])
    actions = jnp.asarray(episode.actions[None, :context])
    reconstructed = np.asarray(_filtered_reconstructions(*nnx.split(model), observed, actions))[0]
    return real, np.concatenate([reconstructed, dreamed], axis=0)


def write_dream_video(real: np.ndarray, modelled: np.ndarray, context: int, path: str | Path,
                      scale: int = 2, frame_milliseconds: int = 50) -> None:
    """An animated GIF of ``real`` and ``modelled`` frames ``[T + 1, H, W, C]`` (0..255)
    side by side with their difference, one GIF frame per step (`video_frame`); the
    first ``context + 1`` steps are marked as observed, the rest as dreamed."""
    from PIL import Image

    pictures = [Image.fromarray(video_frame(r, m, step <= context, step, scale))
                for step, (r, m) in enumerate(zip(real, modelled))]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=frame_milliseconds, loop=0)


def video_frame(real: np.ndarray, modelled: np.ndarray, observed: bool, step: int, scale: int = 2) -> np.ndarray:
    """One step of a dream video: ``[HEADER + H scale + 2 BORDER, 3 (W scale + 2 BORDER), 3]``
    uint8, the real frame, the model's and their absolute difference, each enlarged
    ``scale`` times and framed in the colour of ``observed`` or dreamed, under a line
    saying the step and which it is."""
    from PIL import Image, ImageDraw

    real = np.clip(np.asarray(real, dtype=np.float32), 0, 255)
    modelled = np.clip(np.asarray(modelled, dtype=np.float32), 0, 255)
    colour = OBSERVED_COLOUR if observed else DREAMED_COLOUR
    panels = [_framed(_rgb(panel), scale, colour) for panel in (real, modelled, np.abs(real - modelled))]
    picture = np.full((HEADER + panels[0].shape[0], sum(p.shape[1] for p in panels), 3), 255, np.uint8)
    picture[HEADER:] = np.concatenate(panels, axis=1)
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    width = panels[0].shape[1]
    labels = [f"{PANEL_LABELS[0]} t={step}", f"{PANEL_LABELS[1]} ({'observed' if observed else 'dreamed'})",
              PANEL_LABELS[2]]
    for index, label in enumerate(labels):
        draw.text((index * width + BORDER, 1), label, fill=(0, 0, 0) if index != 1 else colour)
    return np.asarray(image)


def _rgb(frame: np.ndarray) -> np.ndarray:
    """A frame ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` as uint8 RGB."""
    frame = np.rint(frame).astype(np.uint8)
    if frame.ndim == 2:
        frame = frame[..., None]
    return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame[..., :3]


def _framed(frame: np.ndarray, scale: int, colour: tuple[int, int, int]) -> np.ndarray:
    enlarged = frame.repeat(scale, axis=0).repeat(scale, axis=1)
    framed = np.empty((enlarged.shape[0] + 2 * BORDER, enlarged.shape[1] + 2 * BORDER, 3), np.uint8)
    framed[...] = colour
    framed[BORDER:-BORDER, BORDER:-BORDER] = enlarged
    return framed


@functools.partial(jax.jit, static_argnums=0)
def _filtered_reconstructions(graphdef, state, observations, actions):
    """``[B, C + 1, *obs_shape]`` decoded filtered states after each of ``observations``
    (the first from `initial_state`, then one `observe` per action of ``actions [B, C, ...]``)."""
    model = nnx.merge(graphdef, state)
    first = model.initial_state(observations[:, 0])

    def observe(model_state, inputs):
        action, next_obs = inputs
        model_state = model.observe(model_state, action, next_obs)
        return model_state, model.decode(model_state)

    _, later = jax.lax.scan(observe, first, (jnp.swapaxes(actions, 0, 1), jnp.swapaxes(observations[:, 1:], 0, 1)))
    return jnp.concatenate([model.decode(first)[:, None], jnp.swapaxes(later, 0, 1)], axis=1)


def plot_dream_beside_real(real: np.ndarray, dreamed: np.ndarray, context: int, path: str | Path, title: str) -> None:
    """One panel per observation dimension: the real trajectory, the dream, the context shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = real.reshape(len(real), -1)
    dreamed = dreamed.reshape(len(dreamed), -1)
    dimensions = min(real.shape[1], MAX_DIMENSIONS)
    figure, axes = plt.subplots(dimensions, 1, figsize=(9, 1.8 * dimensions + 0.6), sharex=True, squeeze=False)
    dreamed_steps = np.arange(context + 1, context + 1 + len(dreamed))
    for dimension, axis in enumerate(axes[:, 0]):
        axis.plot(np.arange(len(real)), real[:, dimension], color="black", linewidth=1.4, label="real")
        axis.plot(dreamed_steps, dreamed[:, dimension], color="C0", linewidth=1.4, label="dreamed")
        if context:
            axis.axvspan(0, context, color="grey", alpha=0.15, label="observed context")
        axis.set_ylabel(f"obs[{dimension}]")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[0, 0].set_title(title, fontsize=10)
    axes[-1, 0].set_xlabel("step (the dream sees only the recorded actions after the context)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
