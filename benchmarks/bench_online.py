"""The online loop's sample efficiency and wall time over several seeds.

    python benchmarks/bench_online.py --task pendulum --real-steps 1000 --seeds 0 1 2
    python benchmarks/bench_online.py --task cartpole --real-steps 1500 --seeds 0 1 2
    python benchmarks/bench_online.py --task hopper --real-steps 50000 --seeds 0 1 2

Runs ``dreamer run`` once per seed (one after another, so wall times are comparable) and
prints one JSON object: per seed the final mean return over 10 fresh reset seeds, the
return at the budget (the mean of the last 3 evaluations), the real steps from which the
task's threshold was held, and the wall time, compilation included; then the median and
range over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from command_line import dreamer_json  # noqa: E402


def run_seed(task: str, real_steps: int, seed: int, out: Path, extra: list[str]) -> dict:
    summary = dreamer_json("run", "--task", task, "--real-steps", real_steps, "--seed", seed,
                           "--out", out / f"{task}-seed{seed}", *extra)
    return {
        "seed": seed,
        "final_mean_return": summary["final_mean_return"],
        "return_at_budget": summary["return_at_budget"],
        "steps_to_threshold": summary["steps_to_threshold"],
        "real_steps": summary["real_steps"],
        "eval_steps": summary["eval_steps"],
        "wall_seconds": summary["wall_seconds"],
        "evaluations": summary["evaluations"],
    }


def spread(values: list[float | None]) -> dict:
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None, "missing": len(values)}
    return {"median": statistics.median(known), "min": min(known), "max": max(known), "missing": len(values) - len(known)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pendulum")
    parser.add_argument("--real-steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", help="folder for the run directories (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="further `dreamer run` flags, after --")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="dreamer-online-"))
    runs = [run_seed(args.task, args.real_steps, seed, out, args.extra) for seed in args.seeds]
    print(json.dumps({
        "machine": machine_info(),
        "task": args.task,
        "real_steps": args.real_steps,
        "runs": runs,
        "final_mean_return": spread([r["final_mean_return"] for r in runs]),
        "return_at_budget": spread([r["return_at_budget"] for r in runs]),
        "steps_to_threshold": spread([r["steps_to_threshold"] for r in runs]),
        "wall_seconds": spread([r["wall_seconds"] for r in runs]),
    }, indent=2))


if __name__ == "__main__":
    main()
