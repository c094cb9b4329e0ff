"""One exit path: every failure ends with one line, and nothing half-made is left behind.

Run directories are atomic: a command that fails before its first checkpoint removes the
folder it made, a process killed at that point leaves a marker the next command clears,
and a second writer is refused at once. Saved models, policies and their checkpoints are
read through validating loaders, so a damaged file is one line naming it, exit status 2.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer.cli import report_error
from dreamer.online import RunConfig
from tasks.errors import InputError
from tasks.run_directory import CONFIG_FILE, PENDING_FILE, RunDirectory

REPOSITORY = Path(__file__).resolve().parents[2]


def assert_one_line(result, named, status: int = 2) -> str:
    code, stdout, stderr = result
    assert code == status, f"exit {code}: {stderr!r}"
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"dreamer: error: {named}: "), lines[0]
    assert stdout == ""
    return lines[0]


def tiny_config(out) -> RunConfig:
    return RunConfig(task="pendulum", out=str(out))


# --------------------------------------------------------------------------- run directories


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    out = tmp_path / "runs" / "first"
    with pytest.raises(RuntimeError):
        with RunDirectory(out, tiny_config(out)) as run:
            run.log(1, {"loss": 1.0})
            raise RuntimeError("the first round failed")
    assert not (tmp_path / "runs").exists(), "the folders the run made are still there"
    with RunDirectory(out, tiny_config(out)):  # the corrected re-run just works
        pass
    assert (out / CONFIG_FILE).is_file() and not (out / PENDING_FILE).exists()


def test_a_committed_run_is_kept_when_a_later_step_fails(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunDirectory(out, tiny_config(out)) as run:
            run.commit()  # what the first checkpoint does
            raise RuntimeError("a later round failed")
    assert (out / CONFIG_FILE).is_file()
    with pytest.raises(InputError, match="already holds a run"):
        RunDirectory(out, tiny_config(out))
    with RunDirectory(out, tiny_config(out), resume=True):
        pass


def test_a_failure_in_an_existing_empty_folder_keeps_the_folder_but_nothing_in_it(tmp_path):
    out = tmp_path / "given"
    out.mkdir()
    with pytest.raises(RuntimeError):
        with RunDirectory(out, tiny_config(out)):
            raise RuntimeError("failed")
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_run_killed_before_its_first_checkpoint_is_cleared_by_the_next_command(tmp_path):
    out = tmp_path / "killed"
    script = (
        "import os, signal; from dreamer.online import RunConfig; from tasks.run_directory import RunDirectory\n"
        f"run = RunDirectory({str(out)!r}, RunConfig(task='pendulum', out={str(out)!r}))\n"
        "run.log(1, {'loss': 1.0}); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    process = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, capture_output=True)
    assert process.returncode == -signal.SIGKILL
    assert (out / PENDING_FILE).exists(), "the killed run should have left its pending marker"
    for resume in (False, True):  # with or without --resume, the leftover is no obstacle
        with RunDirectory(out, tiny_config(out), resume=resume) as run:
            assert run.metrics() == [], "lines of the killed run survived"
        shutil.rmtree(out)


def test_a_second_writer_of_the_same_run_is_refused_at_once(tmp_path):
    out = tmp_path / "busy"
    with RunDirectory(out, tiny_config(out)):
        with pytest.raises(InputError, match="in use by another process"):
            RunDirectory(out, tiny_config(out), resume=True)
    assert (out / CONFIG_FILE).is_file(), "the refused writer removed the first writer's run"


def test_a_plain_file_as_out_is_refused(cli, tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("not a folder")
    line = assert_one_line(cli("train-real", "--task", "pendulum", "--out", plain), plain)
    assert "is a file" in line
    line = assert_one_line(cli("train-real", "--task", "pendulum", "--out", plain / "run"), plain / "run")
    assert "sits under a file" in line
    assert plain.read_text() == "not a folder"


def test_an_out_the_system_refuses_is_one_line_naming_it(cli):
    assert_one_line(cli("train-real", "--task", "pendulum", "--out", "/proc/no-runs-here"), "/proc/no-runs-here")


# --------------------------------------------------------------------------- damaged saved files


@pytest.mark.parametrize("damage, problem", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: "[1, 2]", "expected a JSON object"),
    (lambda text: text.replace('"feature_size"', '"size"'), "no 'feature_size' field"),
    (lambda text: text.replace('"hidden_size": 16', '"hidden_size": "big"'), "hidden_size"),
])
def test_a_damaged_policy_json_is_one_line(cli, tmp_path, dreamed_pendulum_policy, damage, problem):
    policy = tmp_path / "policy"
    shutil.copytree(dreamed_pendulum_policy, policy)
    spec = policy / "policy.json"
    spec.write_text(damage(spec.read_text()))
    line = assert_one_line(cli("evaluate", "--policy", policy, "--episodes", 1), spec)
    assert problem in line


def test_a_damaged_model_json_is_one_line(cli, tmp_path, pendulum_world_model, pendulum_trace_file):
    model = tmp_path / "model"
    shutil.copytree(pendulum_world_model, model)
    spec = model / "model.json"
    spec.write_text(spec.read_text().replace('"members": 3', '"members": -3'))
    line = assert_one_line(cli("check", "--world-model", model, "--traces", pendulum_trace_file), spec)
    assert "members" in line


def test_a_damaged_checkpoint_is_one_line_without_library_noise(tmp_path, dreamed_pendulum_policy):
    """Through the console script, so what orbax's threads print at shutdown is seen too."""
    policy = tmp_path / "policy"
    shutil.copytree(dreamed_pendulum_policy, policy)
    chunks = [path for path in (policy / "checkpoints" / "policy").rglob("*") if path.is_file() and path.parent.name == "d"]
    assert chunks, "the policy checkpoint has no data chunks to damage"
    for chunk in chunks:
        chunk.write_bytes(b"damaged")
    dreamer = Path(sys.executable).with_name("dreamer")
    process = subprocess.run([str(dreamer), "evaluate", "--policy", str(policy), "--episodes", "1"],
                             capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    line = assert_one_line((process.returncode, process.stdout, process.stderr), policy)
    assert "checkpoint is damaged" in line


# --------------------------------------------------------------------------- the handler


def test_an_unexpected_error_is_one_line_with_exit_status_1(capsys):
    assert report_error(ZeroDivisionError("division by zero\nin some layer")) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dreamer: failed: unexpected ZeroDivisionError: division by zero")


def test_an_operating_system_error_names_its_path(capsys):
    assert report_error(PermissionError(13, "Permission denied", "/data/traces")) == 2
    assert capsys.readouterr().err == "dreamer: error: /data/traces: permission denied\n"


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run"
    with RunDirectory(out, tiny_config(out)) as run:
        run.log(1, {"loss": 1.0})
        run.log(2, {"loss": 0.5})
    metrics = out / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 3, "lo')
    with RunDirectory(out, tiny_config(out), resume=True) as run:
        assert [line["step"] for line in run.metrics()] == [1, 2]
        run.truncate_metrics(2)
    assert metrics.read_text().endswith('"loss": 0.5}\n')


def test_a_damaged_metrics_line_is_named(tmp_path):
    out = tmp_path / "run"
    with RunDirectory(out, tiny_config(out)) as run:
        run.log(1, {"loss": 1.0})
    metrics = out / "metrics.jsonl"
    metrics.write_text("garbage\n" + metrics.read_text())
    with RunDirectory(out, tiny_config(out), resume=True) as run:
        with pytest.raises(InputError, match="line 1 is damaged"):
            run.metrics()


@pytest.mark.parametrize("argv, named", [
    (["--task", "cartpole", "--algo", "sac"], "cartpole"),
    (["--task", "pendulum", "--offline-traces", "no-such-traces"], "no-such-traces"),
])
def test_compare_refuses_a_bad_arm_before_running_any(cli, tmp_path, argv, named):
    out = tmp_path / "report"
    assert_one_line(cli("compare", *argv, "--out", out), named)
    assert not out.exists(), "compare started writing before it checked every arm"
