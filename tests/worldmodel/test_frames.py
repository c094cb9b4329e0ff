"""Camera frames through the world-model code: the convolution layers, fitting on frames,
`dreamer check` on frames (pixel-unit errors, no linear predictor, dream GIFs) and
`DreamEnv` showing dreamed frames or the model's latents.

The frames are 8 x 8 pictures of a square that an action moves, from a small gymnasium
environment registered by a module on the path (a user's plant, ``gym:MODULE:ENV_ID``),
so everything compiles and runs in seconds on a CPU; the 64 x 64 pixel tasks go through
the same code.
"""

from __future__ import annotations

import json
import math
import textwrap

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from dreamer.cli import main
from tasks.errors import InputError
from tasks.registry import get_task
from tasks.splits import SplitFractions, fitting_episodes, split_record
from tasks.sampler import sequence_data
from tasks.traces import read_traces, write_traces
from worldmodel.conv import (
    FrameDecoder,
    FrameEncoder,
    centred_to_frames,
    convolve,
    depth_to_space,
    downsampling_stages,
    frames_to_centred,
)
from worldmodel.dream_env import DreamEnv
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fidelity import FidelityConfig, fidelity_report
from worldmodel.fit import FitConfig, fit_world_model
from worldmodel.rssm import RSSMConfig, RSSMModel
from worldmodel.saving import build_model_for_spaces, load, save_model

PLANT = "gym:dreamer_test_frames:DreamerTestFrames-v0"
PLANT_SOURCE = '''
import gymnasium as gym
import numpy as np

class SquareFrames(gym.Env):
    """A 3 x 3 white square on an 8 x 8 black frame, moved sideways by the action."""

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.column = float(self.np_random.uniform(0, 5))
        return self._frame(), {}

    def step(self, action):
        self.column = float(np.clip(self.column + float(np.asarray(action).ravel()[0]), 0, 5))
        return self._frame(), -abs(self.column - 2.5), False, False, {}

    def _frame(self):
        frame = np.zeros((8, 8, 3), np.uint8)
        column = int(round(self.column))
        frame[3:6, column:column + 3] = 255
        return frame

gym.register("DreamerTestFrames-v0", entry_point="dreamer_test_frames:SquareFrames", max_episode_steps=14)
'''
FRACTIONS = SplitFractions()


@pytest.fixture(scope="module")
def frames_task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plant")
    (folder / "dreamer_test_frames.py").write_text(textwrap.dedent(PLANT_SOURCE))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield get_task(PLANT)


@pytest.fixture(scope="module")
def frames_run(tmp_path_factory, frames_task, record_random):
    """Trace files of the square (10 episodes to learn from, 2 unseen) and a run directory
    holding a tiny RSSM for them (its statistics set, its weights as initialised)."""
    folder = tmp_path_factory.mktemp("frames")
    traces, unseen, run = folder / "traces", folder / "unseen", folder / "run"
    episodes = record_random(PLANT, 10)
    write_traces(traces, episodes, frames_task)
    write_traces(unseen, record_random(PLANT, 2, seed=100), frames_task)
    model = RSSMModel((8, 8, 3), 1, False, RSSMConfig(size="tiny"), nnx.Rngs(0))
    train, validation = fitting_episodes(episodes, 0, FRACTIONS)
    model.fit_statistics(train)
    run.mkdir()
    save_model(run, model, {**frames_task.record(), "traces": str(traces), "split": split_record(0, FRACTIONS)})
    return {"traces": traces, "unseen": unseen, "run": run, "train": train, "validation": validation}


# -- the layers --------------------------------------------------------------------------


