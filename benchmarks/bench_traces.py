"""Speed of recording real episodes and of drawing sequence batches on the device.

    python benchmarks/bench_traces.py                  # prints one JSON object
    python benchmarks/bench_traces.py --only appends   # the round-by-round store writes alone

Recording is timed for the random policy on each registered task (steps/s, trace file
write included); the sampler is timed as sequences per second for jitted draws of
``[B, T]`` windows from 100 Pendulum episodes: many draws fused in one `lax.scan` (as a
fused training loop draws them), and one draw per jitted call. Appends are timed as a
run's trace store grows round by round (20 rounds of 20 Pendulum episodes): the store
write alone, per round, for an Arrow store (appended in place) and an HDF5 one (copied
and swapped), to show whether round N's write costs what round N holds or what the run holds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from tasks.recording import RandomPolicy, record_episodes, reset_seeds  # noqa: E402
from tasks.registry import get_task  # noqa: E402
from tasks.sampler import sample_sequences, sequence_data  # noqa: E402
from tasks.traces import append_traces, write_traces  # noqa: E402


def time_collect(task_name: str, steps: int, num_envs: int) -> dict:
    task = get_task(task_name)
    folder = Path(tempfile.mkdtemp())
    try:
        started = time.perf_counter()
        # One seed per step is more episodes than can fit; the step budget ends it.
        recorded = record_episodes(
            task, RandomPolicy(task.action_space), reset_seeds(0, steps), num_envs=num_envs,
            max_steps=steps, progress=False,
        )
        recorded_at = time.perf_counter()
        write_traces(folder / "traces", recorded, task)
        finished = time.perf_counter()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "task": task_name,
        "steps": recorded.num_steps,
        "steps_per_second": recorded.num_steps / (finished - started),
        "record_steps_per_second": recorded.num_steps / (recorded_at - started),
        "write_seconds": finished - recorded_at,
    }


def time_appends(data_format: str, rounds: int = 20, episodes_per_round: int = 20) -> dict:
    task = get_task("pendulum")
    batches = [record_episodes(task, RandomPolicy(task.action_space), reset_seeds(r, episodes_per_round),
                               progress=False) for r in range(rounds)]
    folder = Path(tempfile.mkdtemp())
    seconds = []
    try:
        for number, batch in enumerate(batches):
            started = time.perf_counter()
            if number == 0:
                write_traces(folder / "traces", batch, task, data_format=data_format)
            else:
                append_traces(folder / "traces", batch)
            seconds.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"format": data_format, "rounds": rounds, "episodes_per_round": episodes_per_round,
            "steps_per_round": batches[0].num_steps, "seconds_per_round": seconds,
            "last_round_over_second_round": seconds[-1] / seconds[1]}


def time_sampler(batch_size: int, length: int, draws_per_call: int = 100, calls: int = 20) -> dict:
    task = get_task("pendulum")
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 100), progress=False)
    data = sequence_data(episodes)

    @jax.jit
    def draw_many(data, key):
        def body(total, key):
            batch = sample_sequences(data, key, batch_size, length)
            # Reduce the batch so the draws cannot be optimised away.
            return total + batch.obs.sum() + batch.reward.sum(), None

        total, _ = jax.lax.scan(body, 0.0, jax.random.split(key, draws_per_call))
        return total

    jax.block_until_ready(draw_many(data, jax.random.key(0)))
    started = time.perf_counter()
    for call in range(calls):
        result = draw_many(data, jax.random.key(call + 1))
    jax.block_until_ready(result)
    seconds = time.perf_counter() - started
    sequences = batch_size * draws_per_call * calls

    # One draw per jitted call, as a training step that samples its own batch pays it.
    draw_one = jax.jit(sample_sequences, static_argnums=(2, 3))
    jax.block_until_ready(draw_one(data, jax.random.key(0), batch_size, length))
    started = time.perf_counter()
    for call in range(calls * 10):
        batch = draw_one(data, jax.random.key(call), batch_size, length)
    jax.block_until_ready(batch)
    single_seconds = time.perf_counter() - started
    return {
        "batch_size": batch_size,
        "length": length,
        "sequences_per_second": sequences / seconds,
        "transitions_per_second": sequences * length / seconds,
        "sequences_per_second_one_draw_per_call": batch_size * calls * 10 / single_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000, help="real steps recorded per task")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--only", choices=["collect", "sampler", "appends"], help="run one part only")
    args = parser.parse_args()
    parts = {
        "collect": lambda: [time_collect(name, args.steps, args.num_envs)
                            for name in ("cartpole", "pendulum", "halfcheetah", "hopper")],
        "sampler": lambda: [time_sampler(b, t) for b, t in ((256, 50), (1024, 64), (16, 64))],
        "appends": lambda: [time_appends("arrow"), time_appends("hdf5")],
    }
    results = {"machine": machine_info()}
    for name, measure in parts.items():
        if args.only in (None, name):
            results[name] = measure()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
