"""The headline comparison: dream-trained against real-trained on one task.

    python benchmarks/bench_compare.py --task pendulum     # seeds 100-109, 2,000 vs 20,000 real steps
    python benchmarks/bench_compare.py --task cartpole     # seeds 100-109, 3,000 vs 100,000 real steps

Runs ``dreamer compare`` (which writes results.json, report.md and the plots into --out,
and reuses finished runs, so the table can be built in pieces) and prints one JSON
object: the headline (each arm's IQM of real steps to the threshold with its interval,
their ratio, and the probability that the dream arm needs fewer), each run's figures,
and the machine. Headline figures come from seeds 100-109, which no default was tuned
on (defaults are developed on seeds 0-2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from command_line import dreamer_json  # noqa: E402
from machine import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pendulum")
    parser.add_argument("--seed", type=int, default=100, help="first seed (default: 100, untuned)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", help="report folder (default: reports/TASK)")
    args = parser.parse_args()
    out = args.out or f"reports/{args.task}"
    summary = dreamer_json("compare", "--task", args.task, "--seed", args.seed, "--seeds", args.seeds, "--out", out)
    print(json.dumps({"machine": machine_info(), "task": args.task, **summary}, indent=2))


if __name__ == "__main__":
    main()
