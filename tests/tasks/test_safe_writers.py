"""Safe writers: one writer of a dataset at a time, no episode ever lost, nothing left behind.

Every test uses real processes or the real command line: concurrent appends from two
processes, a writer killed while it staged its data, a dataset reached through a
symbolic link, and a writer that gives up waiting for the lock.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer.cli import main
from tasks.traces import locked_for_writing, read_traces

REPOSITORY = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def collect(capsys, out: Path, episodes: int, seed: int = 0, *extra) -> None:
    code, _, stderr = run_cli(capsys, "collect", "--task", "pendulum", "--episodes", episodes, "--num-envs", episodes,
                              "--seed", seed, "--out", out, *extra)
    assert code == 0, stderr


def episode_count(path: Path) -> int:
    return read_traces(path).episodes.num_episodes


def hidden_entries(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name.startswith("."))


APPENDER = """
import sys
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.traces import append_traces
task = get_task("pendulum")
for batch in range(int(sys.argv[3])):
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(int(sys.argv[2]) * 100 + batch, 2),
                               num_envs=2, progress=False)
    append_traces(sys.argv[1], episodes)
"""


def test_two_processes_appending_at_once_lose_no_episode(capsys, tmp_path, cli_env):
    dataset = tmp_path / "traces"
    collect(capsys, dataset, 2)
    batches = 4
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(dataset), str(writer), str(batches)],
                                cwd=REPOSITORY, env=cli_env, stderr=subprocess.PIPE, text=True) for writer in (1, 2)]
    for writer in writers:
        _, stderr = writer.communicate(timeout=600)
        assert writer.returncode == 0, stderr
    assert episode_count(dataset) == 2 + 2 * batches * 2
    assert hidden_entries(tmp_path) == []


def test_two_collect_appends_at_once_both_land(capsys, tmp_path, cli_env):
    dataset = tmp_path / "traces"
    collect(capsys, dataset, 2)
    command = [sys.executable, "-m", "dreamer.cli", "collect", "--task", "pendulum", "--episodes", "5",
               "--num-envs", "5", "--append", "--out", str(dataset)]
    writers = [subprocess.Popen(command + ["--seed", str(seed)], cwd=REPOSITORY, env=cli_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for writer in writers:
        _, stderr = writer.communicate(timeout=600)
        assert writer.returncode == 0, stderr
    assert episode_count(dataset) == 12


def test_a_writer_that_waits_too_long_ends_with_one_line_and_changes_nothing(capsys, tmp_path, monkeypatch):
    dataset = tmp_path / "traces"
    collect(capsys, dataset, 2)
    before = sorted((p.relative_to(dataset), p.read_bytes()) for p in dataset.rglob("*") if p.is_file())
    monkeypatch.setenv("DREAMER_LOCK_TIMEOUT", "0.2")
    with locked_for_writing(dataset, 0):  # another writer holds the dataset
        code, stdout, stderr = run_cli(capsys, "collect", "--task", "pendulum", "--episodes", 2, "--append",
                                       "--out", dataset)
    assert code == 2 and stdout == ""
    assert stderr == f"dreamer: error: {dataset}: is being written by another process (waited 0.2 s); " \
                     "try again when it has finished\n"
    after = sorted((p.relative_to(dataset), p.read_bytes()) for p in dataset.rglob("*") if p.is_file())
    assert after == before


def test_appending_through_a_symbolic_link_appends_to_the_real_dataset(capsys, tmp_path):
    real = tmp_path / "store" / "traces"
    collect(capsys, real, 2)
    link = tmp_path / "latest"
    link.symlink_to(real, target_is_directory=True)
    collect(capsys, link, 3, 1, "--append")
    assert link.is_symlink(), "the link was replaced by a folder"
    assert episode_count(real) == 5
    assert hidden_entries(tmp_path / "store") == [] and hidden_entries(tmp_path) == []


KILLED_WRITER = """
import os, signal, sys
from tasks.traces import _staging, locked_for_writing
with locked_for_writing(sys.argv[1], 0) as target:
    with _staging(target) as staging:
        (staging / "part-of-a-dataset").write_bytes(bytes(1 << 20))
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_staging_folder_is_removed_by_the_next_collect(capsys, tmp_path):
    out = tmp_path / "traces"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], cwd=REPOSITORY, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert [name for name in hidden_entries(tmp_path) if ".writing-" in name], "the killed writer left no staging folder"
    collect(capsys, out, 2)
    assert episode_count(out) == 2
    assert hidden_entries(tmp_path) == [], "the killed writer's staging folder survived the next run"


def test_an_append_killed_between_its_renames_is_undone_by_the_next_writer(capsys, tmp_path):
    dataset = tmp_path / "traces"
    collect(capsys, dataset, 2)
    dataset.rename(tmp_path / ".traces.replaced-4242")  # what a kill between the swap's renames leaves
    collect(capsys, dataset, 3, 1, "--append")
    assert episode_count(dataset) == 5
    assert hidden_entries(tmp_path) == []


def test_export_refuses_to_overwrite_a_file(capsys, tmp_path):
    dataset = tmp_path / "traces"
    collect(capsys, dataset, 2)
    target = tmp_path / "flat.npz"
    target.write_bytes(b"someone's file")
    code, _, stderr = run_cli(capsys, "traces", "export", dataset, "--out", target)
    assert code == 2 and stderr.startswith(f"dreamer: error: {target}: already exists")
    assert target.read_bytes() == b"someone's file"


@pytest.mark.parametrize("timeout", ["soon", "-1"])
def test_a_bad_lock_timeout_is_one_line(capsys, tmp_path, monkeypatch, timeout):
    monkeypatch.setenv("DREAMER_LOCK_TIMEOUT", timeout)
    code, _, stderr = run_cli(capsys, "collect", "--task", "pendulum", "--episodes", 1, "--out", tmp_path / "t")
    assert code == 2 and stderr.startswith("dreamer: error: DREAMER_LOCK_TIMEOUT: must be a number of seconds")
