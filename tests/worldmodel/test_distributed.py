"""Several hosts: two processes on this machine join one JAX job (`jax.distributed` on
localhost, CPU collectives through gloo), fit one ensemble together, and end where one
process ends when it draws the same global batches.

Each process lends two CPU devices and holds only its own shard of the training
episodes (episode i on process i % 2), drawing its half of every batch from it. The
reference is this test's own process, on one device, holding both shards
(`fit_world_model(..., shards=2)`): by construction it draws the same global batches
(`worldmodel.sharding.sample_global_batch`; its draws are checked on their own in
test_sharding.py), so what differs is only where the sums run. The processes fit once
for one update through the library, then run `dreamer fit` together for ten: process 0
writes its --out, process 1 writes nothing to the --out it is given.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from flax import nnx

from dreamer.cli import main
from tasks.errors import InputError
from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task
from tasks.splits import SplitFractions, fitting_episodes
from tasks.traces import read_traces, write_traces
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fit import FitConfig, fit_world_model
from worldmodel.hosts import HostsConfig, _launcher_started_several, start
from worldmodel.saving import build_model_for_spaces, load
from worldmodel.sharding import data_mesh, episode_shards

TINY = EnsembleConfig(members=2, elites=2, hidden_size=32, hidden_layers=2, termination_hidden=16)
TINY_FLAGS = ["--ensemble.members", "2", "--ensemble.elites", "2", "--ensemble.hidden-size", "32",
              "--ensemble.hidden-layers", "2", "--ensemble.termination-hidden", "16", "--fit.batch-size", "16",
              "--fit.updates-per-call", "10", "--fit.max-updates", "10"]
ONE_UPDATE = FitConfig(batch_size=16, updates_per_call=1, max_updates=1)
TEN_UPDATES = FitConfig(batch_size=16, updates_per_call=10, max_updates=10)  # what TINY_FLAGS ask of `dreamer fit`

PROCESS = textwrap.dedent("""
    import json, os, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    from worldmodel.hosts import HostsConfig, start
    port, index, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    start(HostsConfig(coordinator=f"localhost:{port}", num_processes=2, process_id=index, timeout=60))

    import numpy as np
    from flax import nnx
    from dreamer.cli import main
    from tasks.splits import SplitFractions, fitting_episodes
    from tasks.traces import read_traces
    from worldmodel.ensemble import EnsembleConfig
    from worldmodel.fit import FitConfig, fit_world_model
    from worldmodel.saving import build_model_for_spaces
    from worldmodel.sharding import data_mesh, sharded_sequence_data

    traces = read_traces(f"{folder}/traces")
    train, validation = fitting_episodes(traces.episodes, 0, SplitFractions.rest_for_training(0.1, 0.1))
    mesh = data_mesh()
    held = sharded_sequence_data(train, 2, mesh).num_steps.addressable_data(0)
    report = {"devices": jax.device_count(), "mesh": dict(mesh.shape), "steps_held": np.asarray(held).tolist()}
    model = build_model_for_spaces("ensemble", traces.observation_space, traces.action_space,
                                   EnsembleConfig(**json.loads(sys.argv[4])), seed=0)
    config = FitConfig(batch_size=16, updates_per_call=1, max_updates=1)
    fit_world_model(model, train, validation, config, seed=3, progress=False, mesh=mesh)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    report["fitted_model_is_local"] = all(leaf.is_fully_addressable for leaf in leaves)
    np.savez(f"{folder}/process{index}.npz", *[np.asarray(leaf) for leaf in leaves])
    hosts = ["--hosts.coordinator", f"localhost:{port}", "--hosts.num-processes", "2", "--hosts.process-id", str(index)]
    open(f"{folder}/taken", "a").close()  # an --out that process 0 refuses: every process must end
    report["refused"] = main(["fit", "--traces", f"{folder}/traces", "--out", f"{folder}/taken", *hosts])
    report["command"] = main(["fit", "--traces", f"{folder}/traces", "--out", f"{folder}/run{index}", "--json",
                              *json.loads(sys.argv[5]), *hosts])
    print(json.dumps(report), flush=True)
    if report["command"] != 0:  # end now: a normal exit would wait for the other process to shut down
        os._exit(1)
