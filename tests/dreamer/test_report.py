"""The comparison report, drawn from a saved results.json without re-running anything.

The results here are made up but shaped like `dreamer compare`'s: a dream arm of 1,000
real steps, a real arm of 20,000 and an offline arm, three seeds each, a held-out check
and a 20-horizon fidelity check, so every number the report prints is known in advance.
"""

from __future__ import annotations

import argparse
import copy
import json
import struct

import pytest

from dreamer.commands.report import ReportConfig, run
from dreamer.config import add_config_arguments, config_from_args
from dreamer.report import arm_summary, headline, load_results, render_report
from tasks.errors import InputError

THRESHOLD = -200.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def evaluations(steps: list[int], held_from: int | None, final: float) -> list[dict]:
    """Returns below the threshold until ``held_from``, above it after, ending at ``final``."""
    curve = []
    for step in steps:
        below = held_from is None or step < held_from
        rising = -1300.0 + 1000.0 * step / (held_from or 2 * steps[-1])
        curve.append({"real_steps": step, "mean_return": min(rising, -250.0) if below else -180.0 + step / 1000})
    curve[-1]["mean_return"] = final
    return curve


def make_run(arm: str, seed: int, steps: list[int], held_from: int | None, final: float, wall: float) -> dict:
    return {"seed": seed, "run_dir": f"reports/pendulum/runs/{arm}-seed{seed}", "real_steps": steps[-1],
            "wall_seconds": wall, "final_mean_return": final, "steps_to_threshold": held_from,
            "evaluations": evaluations(steps, held_from, final)}


def make_arm(name: str, label: str, algorithm: str, budget: int, steps: list[int], held_from, finals, walls) -> dict:
    return {"name": name, "label": label, "algorithm": algorithm, "budget_real_steps": budget,
            "runs": [make_run(name, seed, steps, held, final, wall)
                     for seed, held, final, wall in zip((0, 1, 2), held_from, finals, walls)]}


def make_fidelity(horizons: int = 20) -> dict:
    def predictor(scale: float) -> dict:
        measures = {
            "obs_rmse": [scale * 0.01 * k for k in range(1, horizons + 1)],
            "reward_mae": [scale * 0.05 * k for k in range(1, horizons + 1)],
            "return_error": [scale * 0.05 * k * k for k in range(1, horizons + 1)],
            "samples": [200 - k for k in range(1, horizons + 1)],
        }
        measures["obs_rmse"][-1] = None  # a horizon with too few samples
        return measures

    return {"task": "pendulum", "heldout_episodes": 10, "rollouts": 2000, "horizons": list(range(1, horizons + 1)),
            "predictors": {"model": predictor(1.0), "nothing_changes": predictor(20.0), "linear": predictor(5.0)}}


def make_heldout() -> dict:
    episodes = [{"seed": 123456 + i, "behaviour_return": -1200.0 - 10 * i, "real_return": -150.0 - i,
                 "dream_return": -140.0 - 2 * i} for i in range(10)]
    return {
        "arm": "dream", "seed": 0, "traces": "reports/pendulum/heldout-traces",
        "world_model": "reports/pendulum/runs/dream-seed0", "policy": "reports/pendulum/runs/dream-seed0",
        "episodes": episodes,
        "summary": {"episodes": 10, "mean_real_return": -154.5, "real_return_ci95": [-156.3, -152.7],
                    "mean_behaviour_return": -1245.0, "improvement": 1090.5, "improvement_ci95": [1071.2, 1109.8],
                    "gap_abs_mean": 5.5, "gap_abs_ci95": [3.7, 7.3], "gap_relative_mean": 0.0356,
                    "gap_relative_ci95": [0.0241, 0.0471]},
    }


