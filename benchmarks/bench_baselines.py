"""Real-trained baselines side by side, measured through the evaluation protocol.

    python benchmarks/bench_baselines.py --task pendulum --algos sac sb3:SAC   # seeds 100-109
    python benchmarks/bench_baselines.py --task cartpole --algos ppo sb3:PPO --seeds 3

Trains each algorithm on the task for the comparison's real-arm budget (Pendulum 20,000,
CartPole 100,000 real steps), one seed after another, into ``--out``/runs/real-ALGO-seedS:
the run directories `dreamer compare` writes, so pointing ``--out`` at a comparison's
report folder reuses its finished real arm. ``sb3:*`` and ``sbx:*`` need the
``[baselines]`` extra. Prints one JSON object: each algorithm's summary (IQM of real
steps to the threshold with its 95% interval and per-seed values, final returns, wall
times) and, for the first two algorithms, the ratio of their IQMs and whether they lie
within 30% of each other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from dreamer.comparison import CompareConfig, algo_slug, real_run  # noqa: E402
from dreamer.report import arm_summary  # noqa: E402
from policies.baselines import chosen_algorithm  # noqa: E402
from tasks.registry import get_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pendulum")
    parser.add_argument("--algos", nargs="+", default=["sac", "sb3:SAC"])
    parser.add_argument("--seed", type=int, default=100, help="first seed (default: 100, untuned)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--real-steps", type=int, help="real steps per run (default: the comparison's real-arm budget)")
    parser.add_argument("--out", help="report folder (default: reports/TASK, where bench_compare.py writes)")
    args = parser.parse_args()
    task = get_task(args.task)
    config = CompareConfig(task=args.task, out=args.out, seed=args.seed, seeds=args.seeds, real_steps=args.real_steps)
    seeds = range(args.seed, args.seed + args.seeds)
    summaries = {}
    for algo in args.algos:
        algo = chosen_algorithm(task, algo)
        runs = [real_run(config, algo, seed, config.out_dir / "runs" / f"real-{algo_slug(algo)}-seed{seed}")
                for seed in seeds]
        arm = {"name": algo, "algorithm": algo, "budget_real_steps": config.real_budget, "runs": runs}
        summaries[algo] = arm_summary(arm, task.reward_threshold, config.eval_every)
    result = {"machine": machine_info(), "task": task.name, "reward_threshold": task.reward_threshold,
              "seeds": list(seeds), "real_steps": config.real_budget, "baselines": summaries}
    if len(summaries) >= 2:
        first, second = (summaries[a]["steps_to_threshold"]["iqm"] for a in list(summaries)[:2])
        ratio = second / first if first and second else None
        result["iqm_ratio"] = {"of": list(summaries)[:2], "ratio": ratio,
                               "within_30_percent": None if ratio is None else bool(1 / 1.3 <= ratio <= 1.3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
