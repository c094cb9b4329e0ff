"""Fitting a world model: it learns, it is repeatable, it resumes, it refuses and fails cleanly."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from dreamer.cli import main
from tasks.run_directory import RunDirectory
from tasks.sampler import transition_batch
from worldmodel.ensemble import EnsembleConfig, EnsembleModel
from worldmodel.fit import FitConfig, FitDiverged, fit_world_model
from worldmodel.saving import load, save_model

TINY = EnsembleConfig(members=3, elites=2, hidden_size=32, hidden_layers=2, termination_hidden=16)
FIT = FitConfig(batch_size=32, updates_per_call=25, max_updates=300, patience=1000)


def fresh_model(seed: int = 0) -> EnsembleModel:
    """An untrained tiny Pendulum ensemble."""
    return EnsembleModel((3,), 1, False, TINY, nnx.Rngs(seed))


@functools.partial(jax.jit, static_argnums=0)
def _validation_loss(graphdef, state, batch):
    return nnx.merge(graphdef, state).validation_loss(batch)[0]


def validation_loss(model, episodes) -> float:
    """The model's validation loss on every transition of ``episodes``."""
    return float(_validation_loss(*nnx.split(model), transition_batch(episodes)))


@functools.partial(jax.jit, static_argnums=0)
def _dream_step(graphdef, state, obs, action, key):
    model = nnx.merge(graphdef, state)
    start = model.initial_state(obs)
    return (*model.step(start, action, key), model.uncertainty(start, action))


def dream_step(model, obs, action, key) -> tuple[np.ndarray, ...]:
    """Next state, reward, continue probability and uncertainty of one step from ``obs``."""
    return jax.device_get(_dream_step(*nnx.split(model), obs, action, key))


def cli(capfd, argv) -> tuple[int, str, str]:
    """`dreamer ARGV` in this process: exit status, and everything written to stdout and stderr."""
    capfd.readouterr()
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def validation_episodes(record_random):
    """A Pendulum episode that is not among the training episodes (another recording seed)."""
    return record_random("pendulum", 1, seed=1)


@pytest.fixture(scope="module")
def fitted_run_path(tmp_path_factory):
    """The run directory `fitted` checkpoints into."""
    return tmp_path_factory.mktemp("fit") / "run"


@pytest.fixture(scope="module")
def fitted(fitted_run_path, pendulum_episodes, validation_episodes):
    """A tiny ensemble fitted for 300 updates, checkpointed into a real run directory."""
    with RunDirectory(fitted_run_path, FIT) as run:
        return fit_world_model(fresh_model(), pendulum_episodes, validation_episodes, FIT, seed=0, run=run, progress=False)


# -- the library ------------------------------------------------------------------------


def test_fitting_lowers_the_validation_loss_on_unseen_episodes(fitted, pendulum_episodes, validation_episodes):
    untrained = fresh_model()
    untrained.fit_statistics(pendulum_episodes)

    before = validation_loss(untrained, validation_episodes)
    after = validation_loss(fitted.model, validation_episodes)

    assert fitted.updates == 300
    assert after < 0.25 * before
    # the model handed back is the best one seen on validation
    assert after == pytest.approx(fitted.validation_loss, rel=1e-4)


def test_fitting_is_deterministic_for_a_seed(fitted, pendulum_episodes, validation_episodes, assert_same_state,
                                            module_leaves):
    again = fit_world_model(fresh_model(), pendulum_episodes, validation_episodes, FIT, seed=0, progress=False)
    assert_same_state(fitted.model, again.model)

    other_seed = fit_world_model(fresh_model(), pendulum_episodes, validation_episodes, FIT, seed=1, progress=False)
    assert any(not np.array_equal(x, y) for x, y in zip(module_leaves(fitted.model).values(),
                                                               module_leaves(other_seed.model).values()))


def test_a_loaded_run_steps_exactly_like_the_fitted_model(fitted, fitted_run_path, pendulum_episodes, assert_same_state):
    save_model(fitted_run_path, fitted.model, {"task": "pendulum"})
    loaded = load(fitted_run_path)

    assert_same_state(fitted.model, loaded)
    rows = np.arange(0, pendulum_episodes.num_steps, 97)
    before, _ = pendulum_episodes.transitions()
    obs, action = pendulum_episodes.observations[before[rows]], pendulum_episodes.actions[rows]

    for key in jax.random.split(jax.random.key(0), 3):
        for original, restored in zip(dream_step(fitted.model, obs, action, key), dream_step(loaded, obs, action, key)):
            np.testing.assert_array_equal(original, restored)


