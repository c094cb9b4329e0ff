"""Data parallel fitting and dreaming: on 8 simulated CPU devices, a fit splits each batch
over all of them and ends where the same fit on one device ends, also when the devices are
laid out as two hosts that each draw their share of every batch from their own episode
shard; the dream trainer splits each update's start states over them and ends where one
device ends; the gymnasium dream environments step as they do on one.

XLA fixes the number of CPU devices when JAX starts, so the 8-device runs happen in a
subprocess that sets ``XLA_FLAGS`` first. On a 2-core machine 8 devices are slower than
one: this checks the arithmetic, not the speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from dreamer.cli import main
from tasks.errors import InputError
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.sampler import sample_sequences, sequence_data
from tasks.traces import write_traces
from worldmodel.sharding import (check_batch_divides, data_mesh, episode_shards, sample_global_batch,
                                 sharded_sequence_data)

EIGHT_DEVICES = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import json
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from tasks.recording import RandomPolicy, record_episodes, reset_seeds
    from tasks.registry import get_task
    from worldmodel.ensemble import EnsembleConfig
    from worldmodel.fit import FitConfig, fit_world_model
    from worldmodel.saving import build_model_for_spaces
    from tasks.errors import InputError
    from worldmodel.sharding import check_batch_divides, data_mesh, split_batch

    task = get_task("pendulum")
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 2), progress=False)
    tiny = EnsembleConfig(members=2, elites=2, hidden_size=32, hidden_layers=2, termination_hidden=16)
    result = {"devices": jax.device_count()}
    mesh = data_mesh(8)
    split = jax.jit(lambda x: split_batch(x, mesh))(jnp.zeros((32, 3)))
    result["batch_split_over"] = len(split.sharding.device_set)
    result["two_host_mesh"] = dict(data_mesh(8, hosts=2).shape)
    try:
        check_batch_divides(mesh, 12, "--fit.batch-size")
    except InputError as error:
        result["refused"] = str(error)
    # After 10 updates the 8 devices are laid out as two simulated hosts of 4, each drawing
    # from its own shard of the episodes (as two processes would); one device holds both.
    for updates, hosts in ((1, 1), (10, 2)):
        fitted = {}
        for devices in (1, 8):
            model = build_model_for_spaces("ensemble", task.observation_space, task.action_space, tiny, seed=0)
            initial = [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]
            config = FitConfig(batch_size=16, updates_per_call=updates, max_updates=updates)
            mesh = data_mesh(devices, hosts=hosts if devices == 8 else 1)
            fit_world_model(model, episodes, None, config, seed=3, progress=False, mesh=mesh, shards=hosts)
            fitted[devices] = [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]
        rtol = 1e-5 if updates == 1 else 1e-4  # float32 sums in another order: atol for weights near 0
        result[f"agree_after_{updates}"] = all(np.allclose(b, a, rtol=rtol, atol=1e-6) for a, b in zip(fitted[1], fitted[8]))
        result[f"largest_difference_after_{updates}"] = max(float(np.abs(a - b).max()) for a, b in zip(fitted[1], fitted[8]))
        result[f"largest_change_by_the_fit_{updates}"] = max(float(np.abs(a - b).max()) for a, b in zip(fitted[1], initial))

    # The dream trainer, in the last fitted model, as `dreamer dream` runs it (penalty and
    # halting on): the same start and the same draws on 1 device and on 8.
    from dreamer.actor_critic import DreamConfig, dream_mesh
    from dreamer.dreaming import PolicyInDreams
    from dreamer.offline import halting
    from policies.networks import NetworkConfig
    try:
        dream_mesh(8, DreamConfig(batch_size=12))
    except InputError as error:
        result["dream_refused"] = str(error)
    threshold, halt_reward = halting(model, episodes, 2.0, 1.0)
    dream = DreamConfig(batch_size=16, horizon=5, updates_per_call=1, uncertainty_penalty=1.0,
                        halt_threshold=threshold, halt_reward=halt_reward,
                        network=NetworkConfig(hidden_size=32, hidden_layers=1))
    weights = lambda state: [np.asarray(leaf) for leaf in jax.tree.leaves((state.actor, state.critic))]
    dreamed, flops = {}, {}
    for devices in (1, 8):
        policy = PolicyInDreams(model, task, episodes, dream, seed=0, mesh=dream_mesh(devices, dream))
        initial = weights(policy.state)
        policy.train(model, 1, jax.random.key(4), progress=False)
        after_1 = weights(policy.state)
        policy.train(model, 9, jax.random.key(5), progress=False)
        dreamed[devices] = {0: initial, 1: after_1, 10: weights(policy.state)}
        # Work per device of one update: an eighth (and the replicated updates of the
        # small networks) when the batch is split, all of it when it is not.
        flops[devices] = policy.compiled_call(model).cost_analysis()["flops"]
        result["dream_state_on"] = len(jax.tree.leaves(policy.state)[0].sharding.device_set)
    result["dream_flops_per_device_ratio"] = flops[8] / flops[1]
    for updates, rtol in ((1, 1e-5), (10, 1e-4)):
        one, eight = dreamed[1][updates], dreamed[8][updates]
        result[f"dream_agree_after_{updates}"] = all(np.allclose(b, a, rtol=rtol, atol=1e-6) for a, b in zip(one, eight))
        result[f"dream_largest_difference_after_{updates}"] = max(float(np.abs(a - b).max()) for a, b in zip(one, eight))
        result[f"dream_largest_change_{updates}"] = max(float(np.abs(a - b).max()) for a, b in zip(one, dreamed[1][0]))

    # The gymnasium vector environment of the same model: 16 environments split over 8
    # devices step as they do on one, from the same seed and with the same actions.
    import tempfile
    from tasks.splits import SplitFractions, split_record
    from tasks.traces import write_traces
    from worldmodel.dream_vector_env import DreamVectorEnv
    from worldmodel.saving import save_model
    folder = tempfile.mkdtemp()
    write_traces(folder + "/traces", episodes, task)
    save_model(folder + "/model", model, {**task.record(), "traces": folder + "/traces",
                                         "split": split_record(0, SplitFractions(1.0, 0.0, 0.0))})
    actions = np.random.default_rng(0).uniform(-2, 2, (6, 16, 1)).astype(np.float32)
    shown = {}
    for devices in (1, 8):
        envs = DreamVectorEnv(folder + "/model", num_envs=16, devices=devices)
        seen = [envs.reset(seed=3)[0]]
        for action in actions:
            observation, reward, *_ = envs.step(action)
            seen += [observation, reward[:, None]]
        shown[devices] = np.concatenate(seen, axis=1)
        result["envs_state_on"] = len(envs._state.steps.sharding.device_set)
    result["envs_largest_difference"] = float(np.abs(shown[1] - shown[8]).max())
    result["envs_agree"] = bool(np.allclose(shown[1], shown[8], rtol=1e-5, atol=1e-5))
    try:
        DreamVectorEnv(folder + "/model", num_envs=12, devices=8)
    except ValueError as error:
        result["envs_refused"] = str(error)
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    environment = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], capture_output=True, text=True, timeout=600,
                          env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_fit_on_eight_devices_splits_its_batches_and_matches_one_device(eight_devices):
    """After 1 update on one host of 8 devices, and after 10 on two simulated hosts of 4."""
    assert eight_devices["devices"] == 8 and eight_devices["batch_split_over"] == 8
    assert eight_devices["two_host_mesh"] == {"hosts": 2, "data": 4}
    assert "a batch of 12 cannot be split evenly over 8 devices" in eight_devices["refused"]
    assert eight_devices["agree_after_1"] and eight_devices["agree_after_10"], eight_devices
    assert eight_devices["largest_change_by_the_fit_1"] > 1e-4  # the agreement is not that of untouched weights


def test_dreams_on_eight_devices_split_their_batches_and_match_one_device(eight_devices):
    """The actor and critic after 1 and after 10 dream updates, from the same start states."""
    assert eight_devices["dream_state_on"] == 8  # networks and optimiser state replicated on all 8
    assert eight_devices["dream_flops_per_device_ratio"] < 0.25, eight_devices  # each device dreams its share
    assert eight_devices["dream_agree_after_1"] and eight_devices["dream_agree_after_10"], eight_devices
    assert eight_devices["dream_largest_change_1"] > 1e-4
    refused = eight_devices["dream_refused"]
    assert "--dream.batch-size" in refused and "a batch of 12 cannot be split evenly over 8 devices" in refused
    assert len(refused.splitlines()) == 1


def test_dream_environments_on_eight_devices_step_as_they_do_on_one(eight_devices):
    """16 `DreamVectorEnv` environments split 2 per device, reset and stepped 6 times."""
    assert eight_devices["envs_state_on"] == 8
    assert eight_devices["envs_agree"], eight_devices["envs_largest_difference"]
    assert eight_devices["envs_refused"] == "12 environments cannot be split evenly over 8 devices"


def test_each_shard_draws_its_share_of_the_batch_with_its_own_key_interleaved(pendulum_episodes):
    mesh, key = data_mesh(1), jax.random.key(5)
    draw = jax.jit(lambda data, key: sample_global_batch(data, key, 8, 3, mesh))
    batch = draw(sharded_sequence_data(pendulum_episodes, 2, mesh), key)
    shards = [sequence_data(pendulum_episodes.select(part)) for part in episode_shards(pendulum_episodes, 2)]
    assert [len(part) for part in episode_shards(pendulum_episodes, 2)] == [3, 3]
    shares = [sample_sequences(shard, jax.random.fold_in(key, s), 4, 3) for s, shard in enumerate(shards)]
    for field, drawn, first, second in zip(batch._fields, batch, *shares):
        expected = np.stack([np.asarray(first), np.asarray(second)], axis=1).reshape(drawn.shape)
        np.testing.assert_array_equal(np.asarray(drawn), expected, err_msg=field)  # row i * 2 + s: shard s
    # One shard is the whole split, drawn with the key itself: what a fit drew before shards.
    whole = draw(sharded_sequence_data(pendulum_episodes, 1, mesh), key)
    for drawn, expected in zip(whole, sample_sequences(sequence_data(pendulum_episodes), key, 8, 3)):
        np.testing.assert_array_equal(np.asarray(drawn), np.asarray(expected))


def test_episodes_are_dealt_to_shards_and_a_split_too_small_is_refused(pendulum_episodes):
    assert [part.tolist() for part in episode_shards(pendulum_episodes, 4)] == [[0, 4], [1, 5], [2], [3]]
    with pytest.raises(InputError, match="too few to give each of 7 episode shards one"):
        episode_shards(pendulum_episodes, 7)
    with pytest.raises(InputError, match="cannot be drawn evenly from 4 episode shards"):
        check_batch_divides(data_mesh(1), 6, "--fit.batch-size", shards=4)


def test_impossible_device_counts_and_batches_are_refused():
    with pytest.raises(InputError, match="asks for 9999 devices"):
        data_mesh(9999)
    with pytest.raises(InputError, match="1 devices cannot be cut into 2 simulated hosts"):
        data_mesh(1, hosts=2)
    mesh = data_mesh(1)
    check_batch_divides(mesh, 7, "--fit.batch-size")  # one device takes any batch
    assert mesh.size == 1


def test_fit_refuses_a_batch_its_devices_cannot_share(tmp_path):
    task = get_task("pendulum")
    traces = tmp_path / "traces"
    write_traces(traces, record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 3), progress=False), task)
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    command = [sys.executable, "-m", "dreamer.cli", "fit", "--traces", str(traces), "--out", str(tmp_path / "run"),
               "--devices", "3", "--fit.batch-size", "256"]  # 7 members x 256 rows: not a multiple of 3
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 2 and "cannot be split evenly over 3 devices" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing left behind


@pytest.mark.parametrize("command", [
    ["dream", "--world-model", "{tmp}/model"],
    ["run", "--task", "pendulum"],
    ["learn", "--traces", "{tmp}/traces"],
    ["compare", "--task", "pendulum"],
])
def test_commands_that_dream_refuse_more_devices_than_exist_in_one_line(command, tmp_path, capfd):
    out = tmp_path / "out"
    where = ["--run", out] if command[0] == "learn" else ["--out", out]
    code = main([str(word).format(tmp=tmp_path) for word in [*command, *where, "--devices", "9999"]])
    _, err = capfd.readouterr()
    assert code == 2 and "--devices" in err and "asks for 9999 devices" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before anything is written