def make_results() -> dict:
    dream_steps = [400, 600, 800, 1000]
    real_steps = list(range(1000, 20001, 1000))
    return {
        "format": 1, "task": "pendulum", "env_id": "Pendulum-v1", "reward_threshold": THRESHOLD,
        "created": "2026-11-25T18:00:00Z", "command": "dreamer compare --task pendulum --seeds 0 1 2",
        "commit": "c2f96e0aa1b2c3d4e5f60718293a4b5c6d7e8f90", "dirty": True,
        "packages": {"jax": "0.10.2", "flax": "0.12.8", "gymnasium": "1.2.0"},
        "machine": {"cpu": "AMD EPYC 7B13", "cores": 2, "jax_backend": "cpu", "device": "cpu", "python": "3.11.9"},
        "seeds": [0, 1, 2],
        "evaluation": {"episodes": 10, "policy": "deterministic", "every": 200},
        "arms": [
            make_arm("dream", "dream-trained (online loop)", "dreamer run", 1000, dream_steps,
                     [600, 800, 400], [-150.0, -160.0, -140.0], [130.2, 125.0, 141.9]),
            make_arm("real", "real-trained (SAC)", "sac", 20000, real_steps,
                     [4000, 5000, 7000], [-150.0, -145.0, -155.0], [600.0, 640.0, 700.0]),
            dict(make_arm("offline", "dream-trained (offline traces)", "dreamer dream", 2000, [2000],
                          [None, None, None], [-900.0, -850.0, -1000.0], [60.0, 55.0, 70.0]), fixed_traces=True),
        ],
        "heldout": make_heldout(),
        "fidelity": make_fidelity(),
    }


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(make_results(), indent=2))
    return path


