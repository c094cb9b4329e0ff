"""Dream-trained against real-trained: both arms on one task, several seeds, one report.

The dream arm is the online loop (`dreamer run`); the real arm is a baseline trained on
the real environment (`dreamer train-real`) with ten or more times the real steps, so
its curve shows where it crosses the threshold; an optional offline arm fits a world
model on a fixed trace file and trains purely in its dreams (`dreamer fit`, `dreamer
dream`), its real experience being the file's steps. Every arm is measured through one
protocol (`policies.protocol`): the deterministic policy in force at every grid point
``k * eval_every``, on the same fresh reset seeds. The dream arm's first seed is also replayed on held-out real
episodes (next to its world model's prediction), and that model's open-loop error is
measured on them. Everything lands in ``results.json``, from which `dreamer.report`
draws ``report.md`` and the plots.

Finished runs are reused when the comparison is run again into the same folder, so an
interrupted comparison picks up where it stopped.

With ``--seeds-in-one-call`` (``auto``: on an accelerator) the real-trained arm trains
its seeds as one vmapped program (`policies.seeds`), with the results of one-by-one
runs; the dream arms still run seed by seed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from dreamer.actor_critic import DreamConfig
from dreamer.behaviour import saved_behaviour
from dreamer.config import build_config, with_presets
from dreamer.heldout import check_replayable, evaluate_on_heldout
from dreamer.offline import dream_offline
from dreamer.online import RunConfig, run_online
from dreamer.provenance import machine_info, package_versions, source_commit
from dreamer.report import RESULTS_FORMAT, arm_summary, render_report
from policies.baselines import (Algorithm, TrainRealConfig, algo_label, chosen_algorithm, train_baseline,
                                train_baselines_in_one_call)
from policies.behaviour_cloning import BehaviourCloningConfig, clone_behaviour
from policies.protocol import (DEFAULT_EVAL_EVERY, EVAL_EVERY_HELP, grid_presets, lost_after_reaching, on_grid,
                               protocol_summary, random_policy_return, return_at_budget, steps_to_threshold)
from policies.real_training import evaluation_episodes
from policies.saving import save_policy
from policies.seeds import SEEDS_IN_ONE_CALL_HELP, SeedsInOneCall, seeds_in_one_call
from policies.stable_baselines import is_stable_baselines
from tasks.config import config, option
from tasks.errors import InputError
from tasks.json_files import read_json_object
from tasks.recording import EVALUATION_STREAM, HELDOUT_STREAM, RandomPolicy, record_episodes, reset_seeds
from tasks.registry import ENV_KWARGS_HELP, TASK_HELP, Task, get_task
from tasks.run_directory import CONFIG_FILE, SUMMARY_FILE, RunDirectory, config_to_dict, read_run_config
from tasks.splits import SplitFractions, fitting_episodes, heldout_episodes, split_record
from tasks.traces import read_traces, write_traces
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fidelity import FidelityConfig, fidelity_report
from worldmodel.fit import FitConfig, fit_world_model
from worldmodel.saving import build_model_for_spaces, load, save_model
from worldmodel.sharding import DEVICES_HELP, data_mesh

# Real-step budgets per task: the dream arm's, and the real arm's (at least five times as
# many, the fraction this project claims; enough for the baseline to cross the threshold).
# Long enough that a crossing can be seen to hold (5 later grid points, twice the steps).
# Locomotion's real arm gets 5x, not the whole million SAC needs: the claim is to match
# what it reaches with that much.
DREAM_STEPS = {"pendulum": 2000, "cartpole": 3000, "hopper": 50000, "halfcheetah": 50000}
REAL_STEPS = {"pendulum": 20000, "cartpole": 100000, "hopper": 250000, "halfcheetah": 250000}
MIN_BUDGET_RATIO = 5


@config
class OfflineArmConfig:
    """How the offline arm fits and dreams (the defaults of `dreamer fit` and `dreamer dream`)."""

    ensemble: EnsembleConfig = option(EnsembleConfig(), help="world model settings")
    fit: FitConfig = option(FitConfig(), help="fitting settings")
    dream: DreamConfig = option(DreamConfig(uncertainty_penalty=1.0), help="policy training in dreams")
    updates: int = option(3000, min=1, help="actor-critic updates in dreams")
    bc: BehaviourCloningConfig = option(BehaviourCloningConfig(), help="the behaviour-cloning baseline on the same file")


@config
class CompareConfig:
    task: str = option(help=TASK_HELP)
    env_kwargs: dict = option({}, help=ENV_KWARGS_HELP)
    out: str | None = option(None, help="report folder (default: reports/TASK)")
    seeds: int = option(3, min=1, help="seeds per arm: --seed, --seed + 1, ...")
    model: Literal["ensemble", "rssm"] = option("ensemble", help="the dream arm's world model: an ensemble of "
                                                                 "one-step MLPs, or a recurrent latent model")
    dream_steps: int | None = option(None, min=1, help="real steps of the dream-trained arm (default: 2000 for pendulum, "
                                                "3000 for cartpole, 50000 for hopper and halfcheetah, 3000 otherwise)")
    real_steps: int | None = option(None, min=1, help="real steps of the real-trained arm, at least 5x --dream-steps "
                                               "(default: 20000 for pendulum, 100000 for cartpole, 250000 for hopper "
                                               "and halfcheetah, and at least 5x)")
    threshold: float | None = option(None, help="mean return that counts as solved, for real steps to threshold "
                                                "(default: the task's reward threshold)")
    algo: Algorithm | None = option(None, help="real-trained algorithm: ppo or sac (default: sac for continuous actions, "
                                               "ppo for discrete); sb3:SAC, sb3:PPO or sbx:SAC with the [baselines] extra")
    heldout_traces: str | None = option(None, help="trace file whose held-out episodes the dream policy replays "
                                                   "(default: record --heldout-episodes random episodes)")
    heldout_episodes: int = option(10, min=1, help="random episodes recorded as the held-out set")
    offline_traces: str | None = option(None, help="a fixed trace file for a third, offline arm: fit a world model "
                                                   "on it and train a policy purely in its dreams")
    offline: OfflineArmConfig = option(OfflineArmConfig(), help="the offline arm's settings")
    eval_episodes: int = option(10, min=1, help="evaluation episodes on fresh seeds, for every arm")
    eval_every: int = option(DEFAULT_EVAL_EVERY, min=1, help=EVAL_EVERY_HELP + ", for every arm")
    devices: int | None = option(None, min=1, help=DEVICES_HELP + "; for the dream arms' fits and dreams")
    seeds_in_one_call: SeedsInOneCall = option("auto", help=SEEDS_IN_ONE_CALL_HELP + "; for the real-trained arm "
                                                            "(the project's own PPO or SAC)")
    seed: int = option(0, help="first seed")

    # Defaults that --task changes (`dreamer.config.with_presets`): the grid both arms share.
    presets = {"task": grid_presets()}

    @property
    def out_dir(self) -> Path:
        return Path(self.out or Path("reports") / self.task)

    @property
    def dream_budget(self) -> int:
        return self.dream_steps or DREAM_STEPS.get(self.task, 3000)

    @property
    def real_budget(self) -> int:
        return self.real_steps or max(REAL_STEPS.get(self.task, 0), MIN_BUDGET_RATIO * self.dream_budget)


def compare(config: CompareConfig, command: str | None = None) -> dict:
    """Run both arms over the seeds, measure, write results.json and the report; returns results."""
    task = get_task(config.task, config.env_kwargs)
    if config.real_budget < MIN_BUDGET_RATIO * config.dream_budget:
        raise InputError("--real-steps", f"the real-trained arm needs at least {MIN_BUDGET_RATIO}x the dream arm's "
                                         f"{config.dream_budget} real steps, got {config.real_budget}")
    algo = chosen_algorithm(task, config.algo)
    data_mesh(config.devices)  # more devices than exist stop the comparison before any arm runs
    if config.offline_traces:  # read now, so a bad file stops the comparison before any arm runs
        read_traces(config.offline_traces, task=task)
    commit, dirty = source_commit()  # the code as it was when the runs started
    out = config.out_dir
    seeds = [config.seed + i for i in range(config.seeds)]
    heldout = _heldout_set(config, task, out)  # before anything is written: a bad file stops here
    out.mkdir(parents=True, exist_ok=True)

    dream_runs, real_runs, offline_runs, cloning_runs = [], [], [], []
    real_in_one_call = real_seeds_in_one_call(config, algo)
    if real_in_one_call:
        _say(f"seeds {seeds[0]}-{seeds[-1]} in one call: real-trained arm ({algo_label(algo)}), "
             f"{config.real_budget} real steps each")
        real_runs = real_runs_in_one_call(config, algo, seeds, out)
    for number, seed in enumerate(seeds, 1):
        _say(f"seed {seed} ({number}/{len(seeds)}): dream-trained arm, {config.dream_budget} real steps")
        dream_runs.append(_dream_run(config, seed, out / "runs" / f"dream-seed{seed}"))
        if not real_in_one_call:
            _say(f"seed {seed} ({number}/{len(seeds)}): real-trained arm ({algo_label(algo)}), "
                 f"{config.real_budget} real steps")
            real_runs.append(real_run(config, algo, seed, real_run_dir(out, algo, seed)))
        if config.offline_traces:
            _say(f"seed {seed} ({number}/{len(seeds)}): offline arm, dreams from {config.offline_traces}")
            offline_runs.append(_offline_run(config, task, seed, out / "runs" / f"offline-seed{seed}"))
            _say(f"seed {seed} ({number}/{len(seeds)}): behaviour cloning on {config.offline_traces}")
            cloning_runs.append(_cloning_run(config, task, seed, out / "runs" / f"bc-seed{seed}"))

    first = Path(dream_runs[0]["run_dir"])
    _say(f"replaying {heldout.num_episodes} held-out episodes with the dream arm's policy (seed {seeds[0]})")
    saved = saved_behaviour(first)
    world_model = load(first)
    heldout_result = evaluate_on_heldout(task, saved.actor, heldout, world_model, seeds[0], saved.behaviour)
    trained_on = read_traces(first / "traces").episodes
    fidelity_config = FidelityConfig(horizon=min(50, task.horizon))
    fidelity = fidelity_report(world_model, heldout, trained_on, fidelity_config, jax.random.key(seeds[0]))

    results = {
        "format": RESULTS_FORMAT,
        "task": task.name,
        "env_id": task.env_id,
        "reward_threshold": task.reward_threshold,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command or command_line(config),
        "commit": commit,
        "dirty": dirty,
        "packages": package_versions(),
        "machine": machine_info(),
        "seeds": seeds,
        "config": config_to_dict(config),
        "evaluation": {"episodes": config.eval_episodes, "policy": "deterministic", "every": config.eval_every},
        "arms": [
            {"name": "dream", "label": "dream-trained (online loop)", "algorithm": "dreamer run",
             "budget_real_steps": config.dream_budget, "runs": dream_runs},
            {"name": "real", "label": f"real-trained ({algo_label(algo)})", "algorithm": algo,
             "budget_real_steps": config.real_budget, "runs": real_runs},
        ],
        "heldout": {"arm": "dream", "seed": seeds[0], "traces": str(heldout_location(config, out)),
                    "world_model": str(first), "policy": str(first), **heldout_result},
        "fidelity": fidelity,
    }
    if offline_runs:
        results["arms"].append({
            "name": "offline", "label": "dream-trained (offline, fixed traces)", "algorithm": "dreamer fit + dream",
            "budget_real_steps": offline_runs[0]["real_steps"], "runs": offline_runs, "fixed_traces": True,
        })
        results["arms"].append({
            "name": "bc", "label": "behaviour cloning (offline, same traces)", "algorithm": "behaviour cloning",
            "budget_real_steps": cloning_runs[0]["real_steps"], "runs": cloning_runs, "fixed_traces": True,
        })
    threshold = comparison_threshold(config, task)
    results["reward_threshold"] = threshold
    for arm in results["arms"]:
        measure_runs(arm, threshold)
        arm["summary"] = arm_summary(arm, threshold, config.eval_every)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    render_report(results, out)
    return results


def measure_runs(arm: dict, threshold: float | None) -> None:
    """Set each run's protocol figures from its evaluations under the comparison's
    threshold (its own run measured them under the task's): real steps to it, whether it
    was lost after reaching it, and the return at the budget."""
    for run in arm["runs"]:
        if arm.get("fixed_traces"):  # one policy, in force from the file's end: its return is the figure
            run["return_at_budget"] = run["final_mean_return"]
        else:
            run.update(steps_to_threshold=steps_to_threshold(run["evaluations"], threshold),
                       lost_after_reaching=lost_after_reaching(run["evaluations"], threshold),
                       return_at_budget=return_at_budget(run["evaluations"]))


def comparison_threshold(config: CompareConfig, task: Task) -> float | None:
    """The return a comparison counts as solved: ``--threshold``, else the task's."""
    return config.threshold if config.threshold is not None else task.reward_threshold


def command_line(config: CompareConfig) -> str:
    """The command that reproduces this comparison: every budget spelled out, and every
    other setting that differs from its default."""
    budgets = {"out": str(config.out_dir), "seed": config.seed, "seeds": config.seeds,
               "dream_steps": config.dream_budget, "real_steps": config.real_budget}
    words = ["dreamer", "compare", "--task", config.task]
    for name, value in budgets.items():
        words += ["--" + name.replace("_", "-"), value]
    words += _changed_flags(config, CompareConfig(task=config.task), skip={"task", *budgets})
    return shlex.join(map(str, words))


def _changed_flags(config, default, skip=frozenset(), prefix: str = "") -> list:
    """``--name value`` for each field (nested ones as ``--a.b``) that differs from ``default``."""
    flags = []
    for field in dataclasses.fields(config):
        value, default_value = getattr(config, field.name), getattr(default, field.name)
        if field.name in skip or value == default_value:
            continue
        flag = prefix + field.name.replace("_", "-")
        if dataclasses.is_dataclass(value):
            flags += _changed_flags(value, default_value, prefix=flag + ".")
        elif isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        elif isinstance(value, dict):
            flags += [f"--{flag}", json.dumps(value)]
        else:
            flags += [f"--{flag}", value]
    return flags


def heldout_location(config: CompareConfig, out: Path) -> Path:
    return Path(config.heldout_traces) if config.heldout_traces else out / "heldout-traces"


def _heldout_set(config: CompareConfig, task: Task, out: Path):
    """The held-out split of the given trace file, or freshly recorded random episodes
    (from their own seed stream, so no training or evaluation episode starts there)."""
    location = heldout_location(config, out)
    if config.heldout_traces:
        heldout = heldout_episodes(read_traces(location, task=task).episodes)
        if heldout is None:
            raise InputError(location, "has no held-out episodes (record more episodes)")
        check_replayable(heldout, location)
        return heldout
    seeds = reset_seeds(config.seed, config.heldout_episodes, HELDOUT_STREAM)
    if location.exists():
        episodes = read_traces(location, task=task).episodes
        if np.array_equal(episodes.seeds, seeds):
            return episodes
        shutil.rmtree(location)
    _say(f"recording {config.heldout_episodes} random held-out episodes into {location}")
    location.parent.mkdir(parents=True, exist_ok=True)
    episodes = record_episodes(task, RandomPolicy(task.action_space), seeds, progress=False)
    write_traces(location, episodes, task, algorithm_name="random (dreamer compare held-out set)")
    return episodes


def _dream_run(config: CompareConfig, seed: int, run_dir: Path) -> dict:
    # The dream arm runs as `dreamer run --model MODEL` would, with that model's presets.
    given = {"task": config.task, "env_kwargs": config.env_kwargs, "out": str(run_dir), "model": config.model,
             "real_steps": config.dream_budget, "eval_episodes": config.eval_episodes,
             "eval_every": config.eval_every, "devices": config.devices, "seed": seed}
    run_config = build_config(RunConfig, with_presets(RunConfig, given), {}, source="dreamer compare")
    summary = _finished(run_dir, run_config)
    if summary is None:
        resume = (run_dir / CONFIG_FILE).exists()
        summary = run_online(dataclasses.replace(run_config, resume=resume))
    return _run_record(seed, run_dir, summary)


def algo_slug(algo: str) -> str:
    """An algorithm's part of a run directory's name: sac, sb3-sac."""
    return algo.lower().replace(":", "-")


def real_run_dir(out: Path, algo: str, seed: int) -> Path:
    return out / "runs" / f"real-{algo_slug(algo)}-seed{seed}"


def real_run(config: CompareConfig, algo: str, seed: int, run_dir: Path) -> dict:
    """One seed of the real-trained arm in ``run_dir``, reused when it already finished there."""
    run_config = _real_run_config(config, algo, seed, run_dir)
    summary = _finished(run_dir, run_config)
    if summary is None:  # a real-trained run that was cut short starts over (train-real clears it)
        summary = train_baseline(run_config)
    return _run_record(seed, run_dir, summary)


def real_seeds_in_one_call(config: CompareConfig, algo: str) -> bool:
    """Whether the real-trained arm trains its seeds as one program: as
    ``--seeds-in-one-call`` says, for the project's own PPO and SAC, and several seeds."""
    return seeds_in_one_call(config.seeds_in_one_call) and not is_stable_baselines(algo) and config.seeds > 1


def real_runs_in_one_call(config: CompareConfig, algo: str, seeds: list[int], out: Path) -> list[dict]:
    """The real-trained arm's seeds, the unfinished ones trained in one call; each
    seed's run and record are what `real_run` makes, to float tolerance."""
    run_configs = {seed: _real_run_config(config, algo, seed, real_run_dir(out, algo, seed)) for seed in seeds}
    summaries = {seed: _finished(real_run_dir(out, algo, seed), run_config) for seed, run_config in run_configs.items()}
    pending = [seed for seed, summary in summaries.items() if summary is None]
    if pending:  # runs cut short start over, together (train-real clears them)
        summaries.update(zip(pending, train_baselines_in_one_call([run_configs[seed] for seed in pending])))
    return [_run_record(seed, real_run_dir(out, algo, seed), summaries[seed]) for seed in seeds]


def _real_run_config(config: CompareConfig, algo: str, seed: int, run_dir: Path) -> TrainRealConfig:
    # The real arm runs as `dreamer train-real` would, with the task's presets.
    given = {"task": config.task, "env_kwargs": config.env_kwargs, "out": str(run_dir), "algo": algo,
             "steps": config.real_budget, "eval_every": config.eval_every, "eval_episodes": config.eval_episodes,
             "seed": seed}
    return build_config(TrainRealConfig, with_presets(TrainRealConfig, given), {}, source="dreamer compare")


@config
class OfflineRunConfig:
    """What one seed of the offline arm was run with (its run directory's config)."""

    traces: str = option(help="the fixed trace file")
    offline: OfflineArmConfig = option(OfflineArmConfig())
    eval_every: int = option(DEFAULT_EVAL_EVERY, min=1)
    eval_episodes: int = option(10, min=1)
    seed: int = option(0)


def _offline_run(config: CompareConfig, task: Task, seed: int, run_dir: Path) -> dict:
    """Fit on the fixed traces, dream, and evaluate once: its real experience is the file's."""
    run_config = OfflineRunConfig(traces=config.offline_traces, offline=config.offline, eval_every=config.eval_every,
                                  eval_episodes=config.eval_episodes, seed=seed)
    summary = _finished(run_dir, run_config)
    if summary is None:  # a cut-short offline run is pending, and starts over
        started = time.perf_counter()
        traces = read_traces(config.offline_traces, task=task)
        train, validation = fitting_episodes(traces.episodes, split_seed=0)
        if train is None:
            raise InputError(config.offline_traces, "has no training episodes (record more episodes)")
        with RunDirectory(run_dir, run_config, resumable=False) as run:
            model = build_model_for_spaces("ensemble", task.observation_space, task.action_space,
                                           config.offline.ensemble, seed=seed)
            # No checkpoints: a cut-short offline run stays pending, and starts over.
            mesh = data_mesh(config.devices)
            fit_world_model(model, train, validation, config.offline.fit, seed=seed, progress=False, mesh=mesh)
            provenance = {"traces": str(Path(config.offline_traces).absolute()), "split": split_record(0, SplitFractions())}
            save_model(run_dir, model, {**task.record(), **provenance})
            policy, _ = dream_offline(model, task, train, config.offline.dream, config.offline.updates, seed,
                                      mesh=mesh)
            save_policy(run_dir, policy.actor, task, {"trained_by": "dreamer compare (offline arm)", **provenance})
            summary = _fixed_file_summary(config, task, policy.actor, traces.episodes.num_steps, seed, started)
            run.write_summary(summary)
    return _run_record(seed, run_dir, summary)


def _cloning_run(config: CompareConfig, task: Task, seed: int, run_dir: Path) -> dict:
    """Behaviour cloning on the offline arm's file: what the data alone gives, without a model."""
    run_config = OfflineRunConfig(traces=config.offline_traces, offline=config.offline, eval_every=config.eval_every,
                                  eval_episodes=config.eval_episodes, seed=seed)
    summary = _finished(run_dir, run_config)
    if summary is None:
        started = time.perf_counter()
        traces = read_traces(config.offline_traces, task=task)
        train, _ = fitting_episodes(traces.episodes, split_seed=0)  # the data the offline arm learns from
        with RunDirectory(run_dir, run_config, resumable=False) as run:
            actor = clone_behaviour(task, train, config.offline.bc, seed)
            save_policy(run_dir, actor, task, {"trained_by": "dreamer compare (behaviour cloning)",
                                               "traces": str(Path(config.offline_traces).absolute())})
            summary = _fixed_file_summary(config, task, actor, traces.episodes.num_steps, seed, started)
            run.write_summary(summary)
    return _run_record(seed, run_dir, summary)


def _fixed_file_summary(config: CompareConfig, task: Task, actor, real_steps: int, seed: int, started: float) -> dict:
    """An offline arm's figures: its one policy is in force from the file's last step on,
    the random policy before it.

    With one policy and nothing after it, no crossing can be seen to hold: real steps to
    the threshold do not apply (null, and the report says so); the final return is the
    figure. The curve ends with the policy's evaluation at the file's size.
    """
    evaluation_seeds = reset_seeds(seed, config.eval_episodes, EVALUATION_STREAM)
    final = float(evaluation_episodes(task, actor, evaluation_seeds).returns().mean())
    random_return, _ = random_policy_return(task, evaluation_seeds, seed)
    evaluations = on_grid([{"real_steps": real_steps, "mean_return": final}], real_steps, config.eval_every,
                          random_return)
    if evaluations[-1]["real_steps"] < real_steps:
        evaluations.append({"real_steps": real_steps, "mean_return": final})
    return {
        "real_steps": real_steps,
        "wall_seconds": time.perf_counter() - started,
        **protocol_summary(evaluations, final, task.reward_threshold),
        "steps_to_threshold": None,
        "return_at_budget": final,
    }


def _finished(run_dir: Path, run_config) -> dict | None:
    """The summary of a finished run of exactly this config in ``run_dir``, else None."""
    config_path, summary_path = run_dir / CONFIG_FILE, run_dir / SUMMARY_FILE
    if not (config_path.is_file() and summary_path.is_file()):
        return None
    saved = read_run_config(run_dir)
    wanted = config_to_dict(run_config)
    # How a run was made, not what it is: a resumed run is the same run, and its devices
    # are not even in its config.yaml.
    per_call = {"resume", "devices"}
    if ({k: v for k, v in saved.items() if k not in per_call}
            != {k: v for k, v in wanted.items() if k not in per_call}):
        raise InputError(run_dir, "holds a finished run with other settings; choose another --out")
    _say(f"reusing the finished run in {run_dir}")
    return read_json_object(summary_path, {"real_steps": int, "evaluations": list}, "a run summary")


def _run_record(seed: int, run_dir: Path, summary: dict) -> dict:
    return {
        "seed": seed,
        "run_dir": str(run_dir),
        "real_steps": summary["real_steps"],
        "wall_seconds": summary["wall_seconds"],
        "final_mean_return": summary["final_mean_return"],
        "steps_to_threshold": summary["steps_to_threshold"],
        "lost_after_reaching": summary.get("lost_after_reaching", False),
        "evaluations": [{"real_steps": e["real_steps"], "mean_return": e["mean_return"]} for e in summary["evaluations"]],
    }


def _say(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
