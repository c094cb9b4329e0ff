"""How well a world model predicts held-out real episodes, open loop.

From several points of every held-out episode, the model starts at the real state and
is stepped with the recorded actions for k = 1..H steps without seeing any more real
data. At each horizon k we compare with what really happened: observation error
(scaled per dimension by the training split's standard deviation), reward error,
termination (balanced accuracy) and the error of the k-step return. Two trivial
predictors go through the same measurement so a reader sees what the model buys:
"nothing changes" and a linear least-squares model.

Camera frames (uint8 observations of height and width) are measured in pixel units:
the frame error is the RMSE of pixel values read in ``[0, 1]`` (no per-pixel scaling,
which would blow up the pixels of a static background), "nothing changes" repeats the
last observed frame, and there is no linear predictor (its least squares over every
pixel would not fit in memory, nor mean much).

Windows are cut, predicted and scored in blocks of a fixed number (``block_megabytes``
of observations each), their errors summed per horizon, so a long held-out set of
frames never sits in memory at once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tasks.config import config, option
from tasks.episodes import Episodes
from worldmodel.conv import PIXEL_MAX

DISAGREEMENT_ROWS = 8192  # transitions whose disagreement one call computes


@config
class FidelityConfig:
    """Attributes:
    horizon: the longest open-loop horizon H.
    start_every: a rollout starts every this many steps of each held-out episode.
    min_samples: horizons with fewer rollouts than this report null.
    context: real steps a model filters (`observe`) before each rollout; None: the
        model's own (``model.context_length``: 0 for the ensemble, whose state is the
        observation; a few steps for a model with memory).
    block_megabytes: rollouts are measured in blocks of as many windows as fit in this
        many megabytes of real and predicted observations (every block of one check has
        the same size, the last padded, so the rollout compiles once).
    """

    horizon: int = option(50, min=1)
    start_every: int = option(1, min=1)
    min_samples: int = option(10, min=1)
    context: int | None = option(None, min=0)
    block_megabytes: float = option(256.0, min=0.001, help="observations (real and predicted) held per block "
                                                             "of rollouts; their count sets the block's")


@dataclasses.dataclass(frozen=True)
class OpenLoopWindows:
    """Real data from each start point: ``S`` rollouts of up to ``H`` steps.

    Attributes:
        start_obs: ``[S, *obs_shape]`` the real observation each rollout starts from.
        context_obs: ``[S, C, *obs_shape]`` the ``C`` real observations before it.
        context_actions: ``[S, C, ...]`` the actions taken between them (the last leads
            to ``start_obs``).
        actions: ``[S, H, ...]`` the recorded actions (repeated past the episode's end).
        obs: ``[S, H, *obs_shape]`` the real observation after each step.
        rewards: ``[S, H]``.
        terminated: ``[S, H]``.
        valid: ``[S, H]`` false past the end of the episode.
    """

    start_obs: np.ndarray
    context_obs: np.ndarray
    context_actions: np.ndarray
    actions: np.ndarray
    obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    valid: np.ndarray


@dataclasses.dataclass(frozen=True)
class Predictions:
    """A predictor's open-loop guesses, shaped like `OpenLoopWindows`' fields."""

    obs: np.ndarray
    rewards: np.ndarray
    continue_prob: np.ndarray


def open_loop_windows(episodes: Episodes, horizon: int, start_every: int, context: int = 0) -> OpenLoopWindows:
    """Cut held-out episodes into open-loop windows starting every ``start_every`` steps,
    each after ``context`` real steps (so the first starts at step ``context``)."""
    return windows_at(episodes, window_starts(episodes, start_every, context), horizon, context)


def window_starts(episodes: Episodes, start_every: int, context: int = 0) -> np.ndarray:
    """``[S, 2]`` (episode, step) of every open-loop window's start, in order: every
    ``start_every`` steps of each episode from step ``context`` on."""
    starts = [(index, start) for index, length in enumerate(episodes.lengths.tolist())
              for start in range(context, length, start_every)]
    if not starts:
        raise ValueError(f"no held-out episode is longer than the context of {context} steps")
    return np.asarray(starts, dtype=np.int64)


def windows_at(episodes: Episodes, starts: np.ndarray, horizon: int, context: int = 0,
               valid_rows: np.ndarray | None = None) -> OpenLoopWindows:
    """The windows starting at ``starts [S, 2]`` (episode, step; `window_starts`), each
    after ``context`` real steps; rows where ``valid_rows`` is false (padding) are
    marked invalid at every step."""
    fields = ("start_obs", "context_obs", "context_actions", "actions", "obs", "rewards", "terminated", "valid")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    for row, (index, start) in enumerate(starts.tolist()):
        episode = episodes.episode(index)
        length = len(episode)
        steps = start + np.arange(horizon)
        valid = steps < length
        if valid_rows is not None and not valid_rows[row]:
            valid = np.zeros_like(valid)
        clipped = np.minimum(steps, length - 1)
        parts["start_obs"].append(episode.observations[start])
        parts["context_obs"].append(episode.observations[start - context:start])
        parts["context_actions"].append(episode.actions[start - context:start])
        parts["actions"].append(episode.actions[clipped])
        parts["obs"].append(episode.observations[clipped + 1])
        parts["rewards"].append(np.where(valid, episode.rewards[clipped], 0.0))
        parts["terminated"].append(valid & episode.terminations[clipped])
        parts["valid"].append(valid)
    return OpenLoopWindows(**{k: np.stack(v) for k, v in parts.items()})


def model_predictions(model: nnx.Module, windows: OpenLoopWindows, key: jax.Array) -> Predictions:
    """Filter ``model`` through every window's context, then roll it open loop from the
    window's start with the recorded actions."""
    graphdef, state = nnx.split(model)
    inputs = (windows.context_obs, windows.context_actions, windows.start_obs, windows.actions)
    obs, rewards, continues = _rollout(graphdef, state, *map(jnp.asarray, inputs), key)
    return Predictions(np.asarray(obs), np.asarray(rewards), np.asarray(continues))


def filtered_state(model: nnx.Module, context_obs: jax.Array, context_actions: jax.Array, start_obs: jax.Array):
    """The model's state at ``start_obs`` after observing the real context before it."""
    if context_obs.shape[1] == 0:
        return model.initial_state(start_obs)
    later_obs = jnp.concatenate([context_obs[:, 1:], start_obs[:, None]], axis=1)

    def observe(model_state, inputs):
        action, next_obs = inputs
        return model.observe(model_state, action, next_obs), None

    state, _ = jax.lax.scan(observe, model.initial_state(context_obs[:, 0]),
                            (jnp.swapaxes(context_actions, 0, 1), jnp.swapaxes(later_obs, 0, 1)))
    return state


@jax.jit
def _rollout(graphdef, state, context_obs, context_actions, start_obs, actions, key):
    model = nnx.merge(graphdef, state)

    def step(carry, inputs):
        model_state = carry
        action, step_key = inputs
        model_state, reward, continue_prob = model.step(model_state, action, step_key)
        return model_state, (model.decode(model_state), reward, continue_prob)

    keys = jax.random.split(key, actions.shape[1])
    start = filtered_state(model, context_obs, context_actions, start_obs)
    _, (obs, rewards, continues) = jax.lax.scan(step, start, (jnp.swapaxes(actions, 0, 1), keys))
    return jnp.swapaxes(obs, 0, 1), rewards.T, continues.T


def nothing_changes_predictions(windows: OpenLoopWindows, train: Episodes | float) -> Predictions:
    """The observation stays put, the reward is the training mean (of ``train``'s
    rewards, or that mean given), nothing ends."""
    horizon = windows.actions.shape[1]
    obs = np.repeat(windows.start_obs[:, None], horizon, axis=1)
    mean = float(train.rewards.mean()) if isinstance(train, Episodes) else float(train)
    rewards = np.full(windows.rewards.shape, mean)
    return Predictions(obs, rewards, np.ones(windows.rewards.shape))


def linear_predictions(windows: OpenLoopWindows, train: Episodes, action_encoder) -> Predictions:
    """A least-squares linear model of the change in observation, the reward and ending.

    Fitted on the training transitions: ``[obs, action, 1] -> [next_obs - obs, reward]``,
    and termination as a linear function of the next observation, thresholded at 0.5.
    """
    return LinearPredictor.fit(train, action_encoder).predict(windows)


@dataclasses.dataclass(frozen=True)
class LinearPredictor:
    """`linear_predictions`' least-squares fits, made once and applied to any windows.

    Attributes:
        dynamics: ``[obs + action + 1, obs + 1]`` from ``[obs, action, 1]`` to
            ``[next_obs - obs, reward]``.
        ending: ``[obs + 1]`` from ``[next_obs, 1]`` to whether the step terminated.
        action_encoder: actions as the model takes them (one-hot for discrete).
    """

    dynamics: np.ndarray
    ending: np.ndarray
    action_encoder: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def fit(cls, train: Episodes, action_encoder) -> LinearPredictor:
        before, after = train.transitions()
        flat = train.observations.reshape(len(train.observations), -1).astype(np.float64)
        inputs = _linear_inputs(flat[before], action_encoder(train.actions))
        targets = np.concatenate([flat[after] - flat[before], train.rewards[:, None]], axis=1)
        dynamics, *_ = np.linalg.lstsq(inputs, targets, rcond=None)
        ends = np.concatenate([flat[after], np.ones((len(after), 1))], axis=1)
        ending, *_ = np.linalg.lstsq(ends, train.terminations.astype(np.float64), rcond=None)
        return cls(dynamics, ending, action_encoder)

    @classmethod
    def from_normal_equations(cls, gram: np.ndarray, moments: np.ndarray, ends_gram: np.ndarray,
                              ends_moments: np.ndarray, action_encoder) -> LinearPredictor:
        """The same fits from their normal equations (``X^T X`` and ``X^T y``, summed over
        blocks of transitions): the least-norm solution, as ``lstsq`` gives on the data."""
        dynamics, *_ = np.linalg.lstsq(gram, moments, rcond=None)
        ending, *_ = np.linalg.lstsq(ends_gram, ends_moments, rcond=None)
        return cls(dynamics, ending, action_encoder)

    def predict(self, windows: OpenLoopWindows) -> Predictions:
        samples, horizon = windows.rewards.shape
        obs_size = self.dynamics.shape[1] - 1
        current = windows.start_obs.reshape(samples, -1).astype(np.float64)
        obs, rewards, continues = [], [], []
        for k in range(horizon):
            prediction = _linear_inputs(current, self.action_encoder(windows.actions[:, k])) @ self.dynamics
            current = current + prediction[:, :obs_size]
            obs.append(current)
            rewards.append(prediction[:, obs_size])
            ended = np.concatenate([current, np.ones((samples, 1))], axis=1) @ self.ending
            continues.append((ended < 0.5).astype(np.float64))
        obs = np.stack(obs, axis=1).reshape(windows.obs.shape)
        return Predictions(obs, np.stack(rewards, axis=1), np.stack(continues, axis=1))


@dataclasses.dataclass(frozen=True)
class TrainingSummary:
    """What `fidelity_report` takes from the training split.

    Attributes:
        frames: the observations are camera frames (`holds_frames`).
        scale: what observation errors are divided by: per-dimension training standard
            deviations (`observation_scale`), or 255 for frames.
        reward_mean: the mean training reward ("nothing changes" predicts it).
        terminates: some training episode ended.
        linear: the least-squares predictor (None for frames).
    """

    frames: bool
    scale: np.ndarray
    reward_mean: float
    terminates: bool
    linear: LinearPredictor | None

    @classmethod
    def of(cls, train: Episodes, action_encoder) -> TrainingSummary:
        """The summary of episodes held in memory."""
        frames = holds_frames(train)
        return cls(frames, np.float32(PIXEL_MAX) if frames else observation_scale(train), float(train.rewards.mean()),
                   bool(train.terminations.any()), None if frames else LinearPredictor.fit(train, action_encoder))

    @classmethod
    def of_blocks(cls, blocks: Iterable[Episodes], action_encoder) -> TrainingSummary:
        """The summary of episodes read block by block: every part of it is a sum over
        blocks (the spread merged as in Chan et al.'s parallel variance, the linear fit
        from its normal equations), so no block is held after it is read."""
        count, mean, squares, reward_sum, steps, terminates, frames = 0, 0.0, 0.0, 0.0, 0, False, False
        gram = moments = ends_gram = ends_moments = 0.0
        for block in blocks:
            frames = holds_frames(block)
            if not frames:  # frames are scored in pixel units: no spread, no linear fit
                flat = block.observations.reshape(len(block.observations), -1).astype(np.float64)
                block_mean = flat.mean(axis=0)
                delta, total = block_mean - mean, count + len(flat)
                squares = squares + ((flat - block_mean) ** 2).sum(axis=0) + delta**2 * count * len(flat) / total
                mean, count = mean + delta * len(flat) / total, total
                before, after = block.transitions()
                inputs = _linear_inputs(flat[before], action_encoder(block.actions))
                targets = np.concatenate([flat[after] - flat[before], block.rewards[:, None]], axis=1)
                ends = np.concatenate([flat[after], np.ones((len(after), 1))], axis=1)
                gram, moments = gram + inputs.T @ inputs, moments + inputs.T @ targets
                ends_gram = ends_gram + ends.T @ ends
                ends_moments = ends_moments + ends.T @ block.terminations.astype(np.float64)
            reward_sum += float(block.rewards.astype(np.float64).sum())
            steps += block.num_steps
            terminates = terminates or bool(block.terminations.any())
        if not steps:
            raise ValueError("no training episodes to summarise")
        if frames:
            return cls(True, np.float32(PIXEL_MAX), reward_sum / steps, terminates, None)
        std = np.sqrt(squares / count)
        linear = LinearPredictor.from_normal_equations(gram, moments, ends_gram, ends_moments, action_encoder)
        return cls(False, np.where(std < 1e-8, 1.0, std), reward_sum / steps, terminates, linear)


@dataclasses.dataclass(frozen=True)
class HorizonSums:
    """One predictor's errors summed over the valid rollouts seen so far, per horizon ``[H]``.

    Sums of blocks of windows add up (``+``) to the sums over all of them, so
    `fidelity_report` can measure a held-out set block by block.

    Attributes:
        samples: valid rollouts at each horizon.
        squared_obs: their observation errors, each the mean over observation entries of
            the squared scaled error.
        reward_error: their absolute reward errors.
        return_error: their absolute errors of the return so far.
        terminal_steps: real terminal steps among them.
        terminal_recalled: those the predictor ended.
        continuing_steps: real non-terminal steps among them.
        continuing_recalled: those the predictor continued.
    """

    samples: np.ndarray
    squared_obs: np.ndarray
    reward_error: np.ndarray
    return_error: np.ndarray
    terminal_steps: np.ndarray
    terminal_recalled: np.ndarray
    continuing_steps: np.ndarray
    continuing_recalled: np.ndarray

    def __add__(self, other: HorizonSums) -> HorizonSums:
        return HorizonSums(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def horizon_sums(predictions: Predictions, windows: OpenLoopWindows, obs_scale: np.ndarray | float) -> HorizonSums:
    """`HorizonSums` of ``predictions`` on ``windows``, observation errors divided by
    ``obs_scale`` (per entry, or one number for all)."""
    samples, horizon = windows.valid.shape
    # Frames are uint8, where a difference would wrap around: integers are compared as float32.
    predicted, real = (np.asarray(x).reshape(samples, horizon, -1) for x in (predictions.obs, windows.obs))
    predicted, real = (x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32) for x in (predicted, real))
    difference = predicted - real
    squared = ((difference / obs_scale) ** 2).mean(axis=-1, dtype=np.float64)
    reward_error = np.abs(predictions.rewards - windows.rewards)
    return_error = np.abs(np.cumsum(predictions.rewards * windows.valid, 1) - np.cumsum(windows.rewards, 1))
    predicted_end = predictions.continue_prob < 0.5
    valid = windows.valid
    terminal = valid & windows.terminated
    continuing = valid & ~windows.terminated

    def total(values):
        return np.where(valid, values, 0).sum(axis=0)

    return HorizonSums(
        samples=valid.sum(axis=0),
        squared_obs=total(squared),
        reward_error=total(reward_error),
        return_error=total(return_error),
        terminal_steps=terminal.sum(axis=0),
        terminal_recalled=(terminal & predicted_end).sum(axis=0),
        continuing_steps=continuing.sum(axis=0),
        continuing_recalled=(continuing & ~predicted_end).sum(axis=0),
    )


def metrics_from_sums(sums: HorizonSums, min_samples: int, terminates: bool) -> dict[str, list[float | None]]:
    """Per-horizon measures from summed errors; a horizon with too few samples holds None.

    Returns ``obs_rmse``, ``reward_mae``, ``return_error``, ``samples`` and, for tasks
    that terminate, ``termination_accuracy`` (the mean of the recalls on terminal and
    non-terminal steps; None where either kind is absent).
    """
    result: dict[str, list[float | None]] = {"obs_rmse": [], "reward_mae": [], "return_error": [], "samples": []}
    if terminates:
        result["termination_accuracy"] = []
    for k, count in enumerate(sums.samples.tolist()):
        result["samples"].append(count)
        enough = count >= min_samples
        result["obs_rmse"].append(float(np.sqrt(sums.squared_obs[k] / count)) if enough else None)
        result["reward_mae"].append(float(sums.reward_error[k] / count) if enough else None)
        result["return_error"].append(float(sums.return_error[k] / count) if enough else None)
        if terminates:
            both_kinds = sums.terminal_steps[k] > 0 and sums.continuing_steps[k] > 0
            accuracy = 0.5 * (sums.terminal_recalled[k] / max(sums.terminal_steps[k], 1)
                              + sums.continuing_recalled[k] / max(sums.continuing_steps[k], 1))
            result["termination_accuracy"].append(float(accuracy) if enough and both_kinds else None)
    return result


def fidelity_metrics(
    predictions: Predictions, windows: OpenLoopWindows, obs_std: np.ndarray, min_samples: int, terminates: bool
) -> dict[str, list[float | None]]:
    """Per-horizon errors of one predictor on ``windows``, observation errors in units of
    ``obs_std``; a horizon with too few samples holds None (`metrics_from_sums`)."""
    return metrics_from_sums(horizon_sums(predictions, windows, obs_std), min_samples, terminates)


def fidelity_report(model: nnx.Module, heldout: Episodes | Iterable[Episodes],
                    train: Episodes | TrainingSummary, config: FidelityConfig, key: jax.Array) -> dict:
    """The model and the trivial predictors, measured open loop on ``heldout``.

    ``train`` is what the model learned from (or its `TrainingSummary`): it scales
    observation errors and fits the linear predictor. For camera frames (`holds_frames`)
    errors are in pixel values read in ``[0, 1]``, and ``linear`` is None. ``heldout``
    may come as blocks of episodes (a trace file read in parts). Windows go through in
    equal blocks (``config.block_megabytes``); the model's key is folded with each
    block's index after the first, so a held-out set that fits in one block is measured
    as a whole.

    Returns the report: ``heldout_episodes``, ``context`` (real steps observed before
    each rollout, its start included: ``context + 1`` observations), ``rollouts``,
    ``horizons`` (steps imagined after the context), ``obs_units`` and ``predictors``.
    """
    context = config.context if config.context is not None else getattr(model, "context_length", 0)
    summary = train if isinstance(train, TrainingSummary) else TrainingSummary.of(train, action_encoder(model))
    predictors = {
        "model": lambda windows, index: model_predictions(model, windows, key if index == 0 else jax.random.fold_in(key, index)),
        "nothing_changes": lambda windows, _: nothing_changes_predictions(windows, summary.reward_mean),
        **({} if summary.linear is None else {"linear": lambda windows, _: summary.linear.predict(windows)}),
    }
    sums: dict[str, HorizonSums] = {}
    terminates, episodes, rollouts, index = summary.terminates, 0, 0, 0
    for part in [heldout] if isinstance(heldout, Episodes) else heldout:
        episodes += part.num_episodes
        terminates = terminates or bool(part.terminations.any())
        if not (part.lengths > context).any():
            continue  # no window starts in this block
        starts = window_starts(part, config.start_every, context)
        rollouts += len(starts)
        per_block = rollouts_per_block(part, config.horizon, context, config.block_megabytes, len(starts))
        for first in range(0, len(starts), per_block):
            block = starts[first:first + per_block]
            real = np.arange(per_block) < len(block)
            # The last block is padded with invalid copies of its last window: one shape, one compilation.
            windows = windows_at(part, block[np.minimum(np.arange(per_block), len(block) - 1)], config.horizon,
                                 context, valid_rows=real)
            for name, predict in predictors.items():
                block_sums = horizon_sums(predict(windows, index), windows, summary.scale)
                sums[name] = block_sums if name not in sums else sums[name] + block_sums
            index += 1
    if not rollouts:
        raise ValueError(f"no held-out episode is longer than the context of {context} steps")
    measured = {name: metrics_from_sums(total, config.min_samples, terminates) for name, total in sums.items()}
    return {
        "heldout_episodes": episodes,
        "context": context,
        "rollouts": rollouts,
        "horizons": list(range(1, config.horizon + 1)),
        "obs_units": "pixel values in [0, 1]" if summary.frames else "standard deviations of the training split",
        "predictors": {**measured, **({"linear": None} if summary.frames else {})},
    }


def action_encoder(model: nnx.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Actions as ``model`` takes them (one-hot for discrete), as numpy: the linear predictor's inputs."""
    return lambda actions: np.asarray(model.encode_action(np.asarray(actions)))


def holds_frames(episodes: Episodes) -> bool:
    """Whether the observations are camera frames: uint8 with height and width (as
    `tasks.registry.observation_kind` tells a frame space)."""
    return episodes.observations.dtype == np.uint8 and episodes.observations.ndim in (3, 4)


def rollouts_per_block(episodes: Episodes, horizon: int, context: int, megabytes: float, rollouts: int) -> int:
    """How many windows one block of `fidelity_report` holds: as many as fit in
    ``megabytes`` of observations (real ones, and predictions as float32 with their
    float64 errors), at least one, at most ``rollouts``."""
    values = int(np.prod(episodes.observations.shape[1:]))
    held = (horizon + context + 1) * values * episodes.observations.itemsize + horizon * values * (4 + 8)
    return int(min(max(megabytes * 2**20 // held, 1), rollouts))


def open_loop_squared_errors(model: nnx.Module, episodes: Episodes, obs_std: np.ndarray, horizon: int,
                             key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """The model's squared observation error ``horizon`` steps open loop, from every step of
    ``episodes`` (in order), in units of ``obs_std`` and averaged over dimensions; and
    whether each start has that many steps after it. The root of the mean over a group
    of valid starts is that group's RMSE at ``horizon``, as `fidelity_metrics` reports it."""
    windows = open_loop_windows(episodes, horizon, start_every=1)
    predicted = model_predictions(model, windows, key).obs[:, -1].reshape(len(windows.obs), -1)
    error = ((predicted - windows.obs[:, -1].reshape(len(windows.obs), -1)) / obs_std.ravel()) ** 2
    return error.mean(axis=-1), windows.valid[:, -1]


def one_step_errors(model: nnx.Module, episodes: Episodes, obs_std: np.ndarray,
                    key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """For every transition of ``episodes``: the model's squared one-step observation error
    (in units of ``obs_std``, averaged over dimensions) and its disagreement about that
    step (`uncertainty`), which says whether the model knew the state and action."""
    squared, _ = open_loop_squared_errors(model, episodes, obs_std, 1, key)
    return squared, transition_disagreement(model, episodes)


def transition_disagreement(model: nnx.Module, episodes: Episodes) -> np.ndarray:
    """The model's disagreement (`uncertainty`) about every real transition of ``episodes``.

    Computed `DISAGREEMENT_ROWS` transitions at a time (the last part padded), so any
    number of transitions costs one compilation and bounded memory.
    """
    before, _ = episodes.transitions()
    graphdef, state = nnx.split(model)

    def padded(values: np.ndarray) -> jax.Array:
        return jnp.asarray(np.pad(values, [(0, DISAGREEMENT_ROWS - len(values))] + [(0, 0)] * (values.ndim - 1)))

    parts = []
    for start in range(0, len(before), DISAGREEMENT_ROWS):
        rows = before[start:start + DISAGREEMENT_ROWS]
        spread = _disagreement(graphdef, state, padded(episodes.observations[rows].astype(np.float32)),
                               padded(episodes.actions[start:start + DISAGREEMENT_ROWS]))
        parts.append(np.asarray(spread)[: len(rows)])
    return np.concatenate(parts)


@jax.jit
def _disagreement(graphdef, state, observations, actions):
    model = nnx.merge(graphdef, state)
    return model.uncertainty(model.initial_state(observations), actions)


def _linear_inputs(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    return np.concatenate([obs, actions.reshape(len(obs), -1), np.ones((len(obs), 1))], axis=1)


def observation_scale(train: Episodes) -> np.ndarray:
    """Per-dimension standard deviation of training observations (constant dims count as 1)."""
    flat = train.observations.reshape(len(train.observations), -1).astype(np.float64)
    std = flat.std(axis=0)
    return np.where(std < 1e-8, 1.0, std)


def plot_fidelity(report: dict, path, title: str) -> None:
    """Error against horizon, one line per predictor, one panel per measure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizons = report["horizons"]
    frames = report.get("obs_units", "").startswith("pixel")
    measures = [
        ("obs_rmse", "frame RMSE (pixel values in [0, 1])" if frames else "observation RMSE (training-std units)", True),
        ("reward_mae", "reward absolute error", True),
        ("return_error", "k-step return absolute error", True),
        ("termination_accuracy", "termination balanced accuracy", False),
    ]
    measures = [m for m in measures if m[0] in report["predictors"]["model"]]
    columns = 2
    rows = math.ceil(len(measures) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(11, 4 * rows), squeeze=False)
    styles = {"model": ("C0", "world model"), "nothing_changes": ("C7", "nothing changes"), "linear": ("C1", "linear least squares")}
    for axis, (key, label, log_scale) in zip(axes.flat, measures):
        for name, (color, legend) in styles.items():
            if report["predictors"].get(name) is None:  # no linear predictor for frames
                continue
            values = np.array([np.nan if v is None else v for v in report["predictors"][name][key]], dtype=float)
            axis.plot(horizons, values, color=color, label=legend, linewidth=2 if name == "model" else 1.2)
        axis.set_xlabel("open-loop horizon k (steps)")
        axis.set_ylabel(label)
        if log_scale:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    for axis in list(axes.flat)[len(measures):]:
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