""")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, cli_env) -> dict:
    """Both processes' reports and parameters, and this process's reference fits."""
    folder = tmp_path_factory.mktemp("distributed")
    task = get_task("pendulum")
    write_traces(folder / "traces", record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 6),
                                                    progress=False), task)
    tiny = {"members": TINY.members, "elites": TINY.elites, "hidden_size": TINY.hidden_size,
            "hidden_layers": TINY.hidden_layers, "termination_hidden": TINY.termination_hidden}
    environment = {**cli_env, "JAX_PLATFORMS": "cpu"}
    environment.pop("XLA_FLAGS", None)
    port = _free_port()
    logs = [(folder / f"process{index}.out", folder / f"process{index}.err") for index in range(2)]
    processes = []
    try:
        for index, (out, err) in enumerate(logs):
            with open(out, "w") as stdout, open(err, "w") as stderr:
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", PROCESS, str(port), str(index), str(folder), json.dumps(tiny),
                     json.dumps(TINY_FLAGS)], stdout=stdout, stderr=stderr, env=environment))
        # The reference fits run here while the two processes work.
        fractions = SplitFractions.rest_for_training(0.1, 0.1)  # `dreamer fit`'s default split
        train, validation = fitting_episodes(read_traces(folder / "traces").episodes, 0, fractions)
        reference = {}
        for name, config, seed in (("one_update", ONE_UPDATE, 3), ("ten_updates", TEN_UPDATES, 0)):
            model = build_model_for_spaces("ensemble", task.observation_space, task.action_space, TINY, seed=0)
            fit_world_model(model, train, validation, config, seed=seed, progress=False, mesh=data_mesh(1), shards=2)
            reference[name] = _parameters(model)
        reference["initial"] = _parameters(build_model_for_spaces("ensemble", task.observation_space,
                                                                  task.action_space, TINY, seed=0))
        _wait_for_all(processes, logs, timeout=120)
    finally:
        for process in processes:  # a process left waiting for a peer that failed
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = [out.read_text().strip().splitlines() for out, _ in logs]
    one_update = [list(np.load(folder / f"process{index}.npz").values()) for index in range(2)]
    return {"folder": folder, "train": train, "reports": [json.loads(out[-1]) for out in lines],
            "summaries": [json.loads(out[-2]) for out in lines], "errors": [err.read_text() for _, err in logs],
            "stdout_lines": [len(out) for out in lines], "one_update": one_update, "reference": reference}


@pytest.mark.slow  # two processes compiling on two cores: about 30 s
def test_each_process_holds_only_its_own_shard_of_the_training_episodes(two_processes):
    train = two_processes["train"]
    for index, report in enumerate(two_processes["reports"]):
        assert report["devices"] == 4 and report["mesh"] == {"hosts": 2, "data": 2}
        assert report["steps_held"] == [int(train.lengths[episode_shards(train, 2)[index]].sum())]


@pytest.mark.slow  # two processes compiling on two cores: about 30 s
def test_two_processes_fitting_together_agree_with_one_drawing_the_same_batches(two_processes):
    reference, (first, second) = two_processes["reference"], two_processes["one_update"]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # the replicas never part
    for a, b in zip(first, reference["one_update"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # float32 sums in another order
    assert max(np.abs(a - b).max() for a, b in zip(first, reference["initial"])) > 1e-4  # the update moved them
    assert all(report["fitted_model_is_local"] for report in two_processes["reports"])
    # Ten updates through `dreamer fit`: process 0's saved model.
    saved = _parameters(load(two_processes["folder"] / "run0"))
    for a, b in zip(saved, reference["ten_updates"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # two processes compiling on two cores: about 30 s
def test_only_process_zero_writes_the_run_of_a_fit_command_run_together(two_processes):
    folder = two_processes["folder"]
    assert [report["command"] for report in two_processes["reports"]] == [0, 0]
    assert [report["refused"] for report in two_processes["reports"]] == [2, 1]  # bad input; failed with it
    assert "not a folder" in two_processes["errors"][0] and "process 0 could not open" in two_processes["errors"][1]
    run = folder / "run0"
    assert (run / "summary.json").is_file() and (run / "model.json").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert any((run / "checkpoints" / "world_model").iterdir())
    assert not (folder / "run1").exists()
    assert two_processes["stdout_lines"] == [2, 2]  # --json's object and the report: gloo's chatter went to stderr
    first, second = two_processes["summaries"]
    assert first["processes"] == second["processes"] == 2 and first["updates"] == second["updates"] == 10
    assert first["validation_loss"] == second["validation_loss"]


def test_one_process_starts_nothing():
    start(HostsConfig())  # nothing in this environment names a cluster
    start(HostsConfig(num_processes=1))
    start(HostsConfig(start="never", coordinator="localhost:1", num_processes=2, process_id=0))
    assert not jax.distributed.is_initialized()


@pytest.mark.parametrize(("settings", "environment", "message"), [
    (HostsConfig(num_processes=2), {}, "--hosts.coordinator: is needed too"),
    (HostsConfig(coordinator="node0:1234", num_processes=2), {}, "--hosts.process-id: is needed too"),
    (HostsConfig(coordinator="node0:1234", num_processes=2, process_id=2), {}, "numbers them 0 to 1"),
    (HostsConfig(coordinator="node0", num_processes=2, process_id=1), {}, "expected HOST:PORT"),
    (HostsConfig(), {"DREAMER_NUM_PROCESSES": "two"}, "$DREAMER_NUM_PROCESSES: is 'two'"),
    (HostsConfig(), {"DREAMER_COORDINATOR": "node0:1234", "DREAMER_NUM_PROCESSES": "4"}, "--hosts.process-id"),
])
def test_incomplete_or_contradictory_settings_are_refused_before_anything_starts(settings, environment, message):
    with pytest.raises(InputError) as refused:
        start(settings, environment)
    assert message in str(refused.value)
    assert not jax.distributed.is_initialized()


def test_launchers_that_started_several_processes_are_recognised():
    assert _launcher_started_several({"SLURM_STEP_NUM_TASKS": "4"})
    assert _launcher_started_several({"OMPI_COMM_WORLD_SIZE": "2"})
    assert _launcher_started_several({"TPU_WORKER_HOSTNAMES": "t1k-w-0,t1k-w-1"})
    assert not _launcher_started_several({"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "8"})  # a batch script
    assert not _launcher_started_several({"TPU_WORKER_HOSTNAMES": "localhost"})


def test_the_fit_command_refuses_half_given_host_settings_in_one_line(tmp_path, capsys):
    code = main(["fit", "--traces", str(tmp_path / "none"), "--out", str(tmp_path / "run"),
                 "--hosts.num-processes", "2", "--hosts.process-id", "1"])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("dreamer: error: --hosts.coordinator: is needed too: a job of several "
                                               "processes needs --hosts.coordinator, --hosts.num-processes, "
                                               "--hosts.process-id (or the DREAMER_* variables)")
    assert not (tmp_path / "run").exists()


def _parameters(model) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _wait_for_all(processes, logs, timeout: float) -> None:
    """Wait for every process to succeed; fail as soon as one fails (its peer would wait
    for it until JAX's own timeouts) or the time is up."""
    deadline = time.monotonic() + timeout
    while any(process.poll() is None for process in processes):
        failed = [index for index, process in enumerate(processes) if process.returncode not in (None, 0)]
        if failed or time.monotonic() > deadline:
            index = failed[0] if failed else 0
            why = f"process {index} failed" if failed else f"still running after {timeout} s"
            pytest.fail(f"{why}:\n{logs[index][1].read_text()[-3000:]}")
        time.sleep(0.2)
    for index, process in enumerate(processes):
        assert process.returncode == 0, f"process {index} failed:\n{logs[index][1].read_text()[-3000:]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]
