"""Held-out means held out: `check` and `evaluate --traces` use exactly the split a model
or policy was fitted with, and say so in one line when it holds no held-out episode."""

from __future__ import annotations

import json

TINY_FIT = ("--ensemble.members", "3", "--ensemble.elites", "2", "--ensemble.hidden-size", "32",
            "--ensemble.hidden-layers", "2", "--fit.batch-size", "32", "--fit.updates-per-call", "25",
            "--fit.max-updates", "50")


def one_line(result) -> str:
    code, stdout, stderr = result
    assert code == 2, stderr
    assert stdout == "" and len(stderr.splitlines()) == 1 and "Traceback" not in stderr
    return stderr


def test_a_run_that_learned_from_every_episode_has_nothing_held_out(cli, online_pendulum_run):
    run, _ = online_pendulum_run
    spec = json.loads((run / "model.json").read_text())
    assert spec["split"] == {"seed": 0, "train": 1.0, "validation": 0.0, "heldout": 0.0}
    line = one_line(cli("check", "--world-model", run, "--traces", run / "traces"))
    assert "holds no held-out episodes under the split the model was fitted with" in line
    assert "--heldout-fraction" in line and "--split all" in line
    line = one_line(cli("evaluate", "--policy", run, "--traces", run / "traces"))
    assert "holds no held-out episodes under the split the policy was trained with" in line


def test_split_all_refuses_episodes_the_model_was_fitted_on(cli, online_pendulum_run):
    run, _ = online_pendulum_run
    line = one_line(cli("check", "--world-model", run, "--traces", run / "traces", "--split", "all"))
    assert "are ones the model was fitted on" in line


def test_fit_records_its_fractions_and_check_uses_them(cli, tmp_path, pendulum_trace_file):
    out = tmp_path / "model"
    code, _, err = cli("fit", "--traces", pendulum_trace_file, "--out", out, "--heldout-fraction", 0.5,
                       "--validation-fraction", 0.0, *TINY_FIT)
    assert code == 0, err
    spec = json.loads((out / "model.json").read_text())
    assert spec["split"] == {"seed": 0, "train": 0.5, "validation": 0.0, "heldout": 0.5}
    code, stdout, err = cli("check", "--world-model", out, "--traces", pendulum_trace_file, "--json",
                            "--fidelity.horizon", 5)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["fractions"] == spec["split"]
    assert report["heldout_episodes"] >= 1
