"""The headline comparison: dream-trained against real-trained on one task.

    python benchmarks/bench_compare.py --task pendulum     # 3 seeds per arm, 1,000 vs 20,000 real steps
    python benchmarks/bench_compare.py --task cartpole     # 3 seeds per arm, 1,500 vs 100,000 real steps

Runs ``dreamer compare`` (which writes results.json, report.md and the plots into
--out) and prints one JSON object: the headline (median real steps to the threshold of
each arm and their ratio), each run's figures, and the machine.
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
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", help="report folder (default: reports/TASK)")
    args = parser.parse_args()
    out = args.out or f"reports/{args.task}"
    summary = dreamer_json("compare", "--task", args.task, "--seeds", args.seeds, "--out", out)
    print(json.dumps({"machine": machine_info(), "task": args.task, **summary}, indent=2))


if __name__ == "__main__":
    main()
