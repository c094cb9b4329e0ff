"""Offline model-based RL the way it is judged: a fixed "medium" trace file, as D4RL makes them.

    python benchmarks/bench_offline_medium.py --task hopper --out runs/offline-hopper [--seed 0]

1. The behaviour: a SAC policy of this project stopped at roughly a third of what SAC
   reaches (`dreamer train-real --steps N`, N growing until the deterministic policy's
   mean return over 10 fresh seeds lies in the task's band).
2. About 100,000 steps recorded with it at `--noise 0.1` (`dreamer collect --policy`,
   appended in chunks until the file holds that many).
3. A world model fitted on the file (`dreamer fit`), and policies trained purely in its
   dreams (`dreamer dream`): with the default uncertainty penalty and halting, and with
   both off.
4. Behaviour cloning on the same training episodes, the baseline that needs no model.

Every policy is evaluated on the same 10 fresh reset seeds. Prints one JSON object: the
behaviour's return (as recorded, noise included, and deterministic), behaviour cloning's,
and each dream-trained policy's with its improvement over the behaviour. Finished steps
are reused when --out already holds them, so an interrupted benchmark goes on.
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

# The band a medium behaviour's deterministic return must land in (a third of what SAC
# reaches on Hopper, about 3,000), the SAC budgets tried in turn, and the file's size.
BANDS = {"hopper": (700.0, 1500.0)}
SAC_STEPS = (20000, 30000, 45000, 60000, 90000)
FILE_STEPS = 100_000
NOISE = "0.1"


def medium_behaviour(task: str, out: Path, seed: int) -> tuple[Path, dict]:
    """The first SAC policy, by budget, whose deterministic return lies in the task's band."""
    low, high = BANDS[task]
    tried = []
    for steps in SAC_STEPS:
        path = out / f"behaviour-sac-{steps}"
        if not (path / "policy.json").exists():
            run("train-real", "--task", task, "--algo", "sac", "--steps", steps, "--seed", seed, "--out", path)
        evaluation = run("evaluate", "--policy", path, "--episodes", 10, "--seed", seed)
        tried.append((steps, round(evaluation["mean_return"], 1)))
        if low <= evaluation["mean_return"] <= high:
            return path, evaluation
    raise SystemExit(f"no SAC budget gave a return between {low} and {high}: {tried}")


def record_file(task: str, behaviour: Path, traces: Path, seed: int) -> dict:
    """At least `FILE_STEPS` steps of the noisy behaviour, appended 50 episodes at a time
    (one seed sequence, as if recorded at once); a file already there is carried on."""
    from tasks.traces import read_traces

    while True:
        episodes = read_traces(traces).episodes if traces.exists() else None
        if episodes is not None and episodes.num_steps >= FILE_STEPS:
            return {"steps": episodes.num_steps, "episodes": episodes.num_episodes,
                    "mean_return": float(episodes.returns().mean())}
        run("collect", "--task", task, "--policy", behaviour, "--noise", NOISE, "--episodes", 50, "--seed", seed,
            "--format", "arrow", "--out", traces, *(["--append"] if episodes is not None else []))


def behaviour_cloning(task: str, traces: Path, out: Path, seed: int) -> dict:
    """Behaviour cloning on the file's training split (the episodes the world model fits on)."""
    from policies.behaviour_cloning import BehaviourCloningConfig, clone_behaviour
    from policies.saving import save_policy
    from tasks.registry import get_task
    from tasks.splits import fitting_episodes
    from tasks.traces import read_traces

    if not (out / "policy.json").exists():
        real_task = get_task(task)
        train, _ = fitting_episodes(read_traces(traces, task=real_task).episodes, split_seed=0)
        actor = clone_behaviour(real_task, train, BehaviourCloningConfig(), seed)
        save_policy(out, actor, real_task, {"trained_by": "behaviour cloning (bench_offline_medium)",
                                            "traces": str(traces.absolute())})
    return run("evaluate", "--policy", out, "--episodes", 10, "--seed", seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="hopper", choices=sorted(BANDS))
    parser.add_argument("--out", help="folder for everything written (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix=f"dreamer-offline-{args.task}-"))

    behaviour, deterministic = medium_behaviour(args.task, out, args.seed)
    traces = out / "traces-medium"
    recorded = record_file(args.task, behaviour, traces, args.seed)
    model = out / "wm-medium"
    if not (model / "model.json").exists():
        run("fit", "--traces", traces, "--out", model, "--seed", args.seed)
    cloned = behaviour_cloning(args.task, traces, out / "behaviour-cloning", args.seed)
    arms = {}
    for name, flags in (("with_penalty", []), ("without_penalty", ["--dream.uncertainty-penalty", "0",
                                                                    "--halt-multiple", "0"])):
        policy = out / f"dream-{name}"
        if (policy / "summary.json").exists():
            trained = json.loads((policy / "summary.json").read_text())
        else:
            trained = run("dream", "--world-model", model, "--out", policy, "--seed", args.seed, *flags)
        evaluation = run("evaluate", "--policy", policy, "--episodes", 10, "--seed", args.seed)
        arms[name] = {
            "mean_return": evaluation["mean_return"],
            "std_return": evaluation["std_return"],
            "improvement_over_behaviour": evaluation["mean_return"] - recorded["mean_return"],
            "improvement_over_cloning": evaluation["mean_return"] - cloned["mean_return"],
            "halt_threshold": trained["halt_threshold"],
            "uncertainty_penalty": trained["uncertainty_penalty"],
            "wall_seconds": trained["wall_seconds"],
        }
    print(json.dumps({
        "machine": machine_info(),
        "task": args.task,
        "behaviour_policy": str(behaviour),
        "behaviour_deterministic_mean_return": deterministic["mean_return"],
        "behaviour_mean_return": recorded["mean_return"],
        "file": {"steps": recorded["steps"], "episodes": recorded["episodes"], "noise": float(NOISE)},
        "behaviour_cloning": {"mean_return": cloned["mean_return"], "std_return": cloned["std_return"]},
        "dream": arms,
    }, indent=2))


if __name__ == "__main__":
    main()