@pytest.mark.parametrize("kernel, stride, size", [(4, 2, 7), (3, 1, 6)])
def test_convolution_by_patches_equals_xlas_same_padded_convolution(kernel, stride, size):
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    weights = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 5))
    expected = jax.lax.conv_general_dilated(x, weights, (stride, stride), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(convolve(x, weights, stride), expected, rtol=1e-5, atol=1e-5)


def test_depth_to_space_puts_each_pixels_channels_into_its_two_by_two_patch():
    x = jnp.arange(8.0).reshape(1, 1, 2, 4)  # two pixels of four channels, one output channel
    np.testing.assert_array_equal(depth_to_space(x, 2)[0, :, :, 0], [[0, 1, 4, 5], [2, 3, 6, 7]])


def test_the_encoder_halves_frames_down_to_four_rows_and_the_decoder_builds_them_back():
    assert downsampling_stages((64, 64, 3)) == 4 and downsampling_stages((8, 16, 3)) == 1
    with pytest.raises(ValueError, match="halve evenly"):
        downsampling_stages((36, 36, 3))
    with pytest.raises(ValueError, match="height, width"):
        downsampling_stages((64, 64))
    encoder = FrameEncoder((16, 16, 3), 4, nnx.Rngs(0))
    decoder = FrameDecoder(10, (16, 16, 3), 4, nnx.Rngs(0))
    frames = jax.ShapeDtypeStruct((2, 5, 16, 16, 3), jnp.uint8)  # any leading axes
    assert jax.eval_shape(encoder, frames).shape == (2, 5, encoder.embedding_size) == (2, 5, 4 * 4 * 8)
    assert jax.eval_shape(decoder, jax.ShapeDtypeStruct((2, 5, 10), jnp.float32)).shape == (2, 5, 16, 16, 3)


def test_frames_are_read_centred_and_predictions_come_back_as_clipped_pixel_values():
    np.testing.assert_allclose(frames_to_centred(np.array([0, 51, 255], np.uint8)), [-0.5, -0.3, 0.5], atol=1e-7)
    np.testing.assert_allclose(centred_to_frames(jnp.array([-0.7, -0.3, 0.0, 0.9])), [0, 51, 127.5, 255], rtol=1e-6)


# -- fitting -----------------------------------------------------------------------------


def test_a_frame_model_fits_from_uint8_frames_with_its_own_batch_size(frames_run):
    train, validation = frames_run["train"], frames_run["validation"]
    assert train.observations.dtype == np.uint8
    # Frames stay uint8 on the device until a batch is drawn: the float copy is the batch's alone.
    assert sequence_data(train).observations.dtype == jnp.uint8
    model = RSSMModel((8, 8, 3), 1, False, RSSMConfig(size="tiny"), nnx.Rngs(0))
    result = fit_world_model(model, train, validation, FitConfig(updates_per_call=2, max_updates=2),
                             progress=False)
    assert result.updates == 2 and math.isfinite(result.validation_loss)
    # 16 sequences of 32 steps per update: the model's own batch size, not the vector default.
    assert result.transitions_per_second * result.wall_seconds == pytest.approx(2 * 16 * 32, rel=1e-6)


def test_a_model_for_frames_is_an_rssm_and_the_ensemble_is_refused_in_one_line(frames_task):
    spaces = (frames_task.observation_space, frames_task.action_space)
    assert build_model_for_spaces("rssm", *spaces, RSSMConfig(size="tiny")).reads_frames
    with pytest.raises(InputError, match="--model rssm reads frames"):
        build_model_for_spaces("ensemble", *spaces, EnsembleConfig())
    for shape, problem in (((9, 9, 3), "do not halve evenly"), ((64, 64), "must be \\[height, width, channels\\]")):
        foreign = gym.spaces.Box(0, 255, shape, np.uint8)
        with pytest.raises(InputError, match=problem + ".*resize them"):
            build_model_for_spaces("rssm", foreign, frames_task.action_space, RSSMConfig(size="tiny"))


def test_foreign_jpeg_encoded_frames_are_read_decoded_with_one_notice(capfd, monkeypatch, tmp_path, frames_task,
                                                                      record_random):
    import tasks.traces

    # A writer other than ours: Minari's default JPEG encoding of frames.
    plain_new = tasks.traces.MinariStorage.new
    monkeypatch.setattr(tasks.traces.MinariStorage, "new",
                        lambda *args, **kwargs: plain_new(*args, **{**kwargs, "jpeg_encoding": True}))
    episodes = record_random(PLANT, 1)
    write_traces(tmp_path / "jpeg", episodes, frames_task)
    monkeypatch.setattr(tasks.traces.MinariStorage, "new", plain_new)
    capfd.readouterr()
    read = read_traces(tmp_path / "jpeg").episodes
    assert read.observations.shape == episodes.observations.shape and read.observations.dtype == np.uint8
    assert capfd.readouterr().err.strip().endswith("frames stored JPEG-encoded (lossy) are read decoded")


# -- dreamer check -----------------------------------------------------------------------


def test_check_on_frames_reports_pixel_errors_and_writes_dream_videos(capfd, tmp_path, frames_run):
    out = tmp_path / "check"
    capfd.readouterr()
    # 0.045 MB of frames per block: five windows at a time, the last block padded.
    code = main(["check", "--world-model", str(frames_run["run"]), "--traces", str(frames_run["unseen"]),
                 "--split", "all", "--fidelity.horizon", "3", "--fidelity.min-samples", "1",
                 "--fidelity.block-megabytes", "0.045",
                 "--dreams", "1", "--out", str(out), "--json"])
    printed, err = capfd.readouterr()

    assert code == 0, err
    report = json.loads(printed)
    assert report == json.loads((out / "fidelity.json").read_text())
    assert report["horizons"] == [1, 2, 3]
    assert report["context"] == RSSMModel.context_length and report["observed_frames"] == report["context"] + 1
    assert report["obs_units"] == "pixel values in [0, 1]"
    assert report["predictors"]["linear"] is None
    assert report["rollouts"] == 2 * (14 - report["context"])
    for name in ("model", "nothing_changes"):
        errors = report["predictors"][name]["obs_rmse"]
        assert all(0 <= error <= 1 for error in errors), (name, errors)
        assert report["predictors"][name]["samples"][0] == report["rollouts"]
    assert report["dream_plots"] == [] and len(report["dream_videos"]) == 1
    video = Image.open(out / report["dream_videos"][0])
    assert video.format == "GIF" and video.n_frames == 15  # every step of the episode, its reset frame too
    assert (out / "fidelity.png").is_file()


def test_nothing_changes_on_frames_is_the_pixel_rmse_of_repeating_the_last_observed_frame(frames_run):
    heldout = read_traces(frames_run["unseen"]).episodes
    config = FidelityConfig(horizon=2, context=3, min_samples=1)
    report = fidelity_report(load(frames_run["run"]), heldout, frames_run["train"], config, jax.random.key(0))

    squared = {1: [], 2: []}
    for episode in heldout:
        frames = episode.observations.astype(np.float64) / 255
        for start in range(3, len(episode)):
            for k in (1, 2):
                if start + k <= len(episode):
                    squared[k].append(np.mean((frames[start + k] - frames[start]) ** 2))
    expected = [math.sqrt(np.mean(squared[k])) for k in (1, 2)]
    np.testing.assert_allclose(report["predictors"]["nothing_changes"]["obs_rmse"], expected, rtol=1e-6)


# -- the gymnasium export ----------------------------------------------------------------


def test_dream_env_shows_dreamed_frames_by_default_and_latents_on_request(frames_run):
    frames = DreamEnv(str(frames_run["run"]), seed=0)
    assert frames.observation_space == gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    observation, _ = frames.reset()
    assert observation.dtype == np.uint8 and observation in frames.observation_space
    observation, reward, *_ = frames.step(np.array([1.0], np.float32))
    assert observation.dtype == np.uint8 and observation in frames.observation_space
    assert np.isfinite(reward)

    latents = DreamEnv(str(frames_run["run"]), seed=0, observations="latents")
    sizes = RSSMConfig(size="tiny").sizes
    assert latents.observation_space == gym.spaces.Box(-np.inf, np.inf, (sizes.deter + sizes.latents * sizes.classes,),
                                                       np.float32)
    first, _ = latents.reset()
    second, *_ = latents.step(np.array([1.0], np.float32))
    assert first in latents.observation_space and second in latents.observation_space
    assert not np.array_equal(first, second)
    with pytest.raises(ValueError, match="observations"):
        DreamEnv(str(frames_run["run"]), observations="pixels")
