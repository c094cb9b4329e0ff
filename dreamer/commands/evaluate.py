"""``dreamer evaluate``: a saved policy's real return on fresh reset seeds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from dreamer.config import option
from policies.acting import ActorPolicy
from policies.saving import load_policy
from tasks.errors import InputError
from tasks.recording import EVALUATION_STREAM, record_episodes, reset_seeds
from tasks.registry import check_spaces_match, get_task
from tasks.traces import read_traces


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    policy: str = option(help="run directory holding a saved policy")
    task: str | None = option(None, help="task to evaluate in (default: the policy's own)")
    episodes: int = option(10, help="episodes, each from its own fresh reset seed")
    out: str | None = option(None, help="folder to keep evaluation.json in")
    seed: int = option(0, help="seed of the fresh reset seeds")

    def __post_init__(self):
        if self.episodes < 1:
            raise ValueError(f"--episodes must be at least 1, got {self.episodes}")


def run(config: EvaluateConfig) -> tuple[dict, str]:
    actor, policy_task, _ = load_policy(config.policy)
    task = get_task(config.task) if config.task else policy_task
    check_spaces_match(task, policy_task.observation_space, policy_task.action_space, config.policy)
    seeds = reset_seeds(config.seed, config.episodes, EVALUATION_STREAM)
    _check_seeds_are_fresh(seeds, Path(config.policy))
    episodes = record_episodes(task, ActorPolicy(actor), seeds, num_envs=min(config.episodes, 16), progress=False)
    returns = episodes.returns()
    summary = {
        "policy": str(config.policy),
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
    if config.out:
        Path(config.out).mkdir(parents=True, exist_ok=True)
        (Path(config.out) / "evaluation.json").write_text(json.dumps(summary, indent=2))
    text = (
        f"{task.name}: mean return {returns.mean():.1f} ± {returns.std():.1f} "
        f"(min {returns.min():.1f}, max {returns.max():.1f}) over {episodes.num_episodes} fresh episodes"
    )
    return summary, text


def _check_seeds_are_fresh(seeds: np.ndarray, run_dir: Path) -> None:
    """Refuse to report a return measured on a start the policy's run trained from."""
    traces = run_dir / "traces"
    if not traces.exists():
        return
    used = set(read_traces(traces).episodes.seeds.tolist())
    if used & set(seeds.tolist()):
        raise InputError(run_dir, "an evaluation seed was used for training in this run; pass another --seed")
