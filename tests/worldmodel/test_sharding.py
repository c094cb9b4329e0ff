"""Data parallel fitting: on 8 simulated CPU devices, a fit splits each batch over all of
them and ends where the same fit on one device ends.

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

import pytest

from tasks.errors import InputError
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.traces import write_traces
from worldmodel.sharding import check_batch_divides, data_mesh

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
    try:
        check_batch_divides(mesh, 12, "--fit.batch-size")
    except InputError as error:
        result["refused"] = str(error)
    for updates in (1, 10):
        fitted = {}
        for devices in (1, 8):
            model = build_model_for_spaces("ensemble", task.observation_space, task.action_space, tiny, seed=0)
            initial = [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]
            config = FitConfig(batch_size=16, updates_per_call=updates, max_updates=updates)
            fit_world_model(model, episodes, None, config, seed=3, progress=False, mesh=data_mesh(devices))
            fitted[devices] = [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]
        rtol = 1e-5 if updates == 1 else 1e-4  # float32 sums in another order: atol for weights near 0
        result[f"agree_after_{updates}"] = all(np.allclose(b, a, rtol=rtol, atol=1e-6) for a, b in zip(fitted[1], fitted[8]))
        result[f"largest_difference_after_{updates}"] = max(float(np.abs(a - b).max()) for a, b in zip(fitted[1], fitted[8]))
        result[f"largest_change_by_the_fit_{updates}"] = max(float(np.abs(a - b).max()) for a, b in zip(fitted[1], initial))
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def eight_device_fit() -> dict:
    environment = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], capture_output=True, text=True, timeout=600,
                          env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_fit_on_eight_devices_splits_its_batches_and_matches_one_device(eight_device_fit):
    assert eight_device_fit["devices"] == 8 and eight_device_fit["batch_split_over"] == 8
    assert "a batch of 12 cannot be split evenly over 8 devices" in eight_device_fit["refused"]
    assert eight_device_fit["agree_after_1"] and eight_device_fit["agree_after_10"], eight_device_fit
    assert eight_device_fit["largest_change_by_the_fit_1"] > 1e-4  # the agreement is not that of untouched weights


def test_impossible_device_counts_and_batches_are_refused():
    with pytest.raises(InputError, match="asks for 9999 devices"):
        data_mesh(9999)
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
