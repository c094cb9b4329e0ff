"""Fixtures of the command tests: tiny command lines, trace files, fitted models and runs.

Every world model, dream and online run here is tiny (3 x 32-unit members, 16-unit
actor and critic, 5-step dreams) so it finishes on a CPU in seconds. Most of a tiny
run's time is XLA compilation, so the tests share JAX's persistent compilation cache (a
temporary folder for the session, handed to CLI subprocesses through the environment);
the cache only stores compiled executables, and what runs is the real code either way.
Artefacts that several tests read (a trace file, a fitted model, a dreamed policy, online
runs) are made once per session; a test that writes into one works on a copy.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer.cli import main
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.traces import write_traces

TINY_WORLD_MODEL_FLAGS = (
    "--ensemble.members", "3", "--ensemble.elites", "2", "--ensemble.hidden-size", "32",
    "--ensemble.hidden-layers", "2", "--ensemble.termination-hidden", "16",
    "--fit.batch-size", "32", "--fit.updates-per-call", "25", "--fit.max-updates", "50",
)
TINY_DREAM_FLAGS = (
    "--dream.batch-size", "32", "--dream.horizon", "5", "--dream.updates-per-call", "10",
    "--dream.network.hidden-size", "16",
)
EVAL_EPISODES = 2

# `dreamer run` budgets: Pendulum episodes last 200 steps, so 450 real steps are a random
# round of 200, a policy round of 200 and a last round cut after 50 steps.
RUN_BUDGETS = {
    "pendulum": ("--real-steps", "450", "--random-steps", "200", "--steps-per-round", "200"),
    "cartpole": ("--real-steps", "300", "--random-steps", "150", "--steps-per-round", "150"),
}


def make_run_argv(out, task: str, *extra) -> list[str]:
    """A tiny `dreamer run` command line on ``task`` (pendulum or cartpole) writing to ``out``."""
    return ["run", "--task", task, "--out", str(out), *RUN_BUDGETS[task], *TINY_WORLD_MODEL_FLAGS,
            *TINY_DREAM_FLAGS, "--dream-updates", "20", "--eval-episodes", str(EVAL_EPISODES), *map(str, extra)]


def make_dream_argv(world_model, out, updates, *extra) -> list[str]:
    """A tiny `dreamer dream` command line."""
    return ["dream", "--world-model", str(world_model), "--out", str(out), *TINY_DREAM_FLAGS,
            "--updates", str(updates), *map(str, extra)]


def run_quietly(argv) -> None:
    """`dreamer.cli.main(argv)` in this process, its output dropped (for fixtures)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main([str(a) for a in argv])
    assert code == 0, err.getvalue()


@pytest.fixture(scope="session")
def quietly():
    """`quietly(argv)`: `dreamer ARGV` in this process, required to succeed, its output dropped."""
    return run_quietly


@pytest.fixture(scope="session")
def run_argv():
    """`run_argv(out, task, *extra)`: a tiny `dreamer run` command line (task: pendulum or cartpole)."""
    return make_run_argv


@pytest.fixture(scope="session")
def dream_argv():
    """`dream_argv(world_model, out, updates, *extra)`: a tiny `dreamer dream` command line."""
    return make_dream_argv


@pytest.fixture(scope="session")
def tiny_flags() -> tuple[str, ...]:
    """The tiny world-model and dream flags, for commands that take both (`fit` + `dream`)."""
    return (*TINY_WORLD_MODEL_FLAGS, *TINY_DREAM_FLAGS)


@pytest.fixture(scope="session")
def eval_episodes() -> int:
    """Evaluation episodes per round of the tiny `dreamer run`s."""
    return EVAL_EPISODES


@pytest.fixture
def cli(capfd):
    """`cli(*argv)`: `dreamer ARGV` in this process; its exit status, stdout and stderr."""

    def call(*argv) -> tuple[int, str, str]:
        capfd.readouterr()
        code = main([str(a) for a in argv])
        out, err = capfd.readouterr()
        return code, out, err

    return call


