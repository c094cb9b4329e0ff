"""Killed `dreamer dream` and `dreamer run` processes resume to what an uninterrupted run writes.

Each test runs the command line in subprocesses: a run killed with SIGKILL at a chosen
point (the process is frozen with SIGSTOP first, so the test sees the run directory
exactly as the kill leaves it), and its `--resume`; the outputs must be identical, bit
for bit, to those of an uninterrupted run (shared by the tests). Several CLI processes
each, so all are slow. A test whose kill misses its moment (a very slow machine) skips.
"""

from __future__ import annotations

import json

import pytest

from policies.saving import load_actor
from tasks.traces import read_traces
from worldmodel.saving import load

pytestmark = pytest.mark.slow


def without_wall_time(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "wall_seconds"} for line in lines]


# -- dreamer dream --------------------------------------------------------------------------

DREAM_UPDATES = 200  # 20 calls of 10 updates, each logged, then checkpointed


@pytest.fixture(scope="module")
def uninterrupted_dream(tmp_path_factory, pendulum_world_model, dream_argv, start_cli, finish_cli):
    out = tmp_path_factory.mktemp("dream") / "uninterrupted"
    finish_cli(start_cli(*dream_argv(pendulum_world_model, out, DREAM_UPDATES)))
    return out


def dream_checkpointed(run) -> bool:
    path = run / "checkpoints" / "dream"
    return path.is_dir() and any(child.name.isdigit() for child in path.iterdir())


DREAM_KILL_POINTS = {
    # (when to kill, what must hold at the kill for the test to be about that moment)
    "after two metrics lines": (
        lambda run, metrics: len(metrics(run)) >= 2,
        lambda run, metrics: dream_checkpointed(run),
    ),
    "after the first metrics line, before the first checkpoint": (
        lambda run, metrics: len(metrics(run)) >= 1,
        lambda run, metrics: not dream_checkpointed(run),
    ),
}


@pytest.mark.parametrize(
    "kill_point",
    [
        pytest.param("after two metrics lines", id="killed-after-two-checkpointed-calls"),
        pytest.param(
            "after the first metrics line, before the first checkpoint",
            id="killed-before-the-first-checkpoint", marks=pytest.mark.long,
        ),
    ],
)
def test_a_killed_dream_resumes_to_the_same_policy_as_an_uninterrupted_one(
    kill_point, tmp_path, uninterrupted_dream, pendulum_world_model, dream_argv, start_cli, finish_cli, stop_when,
    kill_stopped, read_metrics, assert_same_state
):
    killed_run = tmp_path / "killed"
    ready, landed = DREAM_KILL_POINTS[kill_point]

    killed = start_cli(*dream_argv(pendulum_world_model, killed_run, DREAM_UPDATES))
    stop_when(killed, lambda: ready(killed_run, read_metrics), kill_point)
    try:
        landed_there = landed(killed_run, read_metrics)
        logged_before_kill = len(read_metrics(killed_run))
    finally:
        kill_stopped(killed)
    if not landed_there:
        pytest.skip(f"the kill missed the moment {kill_point} (the machine was too slow to stop it there)")
    assert logged_before_kill < DREAM_UPDATES // 10  # the kill landed mid-run
    assert not (killed_run / "policy.json").exists()

    finish_cli(start_cli(*dream_argv(pendulum_world_model, killed_run, DREAM_UPDATES, "--resume")))

    assert_same_state(load_actor(uninterrupted_dream)[0], load_actor(killed_run)[0])
    lines, resumed_lines = read_metrics(uninterrupted_dream), read_metrics(killed_run)
    assert [m["step"] for m in resumed_lines] == [m["step"] for m in lines] == list(range(10, DREAM_UPDATES + 1, 10))
    assert resumed_lines == lines
    summary = json.loads((uninterrupted_dream / "summary.json").read_text())
    resumed_summary = json.loads((killed_run / "summary.json").read_text())
    assert {**resumed_summary, "wall_seconds": 0} == {**summary, "wall_seconds": 0}


# -- dreamer run ----------------------------------------------------------------------------


def trace_episodes(run) -> int | None:
    """Episodes in the run's trace file as its metadata says now; None while there is none."""
    try:
        return json.loads((run / "traces" / "data" / "metadata.json").read_text())["total_episodes"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def round_checkpointed(run, real_steps: int) -> bool:
    """Whether the round ending at ``real_steps`` has a finished checkpoint (orbax renames it into place)."""
    return (run / "checkpoints" / "online" / str(real_steps)).is_dir()


RUN_KILL_POINTS = {
    # (when to kill, what must hold at the kill for the test to be about that moment)
    "after the first round's metrics line, before its checkpoint": (
        lambda run, metrics: len(metrics(run)) >= 1,
        lambda run, metrics: not round_checkpointed(run, 200),
    ),
    "after the first round's checkpoint, before the second round's episodes are saved": (
        lambda run, metrics: round_checkpointed(run, 200),
        lambda run, metrics: trace_episodes(run) == 1,
    ),
    "after the second round's episodes are saved, before its checkpoint": (
        lambda run, metrics: round_checkpointed(run, 200) and trace_episodes(run) == 2,
        lambda run, metrics: len(metrics(run)) == 1 and not round_checkpointed(run, 400),
    ),
}

@pytest.mark.parametrize(
    "kill_point",
    [
        pytest.param(
            "after the first round's metrics line, before its checkpoint",
            id="killed-before-the-first-checkpoint",
        ),
        pytest.param(
            "after the first round's checkpoint, before the second round's episodes are saved",
            id="killed-between-rounds", marks=pytest.mark.long,  # its neighbours cover both sides; CI leaves it out
        ),
        pytest.param(
            "after the second round's episodes are saved, before its checkpoint",
            id="killed-mid-round-after-recording",
        ),
    ],
)
def test_a_killed_run_resumes_to_the_same_outputs_as_an_uninterrupted_one(
    kill_point, tmp_path, online_pendulum_run, run_argv, start_cli, finish_cli, stop_when, kill_stopped, read_metrics,
    assert_same_state
):
    uninterrupted, _ = online_pendulum_run
    killed_run = tmp_path / "killed"
    ready, landed = RUN_KILL_POINTS[kill_point]

    killed = start_cli(*run_argv(killed_run, "pendulum"))
    stop_when(killed, lambda: ready(killed_run, read_metrics), kill_point)
    try:
        landed_there = landed(killed_run, read_metrics)
    finally:
        kill_stopped(killed)
    if not landed_there:
        pytest.skip(f"the kill missed the moment {kill_point} (the machine was too slow to stop it there)")
    assert not (killed_run / "summary.json").exists()

    finish_cli(start_cli(*run_argv(killed_run, "pendulum", "--resume")))

    episodes = read_traces(killed_run / "traces").episodes
    assert episodes.content_ids() == read_traces(uninterrupted / "traces").episodes.content_ids()
    assert list(episodes.lengths) == [200, 200, 50]
    assert without_wall_time(read_metrics(killed_run)) == without_wall_time(read_metrics(uninterrupted))
    assert_same_state(load(uninterrupted), load(killed_run))
    assert_same_state(load_actor(uninterrupted)[0], load_actor(killed_run)[0])
    summary = json.loads((uninterrupted / "summary.json").read_text())
    resumed_summary = json.loads((killed_run / "summary.json").read_text())
    assert {**resumed_summary, "wall_seconds": 0} == {**summary, "wall_seconds": 0}
