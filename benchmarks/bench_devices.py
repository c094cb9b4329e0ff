"""Throughput against device count: fitting the ensemble and training in its dreams.

    python benchmarks/bench_devices.py                   # 1, 2, 4 and 8 devices; one JSON object
    python benchmarks/bench_devices.py --counts 1 2      # fewer

Each count gets a mesh of that many devices (`worldmodel.sharding.data_mesh`): fitting
splits every batch of 256 transitions per member (7 members) over them, and the dream
trainer splits every update's 1,024 start states (horizon 15, `PolicyInDreams`, the
uncertainty penalty off). Fitting is timed in transitions per second, dreaming in
imagined transitions per second (updates x start states x horizon per second), each the
best of a few timed calls after one that compiles.

On a machine with one CPU device the devices are simulated
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set here before JAX starts):
they share the same cores, so the figures show what splitting costs, not a speed-up.
On an accelerator machine the counts are its real devices.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # Harmless where there are real accelerators: the flag only adds host (CPU) devices.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_worldmodel import matmul_gflops  # noqa: E402
from machine import machine_info  # noqa: E402

from dreamer.actor_critic import DreamConfig  # noqa: E402
from dreamer.dreaming import PolicyInDreams  # noqa: E402
from tasks.recording import RandomPolicy, record_episodes, reset_seeds  # noqa: E402
from tasks.registry import get_task  # noqa: E402
from worldmodel.ensemble import EnsembleConfig  # noqa: E402
from worldmodel.fit import FitConfig, fit_world_model  # noqa: E402
from worldmodel.saving import build_model_for_spaces  # noqa: E402
from worldmodel.sharding import data_mesh  # noqa: E402

FIT = FitConfig(batch_size=256, updates_per_call=100, max_updates=100, patience=1000)
DREAM = DreamConfig(batch_size=1024, horizon=15, updates_per_call=20)
TIMED_CALLS = 3


def time_fit(task, episodes, mesh) -> dict:
    """Transitions per second of the fastest of a few 100-update fits (after one that compiles)."""
    model = build_model_for_spaces("ensemble", task.observation_space, task.action_space, EnsembleConfig())
    rates = [fit_world_model(model, episodes, None, FIT, seed=call, progress=False, mesh=mesh).transitions_per_second
             for call in range(TIMED_CALLS + 1)]
    return {"transitions_per_second": max(rates[1:])}


def time_dreams(task, episodes, world_model, mesh) -> dict:
    """Imagined transitions per second of the fastest of a few calls of 20 updates."""
    learner = PolicyInDreams(world_model, task, episodes, DREAM, seed=0, mesh=mesh)
    learner.train(world_model, DREAM.updates_per_call, jax.random.key(0), progress=False)  # compiles
    best = float("inf")
    for call in range(TIMED_CALLS):
        started = time.perf_counter()
        learner.train(world_model, DREAM.updates_per_call, jax.random.key(call + 1), progress=False)
        best = min(best, time.perf_counter() - started)
    imagined = DREAM.updates_per_call * DREAM.batch_size * DREAM.horizon
    return {"imagined_transitions_per_second": imagined / best, "updates_per_second": DREAM.updates_per_call / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8], help="device counts to time")
    args = parser.parse_args()
    task = get_task("pendulum")
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 20), progress=False)
    world_model = build_model_for_spaces("ensemble", task.observation_space, task.action_space, EnsembleConfig())
    fit_world_model(world_model, episodes, None, FIT, progress=False)
    results = []
    for count in args.counts:
        mesh = data_mesh(count)
        results.append({"devices": count, "fit": time_fit(task, episodes, mesh),
                        "dream": time_dreams(task, episodes, world_model, mesh)})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({
        "machine": machine_info(),
        "backend": jax.default_backend(),
        "device_kind": jax.local_devices()[0].device_kind,
        "simulated": jax.default_backend() == "cpu",
        "matmul_gflops_float32": matmul_gflops(),
        "fit": {"batch_per_member": FIT.batch_size, "members": EnsembleConfig().members},
        "dream": {"start_states": DREAM.batch_size, "horizon": DREAM.horizon},
        "by_devices": results,
    }, indent=2))


if __name__ == "__main__":
    main()
