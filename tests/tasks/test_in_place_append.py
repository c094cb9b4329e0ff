"""Appending to an Arrow trace file in place: only the new episodes are written, and a
writer killed (a real SIGKILL) at any point of the append leaves the file as it was
before, for readers and for the next writer alike."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.traces import APPEND_JOURNAL, append_traces, read_traces, write_traces

REPOSITORY = Path(__file__).resolve().parents[2]
TASK = get_task("pendulum")


def random_episodes(count: int, seed: int):
    return record_episodes(TASK, RandomPolicy(TASK.action_space), reset_seeds(seed, count), num_envs=count,
                           progress=False)


@pytest.fixture()
def arrow_traces(tmp_path):
    out = tmp_path / "traces"
    write_traces(out, random_episodes(3, 0), TASK, data_format="arrow")
    return out


def test_an_append_writes_only_the_new_episodes(arrow_traces):
    data = arrow_traces / "data"
    before = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in data.glob("[0-9]*/**/*") if path.is_file()}

    assert append_traces(arrow_traces, random_episodes(2, 1)) == 5

    appended = read_traces(arrow_traces)
    assert before and all((path.stat().st_ino, path.stat().st_mtime_ns) == seen for path, seen in before.items()), \
        "an old episode was copied or rewritten"
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == ["0", "1", "2", "3", "4"]
    assert not (arrow_traces / APPEND_JOURNAL).exists()
    np.testing.assert_array_equal(appended.episodes.select(range(3, 5)).seeds, random_episodes(2, 1).seeds)


# Appends 4 episodes and kills itself (SIGKILL) at the given point: after N episodes are
# written to the staging dataset ("episode:N"), after N of them moved into data/
# ("moved:N"), or once the new metadata is in place but the journal not yet removed.
KILLED_APPEND = """
import os, pathlib, signal, sys
import pyarrow.dataset
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.traces import append_traces

where = sys.argv[2]
def die_after(original, point, counts=lambda *args: True):
    count = 0
    def wrapped(*args, **kwargs):
        nonlocal count
        result = original(*args, **kwargs)
        count += counts(*args)
        if where == f"{point}:{count}":
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapped
pyarrow.dataset.write_dataset = die_after(pyarrow.dataset.write_dataset, "episode")
pathlib.Path.rename = die_after(pathlib.Path.rename, "moved", lambda source, target: pathlib.Path(target).parent.name == "data")
os.replace = die_after(os.replace, "metadata", lambda source, target: str(target).endswith("data/metadata.json"))
task = get_task("pendulum")
append_traces(sys.argv[1], record_episodes(task, RandomPolicy(task.action_space), reset_seeds(9, 4), num_envs=4,
                                            progress=False))
"""


@pytest.mark.parametrize("where", ["episode:1", "episode:4", "moved:2", "metadata:1"])
def test_an_append_killed_part_way_leaves_the_file_as_it_was(arrow_traces, where):
    before = read_traces(arrow_traces).episodes
    killed = subprocess.run([sys.executable, "-c", KILLED_APPEND, str(arrow_traces), where], cwd=REPOSITORY,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (arrow_traces / APPEND_JOURNAL).exists(), "the kill came after the append finished"

    after = read_traces(arrow_traces).episodes  # a reader undoes the killed append first

    assert after.num_episodes == 3
    np.testing.assert_array_equal(after.observations, before.observations)
    assert not (arrow_traces / APPEND_JOURNAL).exists()
    assert append_traces(arrow_traces, random_episodes(2, 1)) == 5  # the next writer goes on