@pytest.fixture(scope="session")
def start_cli(cli_env):
    """`start_cli(*argv)`: `python -m dreamer.cli ARGV` as a running subprocess."""

    def start(*argv) -> subprocess.Popen:
        command = [sys.executable, "-m", "dreamer.cli", *map(str, argv)]
        return subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    return start


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a CLI subprocess to succeed; its stdout."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"`dreamer {' '.join(process.args[3:])}` ran past {timeout} s")
    if process.returncode != 0:  # a failed process is a failure of its own, not an output mismatch
        pytest.fail(f"`dreamer {' '.join(process.args[3:])}` exited with {process.returncode}: {err[-2000:]}")
    return out


@pytest.fixture(scope="session")
def finish_cli():
    """`finish_cli(process)`: wait for a CLI subprocess, require success, return its stdout."""
    return finish


@pytest.fixture(scope="session")
def stop_when():
    """`stop_when(process, ready, what)`: freeze a CLI subprocess as soon as ``ready()`` holds.

    Polls every millisecond; on success the process is stopped (SIGSTOP), so the test can
    look at the run directory exactly as the kill will leave it, then `kill_stopped` it.
    Fails if the process ends first or nothing happens for two minutes.
    """

    def stop(process: subprocess.Popen, ready, what: str) -> None:
        deadline = time.monotonic() + 120
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"the run ended before {what}: {process.communicate()[1][-2000:]}")
            if time.monotonic() > deadline:
                process.kill()
                process.communicate()
                pytest.fail(f"no {what} after two minutes")
            time.sleep(0.001)
        process.send_signal(signal.SIGSTOP)
        if process.poll() is not None:
            pytest.fail(f"the run ended right at {what}")

    return stop


@pytest.fixture(scope="session")
def kill_stopped():
    """`kill_stopped(process)`: SIGKILL a stopped CLI subprocess and reap it."""

    def kill(process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGKILL)
        process.communicate()
        if process.returncode != -signal.SIGKILL:
            pytest.fail(f"the run exited with {process.returncode} before it could be killed")

    return kill


def metric_lines(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    # A line being written may be incomplete; only whole lines count.
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


@pytest.fixture(scope="session")
def read_metrics():
    """`read_metrics(run_dir)`: the complete lines of a run's metrics.jsonl."""
    return metric_lines


# -- artefacts shared by the session ------------------------------------------------------


@pytest.fixture(scope="session")
def pendulum_trace_file(tmp_path_factory) -> Path:
    """A trace file of 4 random Pendulum episodes (recording seed 0; 3 fall in the training split)."""
    task = get_task("pendulum")
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 4), progress=False)
    path = tmp_path_factory.mktemp("traces") / "pendulum-random"
    write_traces(path, episodes, task)
    return path


@pytest.fixture(scope="session")
def pendulum_world_model(tmp_path_factory, pendulum_trace_file) -> Path:
    """A run directory holding a tiny ensemble fitted for 50 updates on `pendulum_trace_file`."""
    out = tmp_path_factory.mktemp("world-models") / "pendulum"
    run_quietly(["fit", "--traces", pendulum_trace_file, "--out", out, *TINY_WORLD_MODEL_FLAGS])
    return out


@pytest.fixture(scope="session")
def dreamed_pendulum_policy(tmp_path_factory, pendulum_world_model) -> Path:
    """A run directory holding a Pendulum policy trained for 30 updates in `pendulum_world_model`'s dreams."""
    out = tmp_path_factory.mktemp("dreams") / "pendulum"
    run_quietly(make_dream_argv(pendulum_world_model, out, 30))
    return out


@pytest.fixture(scope="session")
def online_pendulum_run(tmp_path_factory, start_cli) -> tuple[Path, str]:
    """An uninterrupted `dreamer run ... --json` on Pendulum (450 real steps, 3 rounds): its directory and stdout."""
    out = tmp_path_factory.mktemp("online") / "pendulum"
    stdout = finish(start_cli(*make_run_argv(out, "pendulum", "--json")))
    return out, stdout


@pytest.fixture(scope="session")
def online_cartpole_run(tmp_path_factory, start_cli) -> Path:
    """An uninterrupted `dreamer run` on CartPole (300 real steps): its directory."""
    out = tmp_path_factory.mktemp("online") / "cartpole"
    finish(start_cli(*make_run_argv(out, "cartpole")))
    return out
