"""How well a world model predicts held-out real episodes, open loop.

From several points of every held-out episode, the model starts at the real state and
is stepped with the recorded actions for k = 1..H steps without seeing any more real
data. At each horizon k we compare with what really happened: observation error
(scaled per dimension by the training split's standard deviation), reward error,
termination (balanced accuracy) and the error of the k-step return. Two trivial
predictors go through the same measurement so a reader sees what the model buys:
"nothing changes" and a linear least-squares model.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tasks.config import config, option
from tasks.episodes import Episodes


@config
class FidelityConfig:
    """Attributes:
    horizon: the longest open-loop horizon H.
    start_every: a rollout starts every this many steps of each held-out episode.
    min_samples: horizons with fewer rollouts than this report null.
    context: real steps a model filters (`observe`) before each rollout; None: the
        model's own (``model.context_length``: 0 for the ensemble, whose state is the
        observation; a few steps for a model with memory).
    """

    horizon: int = option(50, min=1)
    start_every: int = option(1, min=1)
    min_samples: int = option(10, min=1)
    context: int | None = option(None, min=0)


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
    fields = ("start_obs", "context_obs", "context_actions", "actions", "obs", "rewards", "terminated", "valid")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    for episode in episodes:
        length = len(episode)
        for start in range(context, length, start_every):
            steps = start + np.arange(horizon)
            valid = steps < length
            clipped = np.minimum(steps, length - 1)
            parts["start_obs"].append(episode.observations[start])
            parts["context_obs"].append(episode.observations[start - context:start])
            parts["context_actions"].append(episode.actions[start - context:start])
            parts["actions"].append(episode.actions[clipped])
            parts["obs"].append(episode.observations[clipped + 1])
            parts["rewards"].append(np.where(valid, episode.rewards[clipped], 0.0))
            parts["terminated"].append(valid & episode.terminations[clipped])
            parts["valid"].append(valid)
    if not parts["start_obs"]:
        raise ValueError(f"no held-out episode is longer than the context of {context} steps")
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


def nothing_changes_predictions(windows: OpenLoopWindows, train: Episodes) -> Predictions:
    """The observation stays put, the reward is the training mean, nothing ends."""
    horizon = windows.actions.shape[1]
    obs = np.repeat(windows.start_obs[:, None], horizon, axis=1)
    rewards = np.full(windows.rewards.shape, float(train.rewards.mean()))
    return Predictions(obs, rewards, np.ones(windows.rewards.shape))


def linear_predictions(windows: OpenLoopWindows, train: Episodes, action_encoder) -> Predictions:
    """A least-squares linear model of the change in observation, the reward and ending.

    Fitted on the training transitions: ``[obs, action, 1] -> [next_obs - obs, reward]``,
    and termination as a linear function of the next observation, thresholded at 0.5.
    """
    before, after = train.transitions()
    flat = train.observations.reshape(len(train.observations), -1).astype(np.float64)
    inputs = _linear_inputs(flat[before], action_encoder(train.actions))
    targets = np.concatenate([flat[after] - flat[before], train.rewards[:, None]], axis=1)
    dynamics, *_ = np.linalg.lstsq(inputs, targets, rcond=None)
    ends = np.concatenate([flat[after], np.ones((len(after), 1))], axis=1)
    ending, *_ = np.linalg.lstsq(ends, train.terminations.astype(np.float64), rcond=None)

    samples, horizon = windows.rewards.shape
    obs_size = flat.shape[1]
    current = windows.start_obs.reshape(samples, -1).astype(np.float64)
    obs, rewards, continues = [], [], []
    for k in range(horizon):
        prediction = _linear_inputs(current, action_encoder(windows.actions[:, k])) @ dynamics
        current = current + prediction[:, :obs_size]
        obs.append(current)
        rewards.append(prediction[:, obs_size])
        ended = np.concatenate([current, np.ones((samples, 1))], axis=1) @ ending
        continues.append((ended < 0.5).astype(np.float64))
    obs = np.stack(obs, axis=1).reshape(windows.obs.shape)
    return Predictions(obs, np.stack(rewards, axis=1), np.stack(continues, axis=1))


def fidelity_metrics(
    predictions: Predictions, windows: OpenLoopWindows, obs_std: np.ndarray, min_samples: int, terminates: bool
) -> dict[str, list[float | None]]:
    """Per-horizon errors of one predictor; a horizon with too few samples holds None.

    Returns ``obs_rmse``, ``reward_mae``, ``return_error`` and, for tasks that terminate,
    ``termination_accuracy`` (mean of the recalls on terminal and non-terminal steps).
    """
    samples, horizon = windows.valid.shape
    scaled_error = ((predictions.obs - windows.obs).reshape(samples, horizon, -1) / obs_std) ** 2
    squared = scaled_error.mean(axis=-1)
    reward_error = np.abs(predictions.rewards - windows.rewards)
    return_error = np.abs(np.cumsum(predictions.rewards * windows.valid, 1) - np.cumsum(windows.rewards, 1))
    predicted_end = predictions.continue_prob < 0.5
    result: dict[str, list[float | None]] = {"obs_rmse": [], "reward_mae": [], "return_error": [], "samples": []}
    if terminates:
        result["termination_accuracy"] = []
    for k in range(horizon):
        valid = windows.valid[:, k]
        count = int(valid.sum())
        result["samples"].append(count)
        enough = count >= min_samples
        result["obs_rmse"].append(float(np.sqrt(squared[valid, k].mean())) if enough else None)
        result["reward_mae"].append(float(reward_error[valid, k].mean()) if enough else None)
        result["return_error"].append(float(return_error[valid, k].mean()) if enough else None)
        if terminates:
            result["termination_accuracy"].append(
                _balanced_accuracy(predicted_end[valid, k], windows.terminated[valid, k]) if enough else None
            )
    return result


def fidelity_report(model: nnx.Module, heldout: Episodes, train: Episodes, config: FidelityConfig,
                    key: jax.Array) -> dict:
    """The model and both trivial predictors, measured open loop on ``heldout``.

    ``train`` is what the model learned from: it scales observation errors and fits the
    linear predictor.
    """
    context = config.context if config.context is not None else getattr(model, "context_length", 0)
    windows = open_loop_windows(heldout, config.horizon, config.start_every, context)
    scale = observation_scale(train)
    terminates = bool(train.terminations.any() or heldout.terminations.any())
    encode = lambda actions: np.asarray(model.encode_action(np.asarray(actions)))  # noqa: E731
    predictors = {
        "model": model_predictions(model, windows, key),
        "nothing_changes": nothing_changes_predictions(windows, train),
        "linear": linear_predictions(windows, train, encode),
    }
    return {
        "heldout_episodes": heldout.num_episodes,
        "context": context,
        "rollouts": int(windows.valid.shape[0]),
        "horizons": list(range(1, config.horizon + 1)),
        "predictors": {
            name: fidelity_metrics(p, windows, scale, config.min_samples, terminates) for name, p in predictors.items()
        },
    }


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
    """The model's disagreement (`uncertainty`) about every real transition of ``episodes``."""
    before, _ = episodes.transitions()
    graphdef, state = nnx.split(model)
    return np.asarray(_disagreement(graphdef, state, jnp.asarray(episodes.observations[before], dtype=jnp.float32),
                                    jnp.asarray(episodes.actions)))


@jax.jit
def _disagreement(graphdef, state, observations, actions):
    model = nnx.merge(graphdef, state)
    return model.uncertainty(model.initial_state(observations), actions)


def _balanced_accuracy(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    """Mean recall on the two classes; None if either class is absent."""
    positives, negatives = actual.sum(), (~actual).sum()
    if positives == 0 or negatives == 0:
        return None
    recall_terminal = (predicted & actual).sum() / positives
    recall_continuing = (~predicted & ~actual).sum() / negatives
    return float(0.5 * (recall_terminal + recall_continuing))


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
    measures = [
        ("obs_rmse", "observation RMSE (training-std units)", True),
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
