"""World-model fidelity on held-out episodes, end to end through the command line.

    python benchmarks/bench_fidelity.py [--out DIR]     # prints one JSON object

Pendulum-v1: 50 random episodes. CartPole-v1: 200 random episodes (random CartPole
episodes last ~20 steps, so 50 leave only a handful of held-out terminations). Each is
recorded, fitted with the default ensemble and checked on its held-out split; the JSON
holds the figures the README quotes: the observation error at horizon 15 against the
two trivial predictors, and CartPole's termination balanced accuracy at horizons 1-10.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from command_line import dreamer_json as run  # noqa: E402


def fidelity(task: str, episodes: int, out: Path, seed: int) -> dict:
    traces, model = out / f"traces-{task}", out / f"wm-{task}"
    run("collect", "--task", task, "--episodes", episodes, "--seed", seed, "--out", traces)
    fitted = run("fit", "--traces", traces, "--out", model, "--seed", seed)
    report = run("check", "--world-model", model, "--traces", traces, "--seed", seed)
    predictors = report["predictors"]
    at_15 = {name: values["obs_rmse"][14] for name, values in predictors.items()}
    result = {
        "task": task,
        "episodes": episodes,
        "heldout_episodes": report["heldout_episodes"],
        "rollouts": report["rollouts"],
        "fit_seconds": fitted["wall_seconds"],
        "fit_updates": fitted["updates"],
        "obs_rmse_at_15": at_15,
        "nothing_changes_over_model_at_15": at_15["nothing_changes"] / at_15["model"],
        "linear_over_model_at_15": at_15["linear"] / at_15["model"],
        "fidelity_json": str(model / "fidelity.json"),
    }
    if "termination_accuracy" in predictors["model"]:
        accuracy = predictors["model"]["termination_accuracy"][:10]
        result["termination_accuracy_1_to_10"] = accuracy
        result["min_termination_accuracy_1_to_10"] = min(a for a in accuracy if a is not None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for the traces and models (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="dreamer-fidelity-"))
    results = {
        "machine": machine_info(),
        "pendulum": fidelity("pendulum", 50, out, args.seed),
        "cartpole": fidelity("cartpole", 200, out, args.seed),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
