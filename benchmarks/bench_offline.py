"""Offline dreaming from a fixed trace file of a middling, noisy behaviour policy.

    python benchmarks/bench_offline.py [--out DIR] [--seed 0]

1. A policy of the online loop stopped early (`dreamer run --real-steps N`), kept only if
   its mean real return lies between -900 and -500 (N grows until one does).
2. 100 episodes recorded with it at `--noise 0.3` (`dreamer collect --policy`).
3. A world model fitted on them (`dreamer fit`).
4. Policies trained purely in dreams (`dreamer dream`) with the default uncertainty
   penalty and halting, and with both off; each evaluated on 10 fresh reset seeds.
Prints one JSON object with the behaviour's mean return and both dream-trained returns.
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

MIDDLING = (-900.0, -500.0)


def middling_policy(out: Path, seed: int) -> tuple[Path, dict]:
    """The first early-stopped online policy whose real return is middling."""
    for real_steps, dream_updates in ((400, 1000), (600, 300), (600, 500), (800, 300), (600, 1000)):
        path = out / f"behaviour-{real_steps}-{dream_updates}"
        run("run", "--task", "pendulum", "--real-steps", str(real_steps), "--dream-updates", str(dream_updates),
            "--seed", str(seed), "--out", str(path))
        evaluation = run("evaluate", "--policy", str(path), "--episodes", "10", "--seed", str(seed))
        if MIDDLING[0] <= evaluation["mean_return"] <= MIDDLING[1]:
            return path, evaluation
    raise SystemExit("no early-stopped policy landed between -900 and -500")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for everything written (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="dreamer-offline-"))
    seed = str(args.seed)

    behaviour, behaviour_evaluation = middling_policy(out, args.seed)
    traces = out / "traces-middling"
    recorded = run("collect", "--task", "pendulum", "--policy", str(behaviour), "--noise", "0.3",
                   "--episodes", "100", "--seed", seed, "--out", str(traces))
    model = out / "wm-middling"
    run("fit", "--traces", str(traces), "--out", str(model), "--seed", seed)
    arms = {}
    for name, flags in (("with_penalty", []), ("without_penalty", ["--dream.uncertainty-penalty", "0", "--halt-multiple", "0"])):
        policy = out / f"dream-{name}"
        trained = run("dream", "--world-model", str(model), "--out", str(policy), "--seed", seed, *flags)
        evaluation = run("evaluate", "--policy", str(policy), "--episodes", "10", "--seed", seed)
        arms[name] = {
            "mean_return": evaluation["mean_return"],
            "std_return": evaluation["std_return"],
            "improvement_over_behaviour": evaluation["mean_return"] - recorded["mean_return"],
            "dream_return": trained.get("final_dream_return"),
            "halt_threshold": trained["halt_threshold"],
            "uncertainty_penalty": trained["uncertainty_penalty"],
            "wall_seconds": trained["wall_seconds"],
        }
    print(json.dumps({
        "machine": machine_info(),
        "behaviour_policy": str(behaviour),
        "behaviour_deterministic_mean_return": behaviour_evaluation["mean_return"],
        "behaviour_mean_return": recorded["mean_return"],
        "episodes": recorded["episodes"],
        "dream": arms,
    }, indent=2))


if __name__ == "__main__":
    main()
