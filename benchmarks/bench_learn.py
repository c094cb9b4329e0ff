"""Learning on the job from trace files, round by round, on Pendulum.

    python benchmarks/bench_learn.py --seeds 103 104 105

For each seed (`learn --seed`; the trace batches use collect seeds 1-5 as the issue's
walk-through does), one run of ``dreamer learn``:

  round 1   30 random episodes
  rounds 2-4  20 episodes each, recorded by the previous round's policy with noise 0.2
  again     round 4's traces learned a second time: must add no round and no episode
  round 5   20 episodes from a changed plant (``gym:Pendulum-v1``, ``{"g": 5.0}``)

Every version's real return is `dreamer evaluate --json`'s ``mean_return`` (10 fresh reset
seeds), the model errors come from `dreamer history --json`. The store write alone is
timed as `benchmarks/bench_traces.py --only appends` times it (20 rounds of 20 Pendulum
episodes, the same append `learn` makes). Prints one JSON object; the checks are the
issue's "done when", per seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from bench_traces import time_appends  # noqa: E402
from command_line import dreamer_json  # noqa: E402

CHANGED_PLANT = ("--task", "gym:Pendulum-v1", "--env-kwargs", '{"g": 5.0}')


def run_seed(seed: int, out: Path, extra: list[str]) -> dict:
    run = out / f"plant-seed{seed}"
    started = time.perf_counter()

    def collect(name: str, collect_seed: int, *options: str) -> Path:
        traces = out / f"seed{seed}-{name}"
        dreamer_json("collect", "--seed", collect_seed, "--out", traces, *options)
        return traces

    def learn(traces: Path) -> dict:
        return dreamer_json("learn", "--run", run, "--traces", traces, "--seed", seed, *extra)

    learn(collect("week-01", 1, "--task", "pendulum", "--policy", "random", "--episodes", "30"))
    for week in (2, 3, 4):
        last = collect(f"week-0{week}", week, "--task", "pendulum", "--policy", run, "--noise", "0.2",
                       "--episodes", "20")
        learn(last)
    episodes_before = dreamer_json("history", "--run", run)["rounds"][-1]["episodes_total"]
    again = learn(last)
    rounds = dreamer_json("history", "--run", run)["rounds"]
    rerun = {"round_added": again["round"] is not None, "episodes_added": again["episodes_added"],
             "episodes_in_run_before": episodes_before, "episodes_in_run_after": rounds[-1]["episodes_total"]}
    real_returns = {version: dreamer_json("evaluate", "--policy", run, "--version", version)["mean_return"]
                    for version in (1, 2, 3, 4)}

    changed = learn(collect("changed-plant", 5, *CHANGED_PLANT, "--policy", run, "--noise", "0.2",
                            "--episodes", "20"))
    round_1_error = [rounds[0]["heldout_obs_rmse_by_origin"]["1"], rounds[3]["heldout_obs_rmse_by_origin"]["1"]]
    plant_error = changed["heldout_obs_rmse_by_origin"]["5"]
    old_error = changed["old_heldout_obs_rmse_before_update"]
    return {
        "seed": seed,
        "real_return_by_version": real_returns,
        "dream_return_by_round": [entry["dream_return"] for entry in rounds],
        "heldout_obs_rmse_by_origin_by_round": [entry["heldout_obs_rmse_by_origin"] for entry in rounds],
        "forgetting_by_round": [entry["forgetting"] for entry in rounds],
        "world_changed_by_round": [entry["world_changed"] for entry in rounds],
        "plant_changed_by_round": [entry["plant_changed"] for entry in rounds],  # a new behaviour is not one
        "known_state_error_ratio_by_round": [entry["known_state_error_ratio"] for entry in rounds],
        "round_1_heldout_error_after_round_1_and_4": round_1_error,
        "rerun_of_round_4": rerun,
        "changed_plant": {
            "world_changed": changed["world_changed"],
            "plant_changed": changed["plant_changed"],
            "known_state_error_ratio": changed["known_state_error_ratio"],
            "new_batch_error_before": changed["new_batch_obs_rmse_before_update"],
            "old_heldout_error_before": old_error,
            "plant_heldout_error_after": plant_error,
            "real_return_on_changed_plant": changed["real_return"],
        },
        "round_wall_seconds": [entry["wall_seconds"] for entry in rounds] + [changed["wall_seconds"]],
        "wall_seconds": time.perf_counter() - started,
        "checks": {
            "round_4_beats_round_1": real_returns[4] > real_returns[1],
            "round_4_at_least_minus_200": real_returns[4] >= -200,
            "round_1_error_within_1.1x": round_1_error[1] <= 1.1 * round_1_error[0],
            "rerun_adds_nothing": not rerun["round_added"] and rerun["episodes_added"] == 0
                                  and rerun["episodes_in_run_after"] == episodes_before,
            "changed_plant_flagged": changed["world_changed"] and changed["plant_changed"],
            "new_behaviour_not_taken_for_a_changed_plant": not any(entry["plant_changed"] for entry in rounds),
            "changed_plant_recovered_within_2x": plant_error is not None and old_error is not None
                                                 and plant_error <= 2 * old_error,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[103, 104, 105],
                        help="`learn --seed` of each run (100-102 tuned the refit's patience; these did not)")
    parser.add_argument("--out", type=Path, help="folder for traces and runs (default: a temporary folder)")
    parser.add_argument("--skip-appends", action="store_true", help="leave out the store-write timing")
    args, extra = parser.parse_known_args()  # anything else goes to every `dreamer learn`
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-learn-"))
    seeds = []
    for seed in args.seeds:
        seeds.append(run_seed(seed, out, extra))
        print(json.dumps(seeds[-1]), file=sys.stderr, flush=True)
    result = {"machine": machine_info(), "learn_options": extra, "out": str(out), "seeds": seeds,
              "all_checks_hold": {name: all(s["checks"][name] for s in seeds) for name in seeds[0]["checks"]}}
    if not args.skip_appends:
        appends = time_appends("arrow")
        result["store_write"] = {"seconds_round_1": appends["seconds_per_round"][0],
                                 "seconds_round_20": appends["seconds_per_round"][-1], **appends}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
