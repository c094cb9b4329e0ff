"""Property-based search for bad input nobody listed (hypothesis, through `main(argv)`).

Each property starts from a valid input (a recorded npz, a CSV table, a YAML config,
flag values) and damages it in generated ways: dropped or renamed fields, other dtypes,
wrong lengths, stray words, NaN, huge numbers. Whatever the damage, the command either
succeeds with a readable result or ends with one line and exit status 2: never a
traceback, never a changed dataset it did not successfully append to. Configs are
checked by validation alone, never by training.

Examples are derandomised, so CI sees the same cases every run; the ``slow`` variants
search further with more examples.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamer.cli import build_parser, main
from dreamer.config import config_from_args
from dreamer.online import RunConfig
from tasks.errors import InputError
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.traces import read_traces, write_traces

FAST = settings(max_examples=20, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LONG = settings(FAST, max_examples=30)

STRAY_TEXT = ["", "nan", "inf", "-inf", "yes", "no", "abc", "1e400", "-0", "True", "false", "3.5", " 2", "None",
              "0x10", "1,5", "∞", "2.0", "-7"]


# --------------------------------------------------------------------------- shared inputs


@pytest.fixture(scope="module")
def pendulum_recording():
    task = get_task("pendulum")
    return task, record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 2), num_envs=2, progress=False)


def flat_arrays(episodes) -> dict[str, np.ndarray]:
    last_steps = episodes.step_offsets[1:] - 1
    timeouts = np.zeros(episodes.num_steps, dtype=bool)
    timeouts[last_steps] = ~episodes.terminations[last_steps]
    return {
        "observations": np.concatenate([e.observations[:-1] for e in episodes]),
        "next_observations": np.concatenate([e.observations[1:] for e in episodes]),
        "actions": np.array(episodes.actions),
        "rewards": np.array(episodes.rewards),
        "terminals": np.array(episodes.terminations),
        "timeouts": timeouts,
        "reset_seeds": np.array(episodes.seeds),
    }


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def assert_clean_outcome(capsys, argv: list, out: Path, existing: Path, appending: bool) -> None:
    """Success with a readable dataset, or one line and exit 2; the existing dataset unchanged unless appended to."""
    before_hash, before_count = folder_hash(existing), read_traces(existing).episodes.num_episodes
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    stdout, stderr = capsys.readouterr()
    assert "Traceback" not in stderr
    if code == 0:
        written = existing if appending else out
        assert read_traces(written).episodes.num_episodes > (before_count if appending else 0)
        if not appending:
            assert folder_hash(existing) == before_hash
        return
    assert code == 2, f"exit {code}: {stderr!r}"
    errors = [line for line in stderr.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("dreamer: error: "), stderr
    assert stdout == ""
    assert folder_hash(existing) == before_hash, "a failed command changed an existing dataset"
    assert read_traces(existing).episodes.num_episodes == before_count
    if not appending:
        assert not out.exists(), "a failed import left its output behind"
    assert not [p for p in out.parent.iterdir() if ".writing" in p.name or ".replaced" in p.name]


# --------------------------------------------------------------------------- npz files


@st.composite
def npz_damage(draw):
    """A list of (key, how) damages to apply to a valid flat npz."""
    keys = ["observations", "next_observations", "actions", "rewards", "terminals", "timeouts", "reset_seeds"]
    hows = ["drop", "int", "float16", "complex", "text", "bool", "shorter", "longer", "nan", "huge", "negative",
            "extra_axis", "scalar", "half"]
    return draw(st.lists(st.tuples(st.sampled_from(keys), st.sampled_from(hows)), min_size=1, max_size=3)), draw(st.booleans())


def damage_array(array: np.ndarray, how: str) -> np.ndarray | None:
    if how == "drop":
        return None
    if how == "int":
        return array.astype(np.int64)
    if how == "float16":
        return array.astype(np.float16)
    if how == "complex":
        return array.astype(np.complex64)
    if how == "text":
        return array.astype(str)
    if how == "bool":
        return array.astype(bool)
    if how == "shorter":
        return array[:-3]
    if how == "longer":
        return np.concatenate([array, array[:2]])
    if how == "extra_axis":
        return array[..., None]
    if how == "scalar":
        return np.asarray(array.reshape(-1)[0])
    values = array.astype(np.float64).copy()
    flat = values.reshape(-1)
    if flat.size:
        flat[len(flat) // 3] = {"nan": np.nan, "huge": 1e300, "negative": -5.0, "half": 0.5}[how]
    return values


def check_npz_damage(capsys, pendulum_recording, damage) -> None:
    task, episodes = pendulum_recording
    damages, appending = damage
    arrays = flat_arrays(episodes)
    for key, how in damages:
        if key in arrays:
            try:
                damaged = damage_array(arrays[key], how)
            except (TypeError, ValueError, IndexError):
                continue  # a damage that cannot apply to what earlier damage made (text to float, empty)
            if damaged is None:
                del arrays[key]
            else:
                arrays[key] = damaged
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        existing = folder / "existing"
        write_traces(existing, episodes, task)
        source = folder / "log.npz"
        np.savez(source, **arrays)
        out = existing if appending else folder / "imported"
        argv = ["traces", "import", source, "--task", "pendulum", "--out", out] + (["--append"] if appending else [])
        assert_clean_outcome(capsys, argv, out, existing, appending)


@FAST
@given(damage=npz_damage())
def test_damaged_npz_files_import_or_end_in_one_line(capsys, pendulum_recording, damage):
    check_npz_damage(capsys, pendulum_recording, damage)


@pytest.mark.slow
@pytest.mark.long
@LONG
@given(damage=npz_damage())
def test_damaged_npz_files_import_or_end_in_one_line_long(capsys, pendulum_recording, damage):
    check_npz_damage(capsys, pendulum_recording, damage)


# --------------------------------------------------------------------------- CSV tables


def csv_columns(episodes) -> dict[str, list[str]]:
    arrays = flat_arrays(episodes)
    rows = len(arrays["rewards"])
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    episode = np.searchsorted(ends, np.arange(rows))
    columns = {"episode": [str(e) for e in episode],
               "step": [str(s) for s in np.arange(rows) - np.concatenate([[0], ends + 1])[episode]]}
    for i in range(arrays["observations"].shape[1]):
        columns[f"obs_{i}"] = [repr(float(v)) for v in arrays["observations"][:, i]]
        columns[f"next_obs_{i}"] = [repr(float(v)) for v in arrays["next_observations"][:, i]]
    columns["action_0"] = [repr(float(v)) for v in arrays["actions"].reshape(rows, -1)[:, 0]]
    columns["reward"] = [repr(float(v)) for v in arrays["rewards"]]
    columns["terminated"] = [str(bool(v)) for v in arrays["terminals"]]
    columns["truncated"] = [str(bool(v)) for v in arrays["timeouts"]]
    columns["seed"] = [str(arrays["reset_seeds"][e]) for e in episode]
    return columns


@st.composite
def table_damage(draw):
    """Cell edits (column index, row, text), column drops and renames for a valid CSV."""
    cells = draw(st.lists(st.tuples(st.integers(0, 14), st.integers(0, 399), st.sampled_from(STRAY_TEXT)), max_size=4))
    dropped = draw(st.lists(st.integers(0, 14), max_size=2))
    renamed = draw(st.lists(st.tuples(st.integers(0, 14), st.sampled_from(["obs_7", "reward", "", "step", "x y"])),
                            max_size=1))
    return cells, dropped, renamed, draw(st.booleans())


def check_table_damage(capsys, pendulum_recording, damage) -> None:
    task, episodes = pendulum_recording
    cells, dropped, renamed, appending = damage
    columns = csv_columns(episodes)
    names = list(columns)
    for column, row, text in cells:
        values = columns[names[column % len(names)]]
        values[row % len(values)] = text
    for column, new_name in renamed:
        names[column % len(names)] = new_name
    header = [name for index, name in enumerate(names) if index not in dropped]
    keys = [key for index, key in enumerate(columns) if index not in dropped]
    rows = len(columns["episode"])
    lines = [",".join(header)] + [",".join(columns[key][row] for key in keys) for row in range(rows)]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        existing = folder / "existing"
        write_traces(existing, episodes, task)
        source = folder / "log.csv"
        source.write_text("\n".join(lines) + "\n")
        out = existing if appending else folder / "imported"
        argv = ["traces", "import", source, "--task", "pendulum", "--out", out] + (["--append"] if appending else [])
        assert_clean_outcome(capsys, argv, out, existing, appending)


@FAST
@given(damage=table_damage())
def test_damaged_tables_import_or_end_in_one_line(capsys, pendulum_recording, damage):
    check_table_damage(capsys, pendulum_recording, damage)


@pytest.mark.slow
@pytest.mark.long
@LONG
@given(damage=table_damage())
def test_damaged_tables_import_or_end_in_one_line_long(capsys, pendulum_recording, damage):
    check_table_damage(capsys, pendulum_recording, damage)


# --------------------------------------------------------------------------- configs and flags

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(STRAY_TEXT + ["dynamics", "reinforce", "silu", "noisy:0.1", "sample", "1e-3", "1e5"]),
)
KEYS = ["real_steps", "random_steps", "steps_per_round", "eval_episodes", "explore", "dream_updates",
        "validation_fraction", "heldout_fraction", "split_seed", "resume", "seed", "unknown_key",
        "ensemble", "fit", "dream"]
NESTED = {"ensemble": ["members", "elites", "hidden_size", "min_logvar", "max_logvar", "dream_noise", "bogus"],
          "fit": ["batch_size", "learning_rate", "max_updates", "patience", "sequence_length"],
          "dream": ["horizon", "gamma", "lambda_", "gradient", "entropy", "network"]}
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=2),
                                                        st.dictionaries(st.sampled_from(["hidden_size", "min_std", "max_std", "activation", "x"]), inner, max_size=2)),
                      max_leaves=4)


@st.composite
def yaml_configs(draw):
    config = {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4, unique=True)):
        if key in NESTED and draw(st.booleans()):
            config[key] = draw(st.dictionaries(st.sampled_from(NESTED[key]), VALUES, max_size=3))
        else:
            config[key] = draw(VALUES)
    return config


def check_yaml_config(config: dict) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        args = build_parser().parse_args(["run", "--task", "pendulum", "--out", str(Path(folder) / "run"),
                                          "--config", str(path)])
        try:
            built = config_from_args(RunConfig, args, str(path))
        except InputError as error:
            assert "\n" not in str(error)
            return
        assert isinstance(built, RunConfig)
        assert isinstance(built.real_steps, int) and built.real_steps >= 1
        assert built.dream.gradient in ("dynamics", "reinforce")
        assert built.dream.network.min_std < built.dream.network.max_std


@FAST
@given(config=yaml_configs())
def test_generated_yaml_configs_validate_or_end_in_one_error(config):
    check_yaml_config(config)


@pytest.mark.slow
@pytest.mark.long
@LONG
@given(config=yaml_configs())
def test_generated_yaml_configs_validate_or_end_in_one_error_long(config):
    check_yaml_config(config)


FLAGS = ["--real-steps", "--random-steps", "--eval-episodes", "--explore", "--dream.gradient", "--dream.horizon",
         "--dream.gamma", "--ensemble.members", "--fit.learning-rate", "--validation-fraction", "--heldout-fraction",
         "--dream.network.min-std", "--dream.network.activation", "--seed"]


@st.composite
def flag_values(draw):
    argv = []
    for flag in draw(st.lists(st.sampled_from(FLAGS), max_size=4)):
        argv += [flag, draw(st.one_of(st.sampled_from(STRAY_TEXT + ["tanh", "reinforce", "noisy:abc", "0.99"]),
                                      st.integers(-100, 100).map(str), st.floats().map(repr)))]
    return argv


def check_flags(capsys, argv: list[str]) -> None:
    capsys.readouterr()
    try:
        args = build_parser().parse_args(["run", "--task", "pendulum", "--out", "unused", *argv])
    except SystemExit as exit:  # argparse: a value that looks like a flag, say
        assert exit.code == 2
        stderr = capsys.readouterr().err
        assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr
        return
    try:
        built = config_from_args(RunConfig, args)
    except InputError as error:
        assert str(error).split(":")[0] in FLAGS + ["command line"], str(error)
        return
    assert isinstance(built, RunConfig)


@FAST
@given(argv=flag_values())
def test_generated_flag_values_validate_or_end_in_one_error(capsys, argv):
    check_flags(capsys, argv)


@pytest.mark.slow
@pytest.mark.long
@LONG
@given(argv=flag_values())
def test_generated_flag_values_validate_or_end_in_one_error_long(capsys, argv):
    check_flags(capsys, argv)
