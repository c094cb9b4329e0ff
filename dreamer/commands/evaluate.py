"""``dreamer evaluate``: a saved policy's real return, on fresh seeds or held-out episodes.

Fresh-seed form (``--episodes N``): the deterministic policy from N reset seeds no
training episode started from. Held-out form (``--traces FILE``): the policy replays
the start of every held-out episode of a trace file (reset with its recorded seed),
beside the recorded behaviour's return and the world model's dream-predicted return.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from dreamer.behaviour import SavedPolicy, saved_behaviour
from dreamer.heldout import check_replayable, evaluate_on_heldout
from policies.versions import policy_folder
from tasks.config import config, option
from tasks.errors import InputError
from tasks.recording import EVALUATION_STREAM, record_episodes, reset_seeds
from tasks.registry import ENV_KWARGS_HELP, check_spaces_match, get_task
from tasks.splits import describe_split, heldout_episodes, recorded_split
from tasks.traces import read_traces
from worldmodel.saving import MODEL_FILE, load, load_spec


@config
class EvaluateConfig:
    policy: str = option(help="run directory holding a saved policy")
    version: int | None = option(None, min=1, help="policy version of a run made by `dreamer learn` (default: its latest)")
    task: str | None = option(None, help="task to evaluate in (default: the policy's own)")
    env_kwargs: dict | None = option(None, help=ENV_KWARGS_HELP + " (default: the policy's own, with its own task)")
    episodes: int = option(10, min=1, help="episodes, each from its own fresh reset seed (fresh-seed form)")
    traces: str | None = option(None, help="trace file whose held-out episodes the policy replays (held-out form)")
    split: Literal["heldout", "all"] = option("heldout", help="which episodes of --traces: 'heldout', or 'all' for a file nothing learned from")
    split_seed: int | None = option(None, help="split seed of --traces (default: the one the policy was trained with)")
    world_model: str | None = option(None, help="world model for dream-predicted returns "
                                                "(default: the policy's run directory, if it holds one)")
    out: str | None = option(None, help="folder to keep evaluation.json in")
    seed: int = option(0, help="seed of the fresh reset seeds, the dreams and the intervals")


def run(config: EvaluateConfig) -> tuple[dict, str]:
    saved = saved_behaviour(config.policy, config.version)
    policy_task = saved.task
    task = policy_task
    if config.task:
        task = get_task(config.task, config.env_kwargs)
    elif config.env_kwargs is not None:
        task = get_task(policy_task.name, config.env_kwargs)
    check_spaces_match(task, policy_task.observation_space, policy_task.action_space, config.policy)
    if config.traces:
        summary, text = _on_heldout_episodes(config, saved, task)
    else:
        summary, text = _on_fresh_seeds(config, saved, task)
    if config.out:
        Path(config.out).mkdir(parents=True, exist_ok=True)
        (Path(config.out) / "evaluation.json").write_text(json.dumps(summary, indent=2))
    return summary, text


def _on_fresh_seeds(config: EvaluateConfig, saved: SavedPolicy, task) -> tuple[dict, str]:
    spec = saved.spec
    seeds = reset_seeds(config.seed, config.episodes, EVALUATION_STREAM)
    _check_seeds_are_fresh(seeds, Path(config.policy), "an evaluation seed was used for training in this run; "
                                                       "pass another --seed")
    episodes = record_episodes(task, saved.behaviour, seeds, num_envs=min(config.episodes, 16), progress=False)
    returns = episodes.returns()
    summary = {
        "policy": str(config.policy),
        "policy_version": spec.get("policy_version"),
        "task": task.name,
        "episodes": episodes.num_episodes,
        "eval_steps": episodes.num_steps,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "reward_threshold": task.reward_threshold,
        # The held-out-trace form fills these; fresh seeds have no recorded behaviour.
        "behaviour_mean_return": None,
        "dream_mean_return": None,
        "dream_real_gap": None,
    }
    text = (
        f"{task.name}: mean return {returns.mean():.1f} ± {returns.std():.1f} "
        f"(min {returns.min():.1f}, max {returns.max():.1f}) over {episodes.num_episodes} fresh episodes"
    )
    return summary, text


def _on_heldout_episodes(config: EvaluateConfig, saved: SavedPolicy, task) -> tuple[dict, str]:
    spec = saved.spec
    traces = read_traces(config.traces)
    check_spaces_match(task, traces.observation_space, traces.action_space, config.traces)
    if config.split == "all":
        heldout = traces.episodes
    else:
        split_seed, fractions = recorded_split(spec, str(Path(config.policy) / "policy.json"))
        split_seed = split_seed if config.split_seed is None else config.split_seed
        heldout = heldout_episodes(traces.episodes, split_seed, fractions)
        if heldout is None:
            raise InputError(config.traces, f"holds no held-out episodes under the split the policy was trained with "
                                            f"({describe_split(split_seed, fractions)}); train with "
                                            "--heldout-fraction above 0, or pass --split all for a file nothing "
                                            "learned from")
    check_replayable(heldout, config.traces)
    _check_seeds_are_fresh(heldout.seeds, Path(config.policy),
                           "a held-out episode starts from a seed this policy's run trained on")
    folder, _ = policy_folder(config.policy, config.version)  # a version keeps its round's world model beside it
    model_dir = config.world_model or (folder if (folder / MODEL_FILE).is_file() else None)
    world_model = None
    if saved.world_model is not None:  # the actor reads this model's state: only it can dream the actor
        if config.world_model:
            raise InputError("--world-model", "this policy acts on the latent state of the world model saved "
                                              "beside it; dreams of it need that model, so leave --world-model out")
        model_dir, world_model = folder, saved.world_model
    elif model_dir:
        if load_spec(model_dir).get("task") != task.name:
            raise InputError(model_dir, f"holds a world model of task {load_spec(model_dir).get('task')}, "
                                        f"not {task.name}")
        world_model = load(model_dir)
    result = evaluate_on_heldout(task, saved.actor, heldout, world_model, config.seed, saved.behaviour)
    s = result["summary"]
    summary = {
        "policy": str(config.policy),
        "policy_version": spec.get("policy_version"),
        "task": task.name,
        "traces": str(config.traces),
        "world_model": None if model_dir is None else str(model_dir),
        "episodes": s["episodes"],
        "mean_return": s["mean_real_return"],
        "std_return": float(np.std([e["real_return"] for e in result["episodes"]])),
        "reward_threshold": task.reward_threshold,
        "behaviour_mean_return": s["mean_behaviour_return"],
        "dream_mean_return": s["mean_dream_return"],
        "dream_real_gap": s["gap_abs_mean"],
        "heldout": result,
    }
    return summary, _heldout_text(task.name, result)


def _heldout_text(task_name: str, result: dict) -> str:
    s = result["summary"]
    ci = lambda interval: f"[{interval[0]:.1f}, {interval[1]:.1f}]"  # noqa: E731
    lines = [f"{task_name}: {s['episodes']} held-out episodes, each replayed from its recorded reset seed",
             f"{'seed':>12} {'behaviour':>10} {'real':>10} {'dream':>10}"]
    for e in result["episodes"]:
        dream = "-" if e["dream_return"] is None else f"{e['dream_return']:.1f}"
        lines.append(f"{e['seed']:>12} {e['behaviour_return']:>10.1f} {e['real_return']:>10.1f} {dream:>10}")
    lines.append(f"mean real return {s['mean_real_return']:.1f} (95% CI {ci(s['real_return_ci95'])}); "
                 f"behaviour {s['mean_behaviour_return']:.1f}; improvement {s['improvement']:.1f} "
                 f"(95% CI {ci(s['improvement_ci95'])})")
    if s["gap_abs_mean"] is not None:
        lines.append(f"dream-to-real gap: {s['gap_abs_mean']:.1f} absolute (95% CI {ci(s['gap_abs_ci95'])}), "
                     f"{100 * s['gap_relative_mean']:.0f}% relative "
                     f"(95% CI [{100 * s['gap_relative_ci95'][0]:.0f}%, {100 * s['gap_relative_ci95'][1]:.0f}%])")
    return "\n".join(lines)


def _check_seeds_are_fresh(seeds: np.ndarray, run_dir: Path, problem: str) -> None:
    """Refuse to report a return measured on a start the policy's run trained from."""
    traces = run_dir / "traces"
    if not traces.exists():
        return
    used = set(read_traces(traces).episodes.seeds.tolist())
    if used & set(np.asarray(seeds).tolist()):
        raise InputError(run_dir, problem)