def png_size(path) -> tuple[int, int]:
    """Width and height of a PNG file, which must start with the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    return struct.unpack(">II", data[16:24])


def table_row(report: str, first_cell: str) -> list[str]:
    """The cells of the markdown table row starting with ``first_cell``."""
    rows = [line for line in report.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"no single row for {first_cell!r} in:\n{report}"
    return [cell.strip() for cell in rows[0].strip("|").split(" | ")]


def test_the_report_renders_from_the_saved_results_file(results_file, tmp_path):
    path = render_report(load_results(results_file), tmp_path / "report")
    report = path.read_text()

    assert path == tmp_path / "report" / "report.md"
    dream = table_row(report, "dream-trained (online loop)")
    assert dream[:4] == ["dream-trained (online loop)", "dreamer run", "0, 1, 2", "1,000"]
    assert dream[4].startswith("600 [") and dream[4].endswith("] (600, 800, 400)")  # three seeds: the IQM is the mean
    # Written before runs kept their return at budget: that column says it has none.
    assert dream[5].startswith("-150.0 [") and dream[6] == "-" and dream[7] == "2.2 min"
    real = table_row(report, "real-trained (SAC)")
    assert real[3] == "20,000" and real[4].startswith("5,333 [") and real[4].endswith("(4,000, 5,000, 7,000)")
    assert table_row(report, "dream-trained (offline traces)")[4] == "n/a (one policy, after the whole file)"
    assert "1/8.9 of the real-trained arm's 5,333" in report
    assert "In 100% of pairs of seeds the dream-trained run needed fewer real steps." in report
    # held-out summary and per-episode tables
    assert table_row(report, "real return")[1:] == ["-154.5", "-156.3 to -152.7"]
    assert table_row(report, "dream-to-real gap, relative to the mean absolute real return")[1:] == ["0.0356", "0.0241 to 0.0471"]
    assert table_row(report, "123459")[1:] == ["-1,230.0", "-153.0", "-146.0", "7.0"]
    # fidelity at the horizons that exist, with the last one too thin to measure
    header = table_row(report, "predictor")
    assert header[2:] == ["k=1", "k=5", "k=10", "k=15"]
    assert table_row(report, "world model | reward abs. error")[2:] == ["0.05", "0.25", "0.5", "0.75"]
    # reproducibility
    assert "dreamer compare --task pendulum --seeds 0 1 2" in report
    assert "c2f96e0aa1b2c3d4e5f60718293a4b5c6d7e8f90" in report and "uncommitted changes" in report
    assert "jax 0.10.2" in report and "AMD EPYC 7B13" in report
    for plot in ("learning_curves.png", "dream_vs_real.png", "world_model_error.png"):
        assert f"]({plot})" in report
        width, height = png_size(tmp_path / "report" / plot)
        assert width >= 600 and height >= 500
        assert (tmp_path / "report" / plot).stat().st_size > 20_000
    assert not list((tmp_path / "report").glob("*.partial"))


def test_the_report_shows_each_arms_return_at_its_budget_with_every_seed(results_file, tmp_path):
    results = load_results(results_file)
    for arm in results["arms"]:
        for number, run in enumerate(arm["runs"]):
            run["return_at_budget"] = -100.0 - 10 * number

    report = render_report(results, tmp_path / "report").read_text()

    assert "return at budget, last 3 evaluations" in report
    assert table_row(report, "dream-trained (online loop)")[6] == "-110.0 (-100.0, -110.0, -120.0)"


def test_an_iqm_needs_three_quarters_of_the_runs_to_hold_the_threshold():
    arm = make_arm("dream", "dream", "dreamer run", 1000, [400, 600, 800, 1000],
                   [600, None, 400], [-150.0, -900.0, -140.0], [100.0, 110.0, 120.0])

    summary = arm_summary(arm, THRESHOLD, 200)
    steps = summary["steps_to_threshold"]
    assert steps["iqm"] is None and steps["interval"] is None  # 2 of 3 held it
    assert steps["per_seed"] == [600, None, 400] and (steps["reached"], steps["runs"]) == (2, 3)
    assert summary["final_mean_return"]["per_seed"] == [-150.0, -900.0, -140.0]
    assert summary["wall_seconds"]["median"] == 110.0
    assert summary["budget_real_steps"] == 1000


def test_a_run_that_never_held_it_counts_as_its_budget_plus_one_grid_step():
    arm = make_arm("dream", "dream", "dreamer run", 1000, [400, 600, 800, 1000],
                   [600, None, 400], [-150.0, -900.0, -140.0], [1.0, 1.0, 1.0])
    arm["runs"].append(dict(arm["runs"][0], seed=3, steps_to_threshold=800))  # 3 of 4 held it

    steps = arm_summary(arm, THRESHOLD, 200)["steps_to_threshold"]
    # sorted: 400, 600, 800, 1,200 (never: 1,000 + 200); the middle half is 600 and 800
    assert steps["iqm"] == pytest.approx(700.0)
    low, high = steps["interval"]
    assert 400 <= low <= 700 <= high <= 1200


def test_without_a_threshold_no_run_has_steps_to_it():
    steps = arm_summary(make_results()["arms"][0], None, 200)["steps_to_threshold"]

    assert steps["iqm"] is None and steps["interval"] is None
    assert steps["reached"] == 0 and steps["per_seed"] == [None, None, None]


def test_the_headline_is_the_ratio_of_the_arms_iqms_and_the_probability_of_fewer_steps():
    summary = headline(make_results())

    assert summary["dream_steps_to_threshold"] == pytest.approx(600)
    assert summary["real_steps_to_threshold"] == pytest.approx(16000 / 3)
    assert summary["fraction_of_real_experience"] == pytest.approx(600 / (16000 / 3))
    assert summary["probability_dream_needs_fewer"] == 1.0
    assert summary["statement"].startswith("The dream-trained arm held the return threshold (-200) after 600 real "
                                           "steps (IQM over 3 seeds, 95% interval ")
    assert "1/8.9 of the real-trained arm's 5,333." in summary["statement"]


def test_the_headline_counts_pairs_where_dreams_needed_more():
    results = make_results()
    results["arms"][1]["runs"][0]["steps_to_threshold"] = 300  # real seeds: 300, 5,000, 7,000
    summary = headline(results)
    # dream 600, 800, 400 against real 300, 5,000, 7,000: 6 of 9 pairs need fewer
    assert summary["probability_dream_needs_fewer"] == pytest.approx(6 / 9)
    low, high = summary["probability_interval"]
    assert 0 <= low <= 6 / 9 <= high <= 1


def test_the_headline_has_no_fraction_when_an_arm_never_held_the_threshold():
    results = make_results()
    for real_run in results["arms"][1]["runs"]:
        real_run["steps_to_threshold"] = None

    summary = headline(results)
    assert summary["fraction_of_real_experience"] is None
    assert "real-trained arm in only 0 of 3 seeds within its 20,000-step budget" in summary["statement"]

    results["reward_threshold"] = None
    summary = headline(results)
    assert summary["fraction_of_real_experience"] is None
    assert "no reward threshold" in summary["statement"] and "-150.0" in summary["statement"]


def test_a_run_that_lost_the_threshold_after_reaching_it_is_marked(tmp_path):
    results = make_results()
    results["arms"][0]["runs"][1]["lost_after_reaching"] = True
    summary = arm_summary(results["arms"][0], THRESHOLD, 200)
    assert summary["steps_to_threshold"]["lost_after_reaching"] == [False, True, False]
    report = render_report(results, tmp_path).read_text()
    assert table_row(report, "dream-trained (online loop)")[4].endswith("(600, 800†, 400)")


def test_the_report_renders_without_its_optional_parts(tmp_path):
    results = make_results()
    results.update(heldout=None, fidelity=None, reward_threshold=None, commit=None, dirty=False)
    del results["arms"][2]
    # seeds of one arm evaluated at different step counts still make one curve
    results["arms"][0]["runs"][1]["evaluations"] = evaluations([400, 650, 900], None, -300.0)

    report = render_report(results, tmp_path).read_text()
    assert table_row(report, "dream-trained (online loop)")[4] == "n/a"
    assert "dream-trained (offline traces)" not in report
    assert "no reward threshold" in report
    assert "Held-out" not in report and "fidelity" not in report.lower()
    assert "dream_vs_real.png" not in report and "world_model_error.png" not in report
    assert "unknown (not run from a git checkout)" in report
    assert png_size(tmp_path / "learning_curves.png")[0] >= 600
    assert not (tmp_path / "dream_vs_real.png").exists() and not (tmp_path / "world_model_error.png").exists()


def test_a_fidelity_check_of_a_terminating_task_shows_termination_accuracy(tmp_path):
    results = make_results()
    for metrics in results["fidelity"]["predictors"].values():
        metrics["termination_accuracy"] = [0.9] * 20

    report = render_report(results, tmp_path).read_text()
    assert table_row(report, "world model | termination balanced acc.")[2:] == ["0.9"] * 4


@pytest.mark.parametrize("content, problem", [
    (None, "no such results file"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a results object"),
    (json.dumps({"format": 1, "task": "pendulum"}), "missing arms"),
    (json.dumps({"task": "pendulum"}), "missing format, arms"),
    (json.dumps({"format": 2, "task": "pendulum", "arms": []}), "unknown results format 2"),
    (json.dumps({"format": 1, "task": "pendulum", "arms": [{"name": "dream"}]}), "list of 'runs'"),
])
def test_loading_a_bad_results_file_fails_in_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(InputError) as error:
        load_results(path)
    assert error.value.path == str(path)
    assert problem in error.value.problem
    assert len(str(error.value).splitlines()) == 1


def test_the_report_command_writes_beside_the_results_by_default(results_file):
    summary, text = run(ReportConfig(results=str(results_file)))

    folder = results_file.parent
    plots = ("learning_curves.png", "dream_vs_real.png", "world_model_error.png")
    assert summary["report"] == str(folder / "report.md") and (folder / "report.md").is_file()
    assert summary["plots"] == [str(folder / name) for name in plots]
    assert all(png_size(folder / name) for name in plots)
    assert summary["headline"]["fraction_of_real_experience"] == pytest.approx(600 / (16000 / 3))
    assert str(folder / "report.md") in text and "1/8.9" in text
    json.dumps(summary)  # what --json prints


def test_the_report_command_builds_from_its_flags_and_writes_to_out(results_file, tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ReportConfig)
    args = parser.parse_args(["--results", str(results_file), "--out", str(tmp_path / "elsewhere")])
    config = config_from_args(ReportConfig, args)

    summary, _ = run(config)
    assert summary["report"] == str(tmp_path / "elsewhere" / "report.md")
    assert (tmp_path / "elsewhere" / "report.md").is_file()


def test_the_report_command_refuses_a_bad_results_file(tmp_path):
    with pytest.raises(InputError, match="no such results file"):
        run(ReportConfig(results=str(tmp_path / "missing.json")))
    assert not list(tmp_path.iterdir())


def test_rendering_does_not_change_the_results(tmp_path):
    results = make_results()
    before = copy.deepcopy(results)

    render_report(results, tmp_path)
    assert results == before


def test_a_single_seed_is_not_called_a_median():
    results = make_results()
    for arm in results["arms"]:
        arm["runs"] = arm["runs"][:1]

    statement = headline(results)["statement"]

    assert "(one seed)" in statement and "median" not in statement
