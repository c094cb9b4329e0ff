"""The controller side: a saved policy as a numpy callable from its exported step,
acting as the actor does, checking what it is given, and needing nothing else of ours."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from policies import load_policy
from policies.networks import Actor, NetworkConfig
from policies.saving import save_policy
from tasks.registry import get_task


def saved_actor(run_dir, task, seed: int = 0) -> Actor:
    actor = Actor(int(np.prod(task.observation_space.shape)), task.action_space, NetworkConfig(hidden_size=16),
                  nnx.Rngs(seed))
    save_policy(run_dir, actor, task)
    return actor


@pytest.fixture(scope="module")
def pendulum_policy(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pendulum-policy")
    return run_dir, saved_actor(run_dir, get_task("pendulum"))


def test_the_loaded_policy_acts_as_the_actor_for_one_observation_or_a_batch(pendulum_policy):
    run_dir, actor = pendulum_policy
    policy = load_policy(run_dir)
    observations = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)

    batch = policy(observations)
    single = policy(observations[2])

    expected = np.asarray(actor.mode(jnp.asarray(observations)))
    np.testing.assert_allclose(batch, expected, rtol=1e-5, atol=1e-6)
    assert batch.shape == (7, 1) and single.shape == (1,)
    np.testing.assert_allclose(single, expected[2], rtol=1e-5, atol=1e-6)
    assert policy(observations.astype(np.float64)).dtype == np.float32  # real numbers of any width are taken


def test_sampling_is_reproducible_with_a_seed_and_stays_in_bounds(pendulum_policy):
    policy = load_policy(pendulum_policy[0])
    observations = np.zeros((256, 3))
    first = policy(observations, deterministic=False, seed=3)
    assert np.array_equal(first, policy(observations, deterministic=False, seed=3))
    assert not np.array_equal(first, policy(observations, deterministic=False, seed=4))
    assert first.std() > 0.01 and np.all(np.abs(first) <= 2.0)  # Pendulum's torque bounds


def test_wrong_shapes_and_dtypes_are_one_clear_value_error(pendulum_policy):
    policy = load_policy(pendulum_policy[0])
    with pytest.raises(ValueError, match=r"expected an observation of shape \(3,\) or a batch of shape \(n, 3\), got \(4,\)"):
        policy(np.zeros(4))
    with pytest.raises(ValueError, match="got \\(2, 3, 1\\)"):
        policy(np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="real numbers, got dtype <U1"):
        policy(np.array(["a", "b", "c"]))


def test_discrete_actions_come_back_as_integers_from_the_spaces_start(tmp_path):
    task = get_task("gym:Acrobot-v1")
    actor = saved_actor(tmp_path, task, seed=1)
    policy = load_policy(tmp_path)
    observations = np.random.default_rng(1).normal(size=(20, 6))
    actions = policy(observations)
    assert actions.dtype == np.int64
    np.testing.assert_array_equal(actions, np.asarray(actor.mode(jnp.asarray(observations, jnp.float32))))
    spec = json.loads((tmp_path / "policy.json").read_text())["deployment"]
    assert spec["action_space"] == {"type": "Discrete", "n": 3, "start": 0}
    assert gym.spaces.Box(np.array(spec["observation_space"]["low"], np.float32),
                          np.array(spec["observation_space"]["high"], np.float32),
                          dtype=np.float32) == task.observation_space


def test_a_run_without_a_policy_or_its_export_says_so(tmp_path, pendulum_policy):
    with pytest.raises(FileNotFoundError, match="no saved policy"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text((pendulum_policy[0] / "policy.json").read_text())
    with pytest.raises(FileNotFoundError, match="policy.stablehlo is missing"):
        load_policy(tmp_path)


def test_a_fresh_process_acts_with_only_the_policies_package(pendulum_policy):
    run_dir, actor = pendulum_policy
    program = (
        "import json, sys\n"
        "import numpy as np\n"
        "from policies import load_policy\n"
        f"policy = load_policy({str(run_dir)!r})\n"
        "action = policy(np.array([1.0, 0.0, 0.5]))\n"
        "policy.reset()\n"
        "ours = sorted({m.split('.')[0] for m in sys.modules} & {'dreamer', 'worldmodel', 'tasks', 'flax', 'gymnasium'})\n"
        "print(json.dumps({'action': action.tolist(), 'imported': ours}))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["imported"] == []  # neither our model code, nor flax, nor an environment library
    np.testing.assert_allclose(result["action"], np.asarray(actor.mode(jnp.array([[1.0, 0.0, 0.5]])))[0], rtol=1e-5)
