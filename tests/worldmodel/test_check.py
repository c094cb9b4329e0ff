"""`dreamer check` and the open-loop fidelity measures behind it."""

from __future__ import annotations

import json
import math
import shutil

import jax
import numpy as np
import pytest

from dreamer.cli import main
from tasks.episodes import Episode, Episodes
from tasks.registry import get_task
from tasks.splits import split_of
from tasks.traces import read_traces, write_traces
from worldmodel.saving import load
from worldmodel.dream_beside_real import dream_of_episode
from worldmodel.fidelity import (
    Predictions,
    TrainingSummary,
    fidelity_metrics,
    nothing_changes_predictions,
    observation_scale,
    open_loop_windows,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MEASURES = ("obs_rmse", "reward_mae", "termination_accuracy")


def labelled_episode(length: int, terminated: bool, label: int) -> Episode:
    """An episode whose observation at time t is [label + t, -2 (label + t)], action 0.1 t, reward 10 label + t."""
    t = np.arange(length + 1, dtype=np.float32) + label
    last = np.arange(length) == length - 1
    return Episode(
        observations=np.stack([t, -2 * t], axis=1),
        actions=(0.1 * np.arange(length, dtype=np.float32))[:, None],
        rewards=10.0 * label + np.arange(length, dtype=np.float32),
        terminations=last & terminated,
        truncations=last & (not terminated),
    )


@pytest.fixture
def labelled():
    """A terminated episode of 3 steps (label 0) and a truncated one of 5 steps (label 100)."""
    return Episodes.from_list([labelled_episode(3, True, 0), labelled_episode(5, False, 100)])


# -- open-loop windows ------------------------------------------------------------------


def test_a_windows_context_is_the_real_steps_before_its_start(labelled):
    windows = open_loop_windows(labelled, horizon=2, start_every=1, context=2)
    # starts: episode 0 at step 2, episode 1 at steps 2, 3 and 4 (no room for a context before)
    np.testing.assert_array_equal(windows.start_obs[:, 0], [2, 102, 103, 104])
    np.testing.assert_array_equal(windows.context_obs[:, :, 0], [[0, 1], [100, 101], [101, 102], [102, 103]])
    np.testing.assert_array_equal(windows.context_actions[:, :, 0], np.float32([[0, 0.1], [0, 0.1], [0.1, 0.2], [0.2, 0.3]]))
    with pytest.raises(ValueError, match="longer than the context"):
        open_loop_windows(labelled, horizon=2, start_every=1, context=5)


def test_open_loop_windows_hold_the_real_steps_after_each_start(labelled):
    windows = open_loop_windows(labelled, horizon=4, start_every=2)

    # starts: episode 0 at steps 0 and 2, episode 1 at steps 0, 2 and 4
    np.testing.assert_array_equal(windows.start_obs[:, 0], [0, 2, 100, 102, 104])
    np.testing.assert_array_equal(windows.valid, [
        [1, 1, 1, 0],
        [1, 0, 0, 0],
        [1, 1, 1, 1],
        [1, 1, 1, 0],
        [1, 0, 0, 0],
    ])
    # the observation after step k of the window, the episode's last one past its end
    np.testing.assert_array_equal(windows.obs[:, :, 0], [
        [1, 2, 3, 3],
        [3, 3, 3, 3],
        [101, 102, 103, 104],
        [103, 104, 105, 105],
        [105, 105, 105, 105],
    ])
    np.testing.assert_array_equal(windows.obs[..., 1], -2 * windows.obs[..., 0])
    # recorded actions, the last one repeated past the end
    np.testing.assert_allclose(windows.actions[..., 0], 0.1 * np.array([
        [0, 1, 2, 2],
        [2, 2, 2, 2],
        [0, 1, 2, 3],
        [2, 3, 4, 4],
        [4, 4, 4, 4],
    ], dtype=np.float32), rtol=1e-6)
    # rewards are zero and nothing ends past the end
    np.testing.assert_array_equal(windows.rewards, [
        [0, 1, 2, 0],
        [2, 0, 0, 0],
        [1000, 1001, 1002, 1003],
        [1002, 1003, 1004, 0],
        [1004, 0, 0, 0],
    ])
    np.testing.assert_array_equal(windows.terminated, [
        [0, 0, 1, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ])


# -- fidelity measures ------------------------------------------------------------------


def test_nothing_changes_scores_the_scaled_rms_change_since_the_start(cartpole_episodes):
    train, heldout = cartpole_episodes.select(range(10)), cartpole_episodes.select(range(10, 20))
    windows = open_loop_windows(heldout, horizon=10, start_every=1)
    std = observation_scale(train)

    metrics = fidelity_metrics(nothing_changes_predictions(windows, train), windows, std, min_samples=1, terminates=True)

    mean_reward = float(train.rewards.mean())
    for k in range(1, 11):
        changes = [(e.observations[s + k] - e.observations[s]) / std for e in heldout for s in range(len(e) - k + 1)]
        rewards = [e.rewards[s + k - 1] for e in heldout for s in range(len(e) - k + 1)]
        assert metrics["samples"][k - 1] == len(changes)
        assert metrics["obs_rmse"][k - 1] == pytest.approx(math.sqrt(np.mean(np.square(changes))), rel=1e-12)
        assert metrics["reward_mae"][k - 1] == pytest.approx(np.mean(np.abs(np.subtract(rewards, mean_reward))), rel=1e-9)


def test_horizons_with_too_few_rollouts_report_none(labelled):
    windows = open_loop_windows(labelled, horizon=5, start_every=1)

    metrics = fidelity_metrics(nothing_changes_predictions(windows, labelled), windows, np.ones(2), min_samples=4, terminates=True)

    assert metrics["samples"] == [8, 6, 4, 2, 1]
    for measure in ("obs_rmse", "reward_mae", "return_error", "termination_accuracy"):
        assert all(isinstance(v, float) for v in metrics[measure][:3]), measure
        assert metrics[measure][3:] == [None, None], measure


def test_never_ending_scores_a_balanced_accuracy_of_one_half(labelled):
    windows = open_loop_windows(labelled, horizon=5, start_every=1)

    metrics = fidelity_metrics(nothing_changes_predictions(windows, labelled), windows, np.ones(2), min_samples=1, terminates=True)

    # horizons 4 and 5 reach only the truncated episode: no terminal step to recall
    assert metrics["termination_accuracy"] == [0.5, 0.5, 0.5, None, None]


def test_a_perfect_predictor_scores_no_error_and_full_accuracy(cartpole_episodes):
    windows = open_loop_windows(cartpole_episodes, horizon=10, start_every=1)
    perfect = Predictions(obs=windows.obs, rewards=windows.rewards, continue_prob=np.where(windows.terminated, 0.0, 1.0))

    metrics = fidelity_metrics(perfect, windows, observation_scale(cartpole_episodes), min_samples=10, terminates=True)

    assert metrics["obs_rmse"] == [0.0] * 10
    assert metrics["reward_mae"] == [0.0] * 10
    assert metrics["return_error"] == [0.0] * 10
    assert metrics["termination_accuracy"] == [1.0] * 10


# -- the command ------------------------------------------------------------------------


def test_check_reports_every_predictor_at_every_horizon_and_writes_its_files(capfd, tmp_path, cartpole_run, cartpole_traces):
    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    capfd.readouterr()

    code = main(["check", "--world-model", str(run), "--traces", str(cartpole_traces), "--fidelity.horizon", "10", "--json"])
    out, err = capfd.readouterr()  # everything written to file descriptors 1 and 2

    assert code == 0, err
    assert len(out.splitlines()) == 1
    report = json.loads(out)
    assert report["horizons"] == list(range(1, 11))
    assert set(report["predictors"]) == {"model", "nothing_changes", "linear"}
    for name, metrics in report["predictors"].items():
        for measure in MEASURES:
            values = metrics[measure]
            assert len(values) == 10, (name, measure)
            assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in values), (name, measure)
        assert isinstance(metrics["obs_rmse"][0], float), name
    assert {v for v in report["predictors"]["nothing_changes"]["termination_accuracy"] if v is not None} == {0.5}
    assert json.loads((run / "fidelity.json").read_text()) == report
    assert (run / "fidelity.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_training_summary_of_blocks_is_the_summary_of_them_whole(cartpole_episodes):
    encode = lambda actions: np.eye(2)[np.asarray(actions)]  # noqa: E731
    blocks = [cartpole_episodes.select(range(start, min(start + 7, cartpole_episodes.num_episodes)))
              for start in range(0, cartpole_episodes.num_episodes, 7)]
    whole, summed = TrainingSummary.of(cartpole_episodes, encode), TrainingSummary.of_blocks(blocks, encode)

    np.testing.assert_allclose(summed.scale, whole.scale, rtol=1e-9)
    assert summed.reward_mean == pytest.approx(whole.reward_mean, rel=1e-6)
    assert summed.terminates == whole.terminates and not summed.frames
    np.testing.assert_allclose(summed.linear.dynamics, whole.linear.dynamics, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(summed.linear.ending, whole.linear.ending, rtol=1e-6, atol=1e-9)


def test_a_training_summary_of_frames_keeps_pixel_units_and_no_linear_predictor():
    frames = Episodes.from_list([Episode(observations=np.full((5, 8, 8, 3), 7 * i, np.uint8),
                                         actions=np.zeros((4, 1), np.float32), rewards=np.full(4, float(i), np.float32),
                                         terminations=np.zeros(4, bool), truncations=np.eye(4, dtype=bool)[-1])
                                 for i in range(3)])
    summary = TrainingSummary.of_blocks([frames.select([0, 1]), frames.select([2])], lambda a: np.asarray(a))

    assert summary.frames and summary.linear is None and float(summary.scale) == 255.0
    assert summary.reward_mean == pytest.approx(1.0) and not summary.terminates


def test_a_check_reading_its_traces_in_blocks_measures_what_one_reading_them_whole_does(
        capfd, tmp_path, cartpole_run, cartpole_traces):
    reports = {}
    for name, extra in (("whole", []), ("blocks", ["--block-steps", "40"])):
        capfd.readouterr()
        code = main(["check", "--world-model", str(cartpole_run), "--traces", str(cartpole_traces),
                     "--fidelity.horizon", "10", "--out", str(tmp_path / name), "--json", *extra])
        out, err = capfd.readouterr()
        assert code == 0, err
        reports[name] = json.loads(out)
    whole, blocks = reports["whole"], reports["blocks"]
    # Blocks of 40 steps hold one to three episodes; the training summary is built from
    # sums over blocks, the windows cut block by block.
    assert (blocks["rollouts"], blocks["heldout_episodes"]) == (whole["rollouts"], whole["heldout_episodes"])
    for name in ("nothing_changes", "linear"):
        for measure, values in whole["predictors"][name].items():
            assert blocks["predictors"][name][measure] == pytest.approx(values, rel=1e-4, abs=1e-6), (name, measure)
    # The model draws its elites with keys folded per block of windows, so it is measured
    # on other draws: close, not equal.
    assert blocks["predictors"]["model"]["obs_rmse"] == pytest.approx(whole["predictors"]["model"]["obs_rmse"], rel=0.1)
    assert blocks["dream_plots"] == whole["dream_plots"]


def test_check_reports_no_termination_accuracy_for_a_task_that_never_terminates(capfd, tmp_path, pendulum_run, pendulum_traces):
    run = tmp_path / "run"
    shutil.copytree(pendulum_run, run)
    capfd.readouterr()

    code = main(["check", "--world-model", str(run), "--traces", str(pendulum_traces), "--fidelity.horizon", "10", "--json"])
    out, err = capfd.readouterr()

    assert code == 0, err
    report = json.loads(out)
    assert report["horizons"] == list(range(1, 11))
    for name, metrics in report["predictors"].items():
        assert "termination_accuracy" not in metrics, name
        assert all(isinstance(v, float) for v in metrics["obs_rmse"] + metrics["reward_mae"]), name
    assert (run / "fidelity.png").read_bytes().startswith(PNG_SIGNATURE)
    # Up to 3 held-out episodes dreamed whole beside the real ones, named by their held-out index.
    assert 1 <= len(report["dream_plots"]) <= min(3, report["heldout_episodes"])
    for name in report["dream_plots"]:
        assert name.startswith("dream-") and (run / name).read_bytes().startswith(PNG_SIGNATURE)


def test_a_dream_of_a_whole_episode_starts_after_its_context(pendulum_run, pendulum_traces):
    model = load(pendulum_run)
    episode = read_traces(pendulum_traces).episodes.episode(0)
    real, dreamed = dream_of_episode(model, episode, 3, jax.random.key(0))
    np.testing.assert_array_equal(real, episode.observations)
    assert dreamed.shape == (len(episode) - 3, *episode.observations.shape[1:])
    assert np.isfinite(dreamed).all()


def test_check_refuses_traces_without_held_out_episodes(capfd, tmp_path, cartpole_run, record_random):
    episode = next(
        episodes for seed in range(20)
        if split_of((episodes := record_random("cartpole", 1, seed=seed)).content_ids()[0], 0) == "train"
    )
    traces = tmp_path / "one-episode"
    write_traces(traces, episode, get_task("cartpole"))
    report_dir = tmp_path / "report"
    capfd.readouterr()

    code = main(["check", "--world-model", str(cartpole_run), "--traces", str(traces), "--out", str(report_dir), "--json"])
    out, err = capfd.readouterr()

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"dreamer: error: {traces}: ") and "held-out" in err
    assert not report_dir.exists()
