"""A dream beside what really happened: one held-out episode, replayed in the model.

The model observes the episode's first real steps (its context), then imagines the rest
from the recorded actions alone; the picture puts each observation dimension of the
dream over the real one, so a reader sees where and how the model drifts. `dreamer
check` draws a few sampled held-out episodes this way.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import nnx

from tasks.episodes import Episode, Episodes
from worldmodel.fidelity import model_predictions, open_loop_windows

MAX_DIMENSIONS = 8  # panels drawn; wider observations show their first dimensions


def dream_of_episode(model: nnx.Module, episode: Episode, context: int, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """The episode's real observations ``[T + 1, *obs_shape]`` and the model's dream of
    them after ``context`` observed steps, ``[T - context, *obs_shape]``."""
    windows = open_loop_windows(Episodes.from_list([episode]), len(episode) - context, len(episode), context)
    dreamed = model_predictions(model, windows, key).obs[0]
    return episode.observations, dreamed


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
