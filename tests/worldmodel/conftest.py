"""Fixtures of the world-model tests: tiny ensembles, trace files and fitted run directories.

Everything is small enough to fit on a CPU in seconds (with the session's compilation
cache from tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from dreamer.cli import main
from tasks.registry import get_task
from tasks.traces import write_traces

# The tiny ensemble every CLI fit in these tests uses (3 members, 2 elites, 2 x 32 units),
# with 25 updates per jitted call and early stopping effectively off.
TINY_FIT_FLAGS = (
    "--ensemble.members", "3", "--ensemble.elites", "2", "--ensemble.hidden-size", "32",
    "--ensemble.hidden-layers", "2", "--ensemble.termination-hidden", "16",
    "--fit.batch-size", "32", "--fit.updates-per-call", "25", "--fit.patience", "1000",
)


@pytest.fixture(scope="session")
def fit_argv():
    """`fit_argv(traces, out, max_updates, *extra)`: a tiny `dreamer fit` command line."""

    def build(traces, out, max_updates, *extra) -> list[str]:
        return ["fit", "--traces", str(traces), "--out", str(out), *TINY_FIT_FLAGS,
                "--fit.max-updates", str(max_updates), *map(str, extra)]

    return build


def run_quietly(argv) -> int:
    """`dreamer.cli.main(argv)` in this process, its output dropped (for fixtures)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main([str(a) for a in argv])
    assert code == 0, err.getvalue()
    return code


@pytest.fixture(scope="session")
def pendulum_traces(tmp_path_factory, record_random) -> Path:
    """A trace file of 12 random Pendulum episodes (split seed 0: 7 train, 1 validation, 4 held out)."""
    path = tmp_path_factory.mktemp("traces") / "pendulum-random"
    write_traces(path, record_random("pendulum", 12), get_task("pendulum"))
    return path


@pytest.fixture(scope="session")
def cartpole_traces(tmp_path_factory, record_random) -> Path:
    """A trace file of 30 random CartPole episodes (25 train, 3 validation, 2 held out)."""
    path = tmp_path_factory.mktemp("traces") / "cartpole-random"
    write_traces(path, record_random("cartpole", 30), get_task("cartpole"))
    return path


@pytest.fixture(scope="session")
def pendulum_run(tmp_path_factory, pendulum_traces, fit_argv) -> Path:
    """A run directory holding a tiny ensemble fitted on `pendulum_traces` (200 updates).

    Tests that write into a run directory work on a copy of it.
    """
    out = tmp_path_factory.mktemp("runs") / "pendulum"
    run_quietly(fit_argv(pendulum_traces, out, 200))
    return out


@pytest.fixture(scope="session")
def cartpole_run(tmp_path_factory, cartpole_traces, fit_argv) -> Path:
    """A run directory holding a tiny ensemble fitted briefly on `cartpole_traces` (25 updates)."""
    out = tmp_path_factory.mktemp("runs") / "cartpole"
    run_quietly(fit_argv(cartpole_traces, out, 25))
    return out