def test_a_fit_compiles_its_training_step_once(caplog, pendulum_episodes, validation_episodes):
    config = FitConfig(batch_size=32, updates_per_call=25, max_updates=75, patience=1000)

    with caplog.at_level(logging.WARNING), jax.log_compiles():
        fit_world_model(fresh_model(), pendulum_episodes, validation_episodes, config, progress=False)

    compiles = [r for r in caplog.records if r.getMessage().startswith("Compiling jit(train_calls)")]
    if not compiles:
        pytest.fail("jax.log_compiles() logged no compilation of train_calls; the check cannot count them")
    assert len(compiles) == 1, f"train_calls was compiled {len(compiles)} times in one fit"


def test_a_diverging_fit_raises_fit_diverged(pendulum_episodes, validation_episodes):
    diverging = FitConfig(batch_size=32, updates_per_call=25, max_updates=100, patience=1000, learning_rate=1e30)
    with pytest.raises(FitDiverged, match=r"loss became (nan|-?inf)"):
        fit_world_model(fresh_model(), pendulum_episodes, validation_episodes, diverging, progress=False)


# -- the command line -------------------------------------------------------------------


def test_fit_refuses_to_overwrite_a_run_or_resume_it_with_another_config(capfd, tmp_path, pendulum_traces, pendulum_run, fit_argv):
    run = tmp_path / "run"
    shutil.copytree(pendulum_run, run)
    kept = {name: (run / name).read_bytes() for name in ("config.yaml", "model.json", "metrics.jsonl")}

    code, out, err = cli(capfd, fit_argv(pendulum_traces, run, 300))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("dreamer: error: ") and "--resume" in err

    code, out, err = cli(capfd, fit_argv(pendulum_traces, run, 600, "--resume"))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("dreamer: error: ") and "different config" in err

    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_a_diverging_fit_fails_with_one_line_and_writes_no_model(capfd, tmp_path, pendulum_traces, fit_argv):
    out_dir = tmp_path / "run"

    code, out, err = cli(capfd, fit_argv(pendulum_traces, out_dir, 100, "--fit.learning-rate", "1e30"))

    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dreamer: failed: ")
    assert "loss became nan" in err or "loss became inf" in err or "loss became -inf" in err
    assert not (out_dir / "model.json").exists()


def test_warm_start_continues_from_the_given_runs_parameters(capfd, tmp_path, pendulum_traces, pendulum_run, fit_argv):
    code, _, err = cli(capfd, fit_argv(pendulum_traces, tmp_path / "warm", 25, "--warm-start", pendulum_run))
    assert code == 0, err
    code, _, err = cli(capfd, fit_argv(pendulum_traces, tmp_path / "cold", 25))
    assert code == 0, err

    warm = json.loads((tmp_path / "warm" / "summary.json").read_text())
    cold = json.loads((tmp_path / "cold" / "summary.json").read_text())
    fitted = json.loads((pendulum_run / "summary.json").read_text())
    assert warm["updates"] == cold["updates"] == 25
    assert warm["validation_loss"] < cold["validation_loss"] / 3
    assert warm["validation_loss"] < 2 * fitted["validation_loss"]


@pytest.mark.slow  # three CLI processes, ~16 s on a 2-core CPU
def test_a_killed_fit_resumes_to_the_same_parameters_as_an_uninterrupted_one(tmp_path, pendulum_traces, fit_argv, cli_env,
                                                                             assert_same_state):
    def start(out, *extra):
        command = [sys.executable, "-m", "dreamer.cli", *fit_argv(pendulum_traces, out, 250, *extra)]
        return subprocess.Popen(command, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finish(process) -> None:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr

    run_a, run_b = tmp_path / "uninterrupted", tmp_path / "killed"
    finish(start(run_a))

    killed = start(run_b)
    metrics = run_b / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):  # a checkpoint follows each line
        assert killed.poll() is None, f"the fit ended before it could be killed: {killed.communicate()[1]}"
        assert time.monotonic() < deadline, "no metrics after two minutes"
        time.sleep(0.005)
    still_running = killed.poll() is None
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert still_running and killed.returncode == -signal.SIGKILL
    assert not (run_b / "model.json").exists()

    finish(start(run_b, "--resume"))

    assert_same_state(load(run_a), load(run_b))
    lines_a = [json.loads(line) for line in (run_a / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines_b] == [m["step"] for m in lines_a] == list(range(25, 251, 25))
    assert lines_b == lines_a  # and the resumed run logged what the uninterrupted one did
