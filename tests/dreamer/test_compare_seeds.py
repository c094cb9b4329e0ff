"""`dreamer compare --seeds-in-one-call`: the real-trained arm's seeds trained as one
program give the runs that training them one by one gives, and are reused as theirs are."""

from __future__ import annotations

import jax
import pytest

from dreamer.comparison import CompareConfig, real_run, real_run_dir, real_runs_in_one_call, real_seeds_in_one_call


def comparable(record: dict) -> dict:
    """A run's record without what differs by where and how fast it ran."""
    return {name: value for name, value in record.items() if name not in ("run_dir", "wall_seconds")}


def test_real_seeds_in_one_call_equal_real_seeds_one_by_one(tmp_path, capsys):
    # Two rollouts of RL-Zoo's PPO (8 x 32 steps each).
    config = CompareConfig(task="cartpole", seeds=2, dream_steps=20, real_steps=512, eval_every=256, eval_episodes=1,
                           seeds_in_one_call="always")
    assert real_seeds_in_one_call(config, "ppo") and not real_seeds_in_one_call(config, "sb3:PPO")

    one_by_one = [real_run(config, "ppo", seed, real_run_dir(tmp_path / "apart", "ppo", seed)) for seed in (0, 1)]
    together = real_runs_in_one_call(config, "ppo", [0, 1], tmp_path / "together")

    assert [comparable(run) for run in together] == [comparable(run) for run in one_by_one]
    assert [[e["real_steps"] for e in run["evaluations"]] for run in together] == [[0, 256, 512]] * 2
    capsys.readouterr()
    assert real_runs_in_one_call(config, "ppo", [0, 1], tmp_path / "together") == together
    assert capsys.readouterr().err.count("reusing the finished run") == 2


@pytest.mark.parametrize("choice, expected", [("auto", jax.default_backend() != "cpu"), ("never", False),
                                              ("always", True)])
def test_compare_trains_real_seeds_in_one_call_on_an_accelerator_or_when_told(choice, expected):
    config = CompareConfig(task="cartpole", seeds=3, seeds_in_one_call=choice)
    assert real_seeds_in_one_call(config, "ppo") is expected
    assert not real_seeds_in_one_call(CompareConfig(task="cartpole", seeds=1, seeds_in_one_call="always"), "ppo")
