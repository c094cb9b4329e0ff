"""`dreamer compare`: both arms over seeds, results.json with its provenance, and the report."""

from __future__ import annotations

import json

import pytest

from dreamer.comparison import CompareConfig
from dreamer.report import load_results


def test_a_real_arm_with_less_than_ten_times_the_dream_budget_is_refused(cli, tmp_path):
    code, out, err = cli("compare", "--task", "pendulum", "--dream-steps", 1000, "--real-steps", 5000,
                         "--out", tmp_path / "report")

    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "--real-steps" in err and "10x" in err
    assert not (tmp_path / "report").exists()


def test_the_default_real_budget_is_at_least_ten_times_the_dream_budget():
    assert CompareConfig(task="pendulum").real_budget == 20000
    assert CompareConfig(task="pendulum", dream_steps=3000).real_budget == 30000
    assert CompareConfig(task="hopper").real_budget == 10 * CompareConfig(task="hopper").dream_budget


@pytest.mark.slow
def test_compare_writes_a_reproducible_report_and_reuses_finished_runs(cli, tmp_path):
    out = tmp_path / "report"
    argv = ("compare", "--task", "cartpole", "--seeds", 2, "--dream-steps", 200, "--real-steps", 2048,
            "--heldout-episodes", 3, "--eval-episodes", 3, "--eval-every", 1024, "--out", out, "--json")

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
    dream, real = results["arms"]
    assert (dream["name"], real["name"], real["algorithm"]) == ("dream", "real", "ppo")
    assert [run["seed"] for run in dream["runs"]] == [0, 1]
    assert all(run["real_steps"] == 200 for run in dream["runs"])
    assert [e["real_steps"] for e in real["runs"][0]["evaluations"]] == [1024, 2048]
    assert len(results["heldout"]["episodes"]) == 3
    assert all(e["dream_return"] is not None for e in results["heldout"]["episodes"])
    assert results["fidelity"]["horizons"][:3] == [1, 2, 3]
    report = (out / "report.md").read_text()
    assert "dream-trained (online loop)" in report and "real-trained (PPO)" in report
    for plot in ("learning_curves.png", "dream_vs_real.png", "world_model_error.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Run again: every finished run is reused, so the figures come back unchanged.
    code, _, err = cli(*argv)

    assert code == 0, err
    assert err.count("reusing the finished run") == 4
    again = load_results(out / "results.json")
    assert again["arms"] == results["arms"]
