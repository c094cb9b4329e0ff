"""Peak resident memory of fitting from a trace file read in blocks, against the file's size.

    python benchmarks/bench_streaming.py                      # 1M and 10M transitions
    python benchmarks/bench_streaming.py --sizes 100000 1000000 --updates 500

Writes (once, then reuses) synthetic trace files of HalfCheetah's spaces (17 float64
observations, 6 float32 actions, 1,000-step episodes) in the Arrow format under
``--data-dir``, then runs ``dreamer fit --block-steps B`` on each in its own process and
reads that process's peak resident memory from the kernel (``wait4``). The same number of
updates is run on every file, so each fit reads the same number of training blocks and
validates over its whole validation split (10% of the file) in blocks after every call.
``--in-memory`` also fits the smallest file read whole, for contrast. Prints one JSON
object.

The data is generated, not recorded (recording ten million MuJoCo steps is not what
this measures): a smooth random dynamical system, so the model has something to learn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from tasks.episodes import Episodes  # noqa: E402
from tasks.registry import get_task  # noqa: E402
from tasks.traces import append_traces, write_traces  # noqa: E402

EPISODE_STEPS = 1000
EPISODES_PER_WRITE = 100


def synthetic_episodes(count: int, seed: int, rng_dynamics: np.random.Generator) -> Episodes:
    """``count`` episodes of a fixed smooth random system in HalfCheetah's spaces."""
    rng = np.random.default_rng(seed)
    state_map, action_map = rng_dynamics.normal(0, 0.3, (17, 17)), rng_dynamics.normal(0, 0.5, (6, 17))
    observations = np.empty((count, EPISODE_STEPS + 1, 17))
    actions = rng.uniform(-1, 1, (count, EPISODE_STEPS, 6)).astype(np.float32)
    observations[:, 0] = rng.normal(0, 0.1, (count, 17))
    for t in range(EPISODE_STEPS):
        change = np.tanh(observations[:, t] @ state_map + actions[:, t] @ action_map)
        observations[:, t + 1] = 0.95 * observations[:, t] + 0.1 * change + rng.normal(0, 0.01, (count, 17))
    rewards = (observations[:, 1:, 8] - 0.1 * (actions**2).sum(-1)).astype(np.float32)
    lengths = np.full(count, EPISODE_STEPS)
    truncations = np.zeros((count, EPISODE_STEPS), bool)
    truncations[:, -1] = True
    return Episodes(
        observations=observations.reshape(-1, 17), actions=actions.reshape(-1, 6), rewards=rewards.reshape(-1),
        terminations=np.zeros(count * EPISODE_STEPS, bool), truncations=truncations.reshape(-1),
        step_offsets=np.concatenate([[0], np.cumsum(lengths)]), seeds=np.full(count, -1),
        policy_versions=np.full(count, -1),
    )


def trace_file(data_dir: Path, transitions: int) -> Path:
    """The synthetic file of ``transitions`` steps, written unless it is complete already."""
    path = data_dir / f"halfcheetah-synthetic-{transitions}"
    done = path / "complete"
    if done.is_file():
        return path
    shutil.rmtree(path, ignore_errors=True)
    episodes = transitions // EPISODE_STEPS
    task, started = get_task("halfcheetah"), time.perf_counter()
    for first in range(0, episodes, EPISODES_PER_WRITE):
        part = synthetic_episodes(min(EPISODES_PER_WRITE, episodes - first), seed=first, rng_dynamics=np.random.default_rng(0))
        if first == 0:
            write_traces(path, part, task, data_format="arrow")
        else:
            append_traces(path, part)
        print(f"{path.name}: {first + len(part):,} of {episodes:,} episodes written "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    done.write_text("")
    return path


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measured_fit(traces: Path, out: Path, updates: int, block_steps: int | None) -> dict:
    """Run ``dreamer fit`` in a process of its own; its summary, wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-c", "import sys; from dreamer.cli import main; sys.exit(main(sys.argv[1:]))",
            "fit", "--traces", str(traces), "--out", str(out), "--fit.max-updates", str(updates),
            "--fit.patience", "1000", "--json"]
    if block_steps:
        argv += ["--block-steps", str(block_steps)]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, text=True, cwd=Path(__file__).resolve().parents[1])
        # wait4 gives this child's own peak resident memory (ru_maxrss, in KiB on Linux).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0), stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    if process.returncode:
        raise SystemExit(f"dreamer fit on {traces} failed:\n{errors[-2000:]}")
    summary = json.loads(output)
    return {"updates": summary["updates"], "wall_seconds": time.perf_counter() - started,
            "transitions_per_second": summary["transitions_per_second"],
            "train_episodes": summary["train_episodes"], "validation_episodes": summary["validation_episodes"],
            "peak_rss_bytes": usage.ru_maxrss * 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="transitions per file")
    parser.add_argument("--block-steps", type=int, default=1 << 18)
    parser.add_argument("--updates", type=int, default=1000, help="fitting updates on every file")
    parser.add_argument("--data-dir", type=Path, default=Path("runs/bench-streaming"))
    parser.add_argument("--in-memory", action="store_true", help="also fit the smallest file read whole")
    args = parser.parse_args()
    files = {size: trace_file(args.data_dir, size) for size in sorted(args.sizes)}
    results = []
    for size, path in files.items():
        fit = measured_fit(path, args.data_dir / f"fit-{size}", args.updates, args.block_steps)
        results.append({"transitions": size, "bytes_on_disk": disk_bytes(path), "block_steps": args.block_steps, **fit})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report = {"machine": machine_info(), "fits": results}
    smallest, largest = results[0], results[-1]
    report["peak_rss_ratio_largest_to_smallest"] = largest["peak_rss_bytes"] / smallest["peak_rss_bytes"]
    if args.in_memory:
        size = min(files)
        report["in_memory"] = {"transitions": size, **measured_fit(files[size], args.data_dir / "fit-in-memory",
                                                                   args.updates, None)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
