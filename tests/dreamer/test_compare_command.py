"""`dreamer compare`: both arms over seeds, results.json with its provenance, and the report."""

from __future__ import annotations

import json

import pytest

from dreamer.comparison import CompareConfig, measure_runs
from dreamer.report import load_results
from tasks.registry import get_task
from tasks.traces import read_traces, write_traces


def test_a_real_arm_with_less_than_five_times_the_dream_budget_is_refused(cli, tmp_path):
    code, out, err = cli("compare", "--task", "pendulum", "--dream-steps", 1000, "--real-steps", 4999,
                         "--out", tmp_path / "report")

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "--real-steps" in err and "5x" in err
    assert not (tmp_path / "report").exists()


def test_a_heldout_file_of_another_task_is_refused_before_anything_runs(cli, tmp_path, record_random):
    pendulum = tmp_path / "pendulum-traces"
    write_traces(pendulum, record_random("pendulum", 2), get_task("pendulum"))

    code, out, err = cli("compare", "--task", "cartpole", "--heldout-traces", pendulum, "--out", tmp_path / "report")

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "does not match task cartpole" in err
    assert not (tmp_path / "report").exists()


def test_the_default_real_budget_is_at_least_five_times_the_dream_budget():
    assert CompareConfig(task="pendulum").real_budget == 20000
    assert CompareConfig(task="pendulum", dream_steps=5000).real_budget == 25000
    assert CompareConfig(task="hopper").real_budget == 5 * CompareConfig(task="hopper").dream_budget


def test_runs_are_measured_under_the_comparisons_threshold_and_at_their_budget():
    evaluations = [{"real_steps": 100 * k, "mean_return": value}
                   for k, value in enumerate([0, 20, 60, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150])]
    runs = [{"evaluations": evaluations, "final_mean_return": 150.0, "steps_to_threshold": None}]
    arm = {"runs": runs}

    measure_runs(arm, 50.0)
    assert runs[0]["steps_to_threshold"] == 200 and not runs[0]["lost_after_reaching"]
    assert runs[0]["return_at_budget"] == pytest.approx(140.0)  # the last 3 evaluations: 130, 140, 150
    measure_runs(arm, 65.0)
    assert runs[0]["steps_to_threshold"] == 400
    measure_runs(arm, 1000.0)
    assert runs[0]["steps_to_threshold"] is None

    fixed = {"fixed_traces": True, "runs": [{"evaluations": evaluations[:2], "final_mean_return": 75.0,
                                             "steps_to_threshold": None}]}
    measure_runs(fixed, 50.0)
    assert fixed["runs"][0]["return_at_budget"] == 75.0 and fixed["runs"][0]["steps_to_threshold"] is None


@pytest.mark.slow
def test_compare_writes_a_reproducible_report_and_reuses_finished_runs(cli, tmp_path, record_random, tiny_flags):
    out, offline_traces = tmp_path / "report", tmp_path / "fixed-traces"
    write_traces(offline_traces, record_random("cartpole", 12, seed=5), get_task("cartpole"))
    tiny_offline_arm = [flag.replace("--", "--offline.", 1) if flag.startswith("--") else flag
                        for flag in (*tiny_flags, "--updates", "20")]
    argv = ("compare", "--task", "cartpole", "--seeds", 2, "--dream-steps", 200, "--real-steps", 2048,
            "--heldout-episodes", 3, "--eval-episodes", 3, "--eval-every", 1024, "--out", out,
            "--offline-traces", offline_traces, *tiny_offline_arm, "--offline.bc.updates", 50, "--json")

    code, stdout, err = cli(*argv)

    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["report"] == str(out / "report.md")
    results = load_results(out / "results.json")
    assert results["seeds"] == [0, 1]
    assert results["command"].startswith("dreamer compare --task cartpole")
    assert "--dream-steps 200 --real-steps 2048" in results["command"]
    assert results["packages"]["jax"] and results["machine"]["cores"] >= 1
    assert "commit" in results and "dirty" in results
    dream, real, offline, cloning = results["arms"]
    assert (dream["name"], real["name"], real["algorithm"], offline["name"]) == ("dream", "real", "ppo", "offline")
    assert cloning["name"] == "bc" and cloning["budget_real_steps"] == offline["budget_real_steps"]
    fixed_steps = read_traces(offline_traces).episodes.num_steps
    assert [run["real_steps"] for run in offline["runs"]] == [fixed_steps, fixed_steps]
    # every arm on the same grid, 0, 1,024, ... up to its budget; the offline arm's one policy
    # is in force from the file's last step, the random policy before it
    grid = list(range(0, fixed_steps + 1, 1024))
    assert [e["real_steps"] for e in offline["runs"][0]["evaluations"]] == grid + ([fixed_steps] if grid[-1] < fixed_steps else [])
    assert offline["summary"]["fixed_traces"] and offline["runs"][0]["steps_to_threshold"] is None
    assert "--offline-traces" in results["command"] and "--offline.updates 20" in results["command"]
    assert [run["seed"] for run in dream["runs"]] == [0, 1]
    assert all(run["real_steps"] == 200 for run in dream["runs"])
    assert [e["real_steps"] for e in real["runs"][0]["evaluations"]] == [0, 1024, 2048]
    assert [e["real_steps"] for e in dream["runs"][0]["evaluations"]] == [0]
    assert real["summary"]["steps_to_threshold"]["per_seed"] == [run["steps_to_threshold"] for run in real["runs"]]
    last_three = [e["mean_return"] for e in real["runs"][0]["evaluations"][-3:]]
    assert real["runs"][0]["return_at_budget"] == pytest.approx(sum(last_three) / 3)
    assert offline["runs"][0]["return_at_budget"] == offline["runs"][0]["final_mean_return"]
    assert real["summary"]["return_at_budget"]["per_seed"] == [run["return_at_budget"] for run in real["runs"]]
    assert len(results["heldout"]["episodes"]) == 3
    assert all(e["dream_return"] is not None for e in results["heldout"]["episodes"])
    assert results["fidelity"]["horizons"][:3] == [1, 2, 3]
    report = (out / "report.md").read_text()
    assert "dream-trained (online loop)" in report and "real-trained (PPO)" in report and "offline" in report
    for plot in ("learning_curves.png", "dream_vs_real.png", "world_model_error.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Run again: every finished run is reused, so the figures come back unchanged.
    code, _, err = cli(*argv)

    assert code == 0, err
    assert err.count("reusing the finished run") == 8
    again = load_results(out / "results.json")
    assert again["arms"] == results["arms"]
