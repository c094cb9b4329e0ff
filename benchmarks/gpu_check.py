"""The accelerator check: one prepared run of about 8 minutes on one GPU (or TPU).

    python benchmarks/gpu_check.py                 # prints one JSON object
    PYTHONPATH=. python benchmarks/gpu_check.py --out $OUT/gpu_check.json --demo

On a machine that ships its own JAX, run it from the checkout with ``PYTHONPATH=.``.
It measures, beside the same run's float32 matmul rate (best of 2048², 4096² and 8192²
products; the tensor-core bfloat16 rate too):

- fitting throughput of the default ensemble (7 members x 4 x 200, 256 transitions per
  member per update) on random Pendulum episodes, in transitions per second;
- a dream scanned inside one compiled call (`worldmodel.dream_functional`: reset, then
  ``--steps`` autoreset steps in a `lax.scan`, actions drawn on the device), at each of
  ``--envs`` environments, with and without the per-step disagreement, in transitions
  per second: no host round trip per step. The float32 ceiling of one member of the
  ensemble per transition is the matmul rate over its FLOPs (printed beside it);
- the gymnasium `DreamVectorEnv` at the same sizes, actions sent from numpy every step;
- with ``--demo``, the wall time of ``dreamer demo``.

On a CPU it runs too (use small ``--envs``), which is how it is checked before a GPU
is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dream_env import time_vector  # noqa: E402
from bench_worldmodel import best_seconds, member_flops, median_seconds, time_fit  # noqa: E402
from machine import machine_info  # noqa: E402

from tasks.recording import RandomPolicy, record_episodes, reset_seeds  # noqa: E402
from tasks.registry import get_task  # noqa: E402
from tasks.splits import SplitFractions, split_record  # noqa: E402
from tasks.traces import write_traces  # noqa: E402
from worldmodel import dream_functional  # noqa: E402
from worldmodel.ensemble import EnsembleConfig, EnsembleModel  # noqa: E402
from worldmodel.saving import save_model  # noqa: E402


def matmul_rates(sizes: tuple[int, ...]) -> dict:
    """Best float32 and bfloat16 matmul rates over square products of ``sizes``, GFLOP/s."""
    rates = {}
    for dtype in ("float32", "bfloat16"):
        best = 0.0
        for size in sizes:
            a = jax.random.normal(jax.random.key(0), (size, size), dtype=dtype)
            b = jax.random.normal(jax.random.key(1), (size, size), dtype=dtype)
            best = max(best, 2 * size**3 / best_seconds(jax.jit(jnp.matmul), a, b, repeats=3, calls=5) / 1e9)
        rates[dtype] = best
    return rates


def scanned_dream(model, params, num_envs: int, steps: int, with_uncertainty: bool) -> dict:
    """``num_envs`` environments dreamed ``steps`` steps in one compiled call."""
    graphdef, state = nnx.split(model)
    low, high = params.action_low, params.action_high

    @jax.jit
    def dream(state, params, key):
        world_model = nnx.merge(graphdef, state)
        env_state, _ = dream_functional.reset(world_model, params, jax.random.split(key, num_envs))

        def one_step(carry, step_key):
            env_state, total = carry
            action_key, env_key = jax.random.split(step_key)
            action = jax.random.uniform(action_key, (num_envs, *low.shape), minval=low, maxval=high)
            env_state, shown = dream_functional.autoreset_step(world_model, params, env_state, action,
                                                               jax.random.split(env_key, num_envs), with_uncertainty)
            return (env_state, total + shown.reward.sum() + shown.uncertainty.sum()), None

        (_, total), _ = jax.lax.scan(one_step, (env_state, jnp.zeros(())), jax.random.split(key, steps))
        return total

    seconds = median_seconds(dream, state, params, jax.random.key(0), repeats=3, calls=1)
    return {"num_envs": num_envs, "steps": steps, "with_uncertainty": with_uncertainty, "seconds": seconds,
            "transitions_per_second": num_envs * steps / seconds}


def demo_seconds(out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from dreamer.cli import main; sys.exit(main(sys.argv[1:]))",
                    "demo", "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--steps", type=int, default=200, help="steps of each scanned dream")
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--demo", action="store_true", help="also time `dreamer demo`")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    report: dict = {"machine": machine_info(), "devices": [str(d) for d in jax.devices()]}
    report["matmul_gflops"] = matmul_rates(tuple(args.matmul_sizes))
    say = lambda what: print(f"[{time.perf_counter() - started:.0f} s] {what}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"matmul rates {report['matmul_gflops']}")

    task = get_task("pendulum")
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 30), progress=False)
    model = EnsembleModel(task.observation_space.shape, 1, False, EnsembleConfig(), nnx.Rngs(0))
    report["fit"] = time_fit(model, episodes)
    say(f"fit {report['fit']['transitions_per_second']:.0f} transitions/s")
    ceiling = report["matmul_gflops"]["float32"] * 1e9 / member_flops(model)
    report["one_member_float32_ceiling_transitions_per_second"] = ceiling

    params = dream_functional.dream_params(episodes.first_observations(), task.observation_space,
                                           task.action_space, task.horizon)
    report["scanned_dream"] = []
    for num_envs in args.envs:
        for with_uncertainty in (False, True):
            report["scanned_dream"].append(scanned_dream(model, params, num_envs, args.steps, with_uncertainty))
            say(f"scanned dream {report['scanned_dream'][-1]}")

    with tempfile.TemporaryDirectory(prefix="dreamer-gpu-check-") as folder:
        traces, run = Path(folder) / "traces", Path(folder) / "model"
        write_traces(traces, episodes, task)
        save_model(run, model, {**task.record(), "traces": str(traces), "split": split_record(0, SplitFractions())})
        report["vector_env"] = []
        for num_envs in args.envs:
            for with_uncertainty in (False, True):
                report["vector_env"].append(time_vector(str(run), num_envs, with_uncertainty, seed=0))
                say(f"vector env {report['vector_env'][-1]}")
        if args.demo:
            report["demo_wall_seconds"] = demo_seconds(Path(folder) / "demo")
            say(f"demo {report['demo_wall_seconds']:.0f} s")
    report["wall_seconds"] = time.perf_counter() - started
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
