"""One validated configuration path: flags and YAML pass the same typed checks.

The unit tests drive `tasks.config` directly; the command-line tests run the real
``dreamer`` entry point in-process on configs that are wrong in one way each and check
the whole contract: exit status 2, one stderr line naming the flag or the file, no
traceback, and no ``--out`` folder (validation happens before anything is written).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from dreamer.cli import main
from dreamer.comparison import CompareConfig
from dreamer.online import RunConfig
from policies.networks import NetworkConfig
from tasks.config import coerce, config, option
from worldmodel.ensemble import EnsembleConfig


@config
class Inner:
    rate: float = option(1e-3, min=0.0)
    mode: Literal["a", "b"] = "a"


@config
class Outer:
    steps: int = option(10, min=1)
    flag: bool = False
    name: str = "x"
    kwargs: dict = option({})
    inner: Inner = option(Inner())
    limit: int | None = None

    def __post_init__(self):
        if self.limit is not None and self.limit < self.steps:
            raise ValueError("limit must be at least steps")


# --------------------------------------------------------------------------- coerce


@pytest.mark.parametrize("text, expected", [("1e-3", 1e-3), ("3", 3.0), (" 2.5 ", 2.5), (4, 4.0)])
def test_floats_accept_yaml_number_forms(text, expected):
    assert coerce(text, float, "rate") == expected


@pytest.mark.parametrize("text, expected", [("1e5", 100000), ("12", 12), (3.0, 3), ("2.0", 2)])
def test_integers_accept_integral_scientific_forms(text, expected):
    assert coerce(text, int, "steps") == expected


@pytest.mark.parametrize("bad", ["2.5", 2.5, "ten", True, "nan", None])
def test_integers_refuse_fractions_words_and_booleans(bad):
    with pytest.raises(ValueError, match="steps: expected an integer"):
        coerce(bad, int, "steps")


@pytest.mark.parametrize("bad", ["nan", "inf", float("nan"), "fast", False])
def test_floats_refuse_non_finite_words_and_booleans(bad):
    with pytest.raises(ValueError, match="rate: expected a"):
        coerce(bad, float, "rate")


@pytest.mark.parametrize("text, expected", [("yes", True), ("Off", False), ("1", True), ("false", False)])
def test_booleans_accept_their_usual_spellings_only(text, expected):
    assert coerce(text, bool, "flag") is expected


def test_a_stray_word_is_not_a_boolean():
    with pytest.raises(ValueError, match="expected true or false"):
        coerce("maybe", bool, "flag")


def test_a_literal_refuses_a_choice_outside_it():
    with pytest.raises(ValueError, match="must be one of a, b, got 'dynamic'"):
        coerce("dynamic", Literal["a", "b"], "mode")


def test_a_json_mapping_is_parsed_from_text():
    assert coerce('{"g": 5.0}', dict, "env_kwargs") == {"g": 5.0}
    with pytest.raises(ValueError, match="not a JSON mapping"):
        coerce("{g: 5", dict, "env_kwargs")
    with pytest.raises(ValueError, match="expected a mapping"):
        coerce("[1, 2]", dict, "env_kwargs")


# --------------------------------------------------------------------------- config classes


def test_a_config_made_in_code_is_checked_too():
    with pytest.raises(ValueError, match="steps: must be at least 1"):
        Outer(steps=0)
    with pytest.raises(ValueError, match="mode: must be one of"):
        Inner(mode="c")
    with pytest.raises(ValueError, match="steps: expected an integer"):
        Outer(steps="10")  # code must pass typed values; only flags and YAML are parsed
    with pytest.raises(ValueError, match="limit must be at least steps"):
        Outer(steps=5, limit=2)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Outer().steps = 3


def test_cross_field_rules_of_the_library_configs():
    with pytest.raises(ValueError, match="min_std"):
        NetworkConfig(min_std=1.0, max_std=0.5)
    with pytest.raises(ValueError, match="min_logvar"):
        EnsembleConfig(min_logvar=1.0, max_logvar=0.0)


# --------------------------------------------------------------------------- the command line


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(capsys, argv, named: str, out) -> str:
    code, stdout, stderr = run_cli(capsys, *argv)
    assert code == 2, f"exit {code}: {stderr!r}"
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"dreamer: error: {named}: "), lines[0]
    assert stdout == ""
    assert not out.exists(), "a run directory was created although the config was refused"
    return lines[0]


@pytest.mark.parametrize("yaml_text, named_key", [
    ("dream:\n  gradient: dynamic\n", "dream.gradient"),
    ("dream:\n  horizon: 2.5\n", "horizon"),
    ("ensemble: 5\n", "ensemble"),
    ("real_steps: -200\n", "real_steps"),
    ("dream:\n  network:\n    min_std: 2.0\n    max_std: 1.0\n", "min_std"),
    ("explore: noisy:-1\n", "explore"),
    ("resume: perhaps\n", "resume"),
])
def test_a_bad_yaml_value_is_refused_with_one_line_naming_the_file(capsys, tmp_path, yaml_text, named_key):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml_text)
    out = tmp_path / "run"
    line = assert_one_line(capsys, ["run", "--task", "pendulum", "--config", config_file, "--out", out], str(config_file), out)
    assert named_key in line


@pytest.mark.parametrize("argv, flag", [
    (["--dream.gradient", "dynamic"], "--dream.gradient"),
    (["--real-steps", "0"], "--real-steps"),
    (["--dream.horizon", "2.5"], "--dream.horizon"),
    (["--fit.learning-rate", "fast"], "--fit.learning-rate"),
])
def test_a_bad_flag_value_is_refused_with_one_line_naming_the_flag(capsys, tmp_path, argv, flag):
    out = tmp_path / "run"
    assert_one_line(capsys, ["run", "--task", "pendulum", "--out", out, *argv], flag, out)


def test_the_explore_schedule_is_checked_before_the_first_round(capsys, tmp_path):
    out = tmp_path / "run"
    assert_one_line(capsys, ["run", "--task", "pendulum", "--out", out, "--explore", "noisy:abc"], "command line", out)


def test_yaml_number_forms_reach_the_config_as_numbers(tmp_path):
    from dreamer.config import build_config, load_yaml_fields

    config_file = tmp_path / "run.yaml"
    config_file.write_text("task: pendulum\nout: r\nreal_steps: 1e3\nfit:\n  learning_rate: 1e-3\ndream:\n  gradient: reinforce\n")
    built = build_config(RunConfig, load_yaml_fields(config_file, RunConfig), {}, str(config_file))
    assert built.real_steps == 1000 and isinstance(built.real_steps, int)
    assert built.fit.learning_rate == pytest.approx(1e-3)
    assert built.dream.gradient == "reinforce"


def test_flags_win_over_yaml_and_keep_their_spelling(tmp_path):
    from dreamer.config import build_config, load_yaml_fields

    config_file = tmp_path / "compare.yaml"
    config_file.write_text("task: cartpole\nseeds: 2\noffline:\n  updates: 1e3\n  dream:\n    gradient: reinforce\n")
    flags = {"seeds": "3", "offline.updates": "50"}
    built = build_config(CompareConfig, load_yaml_fields(config_file, CompareConfig), flags, str(config_file))
    assert built.seeds == 3
    assert built.offline.updates == 50
    assert built.offline.dream.gradient == "reinforce"
    assert built.offline.dream.uncertainty_penalty == 1.0  # the section's own default survives


def test_help_shows_the_defaults_a_command_sets_for_a_nested_section(capsys):
    # `learn` sets its own ensemble and fit defaults; the help must show those, not the classes'.
    assert main(["learn", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--ensemble.hidden-size HIDDEN_SIZE (default: 128)" in help_text
    assert EnsembleConfig().hidden_size != 128
    assert "--fit.max-updates MAX_UPDATES (default: 2000)" in help_text


def test_a_models_presets_lie_between_the_defaults_and_yaml_and_flags(tmp_path):
    from dreamer.config import build_config, load_yaml_fields, with_presets

    def built(yaml_text: str, flags: dict) -> RunConfig:
        config_file = tmp_path / "run.yaml"
        config_file.write_text("task: cartpole\nout: r\n" + yaml_text)
        values = load_yaml_fields(config_file, RunConfig)
        return build_config(RunConfig, with_presets(RunConfig, values, flags), flags, str(config_file))

    ensemble = built("", {})
    assert (ensemble.steps_per_round, ensemble.fit.max_updates, ensemble.dream.gamma) == (200, 1000, 0.99)
    rssm = built("", {"model": "rssm"})
    assert (rssm.steps_per_round, rssm.dream_updates, rssm.fit.max_updates) == (500, 2000, 500)
    assert (rssm.dream.gamma, rssm.dream.entropy) == (0.997, 1e-3)
    assert rssm.fit.patience == ensemble.fit.patience  # the section's settings the preset leaves alone
    from_yaml = built("model: rssm\nfit:\n  max_updates: 80\ndream:\n", {"dream.gamma": "0.9"})
    assert (from_yaml.steps_per_round, from_yaml.fit.max_updates, from_yaml.dream.gamma) == (500, 80, 0.9)
    assert from_yaml.dream.entropy == 1e-3  # an empty section in YAML keeps the preset's


def test_a_tasks_presets_give_locomotion_its_defaults_on_every_command_that_learns_on_it(tmp_path):
    from dreamer.comparison import _real_run_config
    from dreamer.config import build_config, with_presets
    from policies.baselines import TrainRealConfig
    from policies.sac import SACConfig

    def built(config_cls, values: dict, flags: dict | None = None):
        return build_config(config_cls, with_presets(config_cls, values, flags or {}), flags or {}, "test")

    hopper = built(RunConfig, {"task": "hopper", "out": "r"})
    assert (hopper.steps_per_round, hopper.dream_updates, hopper.eval_every) == (1000, 3000, 1000)
    assert (hopper.dream.value_head, hopper.dream.return_scale_start) == ("twohot", "debiased")
    pendulum = built(RunConfig, {"task": "pendulum", "out": "r"})
    assert hopper.dream.horizon == pendulum.dream.horizon  # what the preset leaves alone
    assert (pendulum.steps_per_round, pendulum.dream_updates, pendulum.eval_every) == (200, 1000, 200)
    assert pendulum.dream.value_head != "twohot"
    flagged = built(RunConfig, {"task": "halfcheetah", "out": "r"}, {"eval_every": "500", "dream.value_head": "squared_error"})
    assert (flagged.eval_every, flagged.dream.value_head, flagged.steps_per_round) == (500, "squared_error", 1000)
    rssm_hopper = built(RunConfig, {"task": "hopper", "out": "r", "model": "rssm"})
    assert (rssm_hopper.steps_per_round, rssm_hopper.fit.max_updates) == (1000, 500)  # the task's over the model's

    # compare measures both arms on the task's grid, and its real arm trains as train-real does.
    comparison = built(CompareConfig, {"task": "hopper"})
    assert (comparison.eval_every, comparison.dream_budget, comparison.real_budget) == (1000, 50000, 250000)
    real = _real_run_config(comparison, "sac", 100, tmp_path)
    assert real == built(TrainRealConfig, {"task": "hopper", "out": str(tmp_path), "algo": "sac", "steps": 250000,
                                           "seed": 100})
    assert (real.eval_every, real.sac.learning_rate, real.sac.learning_starts) == (1000, 3e-4, 10000)
    classic = _real_run_config(built(CompareConfig, {"task": "pendulum"}), "sac", 0, tmp_path)
    assert (classic.eval_every, classic.sac) == (200, SACConfig())
