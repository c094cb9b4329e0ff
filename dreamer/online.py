"""The online loop: learning on the job from the policy's own deployments.

Every round deploys the current policy in the real environment, appends the new
episodes to the run's trace file, refits the world model (warm, on all training
episodes), and trains the policy further in dreams (those two steps are
`dreamer.rounds.learn_round`). After each round the deterministic policy is evaluated
on fresh reset seeds; those evaluation episodes are measurement only and never enter
the traces. ``real_steps`` is a hard cap on the real steps used for learning, counted
from the first random step: the last episode is cut there and recorded as truncated.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from dreamer.actor_critic import DreamConfig, dream_mesh
from dreamer.dreaming import PolicyInDreams
from dreamer.rounds import learn_round, learner_checkpoint, restore_learner, with_halt_reward
from policies.filtering import acting_policy
from policies.protocol import (DEFAULT_EVAL_EVERY, EVAL_EVERY_HELP, grid_presets, on_grid, protocol_summary,
                               random_policy_return)
from policies.saving import save_policy
from tasks.config import config, option
from tasks.recording import (
    EVALUATION_STREAM,
    ONLINE_ROUND_STREAM,
    RandomPolicy,
    record_episodes,
    reset_seeds,
)
from tasks.registry import ENV_KWARGS_HELP, TASK_HELP, Task, get_task
from tasks.run_directory import RunDirectory
from tasks.splits import SplitFractions, split_record
from tasks.traces import append_traces, keep_first_episodes, read_traces, write_traces
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fit import FitConfig
from worldmodel.rssm import RSSMConfig
from worldmodel.saving import save_model
from worldmodel.sharding import DEVICES_HELP


DEFAULT_RANDOM_STEPS = {"pendulum": 400}

# Other defaults `run` (and `compare`'s dream arm) take with --model rssm: each refit
# draws 16 windows of 32 steps (the model's fit settings), so it gets longer rounds and
# fewer updates per round; a model with memory learns to hold the pole over CartPole's
# 500-step episodes with a longer discount horizon and less entropy. Chosen on CartPole
# seed 0 (see the README's RSSM section).
MODEL_PRESETS = {
    "rssm": {"steps_per_round": 500, "dream_updates": 2000, "fit": {"max_updates": 500},
             "dream": {"gamma": 0.997, "entropy": 1e-3}},
}

# Defaults for locomotion (Hopper, HalfCheetah), where returns run to thousands and a
# 50,000-step run must fit in two hours on 2 CPU cores: rounds of 1,000 real steps with
# 3,000 dream updates each (3 per real step, against 5 on the classic tasks), a critic
# over symlog bins and a return scale debiased from the first update.
LOCOMOTION = {"steps_per_round": 1000, "dream_updates": 3000,
              "dream": {"value_head": "twohot", "return_scale_start": "debiased"}}
TASK_PRESETS = {task: {**grid, **LOCOMOTION} for task, grid in grid_presets().items()}


@config
class RunConfig:
    task: str = option(help=TASK_HELP)
    out: str = option(help="run directory to write")
    env_kwargs: dict = option({}, help=ENV_KWARGS_HELP)
    real_steps: int = option(3000, min=1, help="hard cap on real environment steps used for learning")
    random_steps: int | None = option(None, min=1, help="the first round acts randomly for at least this many steps "
                                                 "(default: 400 for pendulum, 200 otherwise)")
    steps_per_round: int = option(200, min=1, help="each later round deploys the policy for at least this many steps "
                                                   "(--model rssm: 500; hopper, halfcheetah: 1000)")
    eval_episodes: int = option(10, min=1, help="deterministic evaluation episodes on fresh seeds after each round")
    eval_every: int = option(DEFAULT_EVAL_EVERY, min=1, help=EVAL_EVERY_HELP)
    explore: str = option("sample", help="how the deployed policy explores: 'sample' from the actor, or 'noisy:SIGMA'")
    model: Literal["ensemble", "rssm"] = option("ensemble", help="world model kind: an ensemble of one-step MLPs, "
                                                                 "or a recurrent latent model")
    ensemble: EnsembleConfig = option(EnsembleConfig(hidden_size=128, hidden_layers=3), help="world model settings")
    rssm: RSSMConfig = option(RSSMConfig(), help="recurrent latent model settings (--model rssm)")
    fit: FitConfig = option(FitConfig(max_updates=1000, updates_per_call=250, patience=2), help="refit per round")
    dream: DreamConfig = option(DreamConfig(), help="policy training in dreams (hopper, halfcheetah: twohot value "
                                                    "head, debiased return scale)")
    dream_updates: int = option(1000, min=1, help="actor-critic updates per round (--model rssm: 2000; "
                                                  "hopper, halfcheetah: 3000)")
    validation_fraction: float = option(0.0, min=0, max=1, help="share of episodes kept for early stopping of the refit")
    heldout_fraction: float = option(0.0, min=0, max=1, help="share of episodes kept out of all learning")
    split_seed: int = option(0, help="seed of the episode-content hash that assigns splits")
    resume: bool = option(False, help="continue a killed run in --out from its last round")
    devices: int | None = option(None, min=1, help=DEVICES_HELP)
    seed: int = option(0, help="seed of everything random in the run")

    # Defaults that --model and --task change (`dreamer.config.with_presets`); a task's
    # presets lie over a model's.
    presets = {"model": MODEL_PRESETS, "task": TASK_PRESETS}

    def __post_init__(self):
        if self.explore != "sample":
            kind, _, sigma = self.explore.partition(":")
            try:
                valid = kind == "noisy" and math.isfinite(float(sigma)) and float(sigma) >= 0
            except ValueError:
                valid = False
            if not valid:
                raise ValueError(f"explore must be 'sample' or 'noisy:SIGMA' with SIGMA >= 0, got {self.explore!r}")
        if self.validation_fraction + self.heldout_fraction >= 1:
            raise ValueError("validation_fraction and heldout_fraction must leave a share for training")

    @property
    def first_random_steps(self) -> int:
        """Random steps before the first dream: two whole episodes for Pendulum, whose first
        model must see enough of the swing to extrapolate towards the top (with one
        episode, two of three seeds never found the swing-up); 200 elsewhere."""
        if self.random_steps is not None:
            return self.random_steps
        return DEFAULT_RANDOM_STEPS.get(self.task, 200)

    @property
    def fractions(self) -> SplitFractions:
        return SplitFractions.rest_for_training(self.validation_fraction, self.heldout_fraction)


def run_online(config: RunConfig, progress: bool | None = None) -> dict:
    """Run the online loop to its real-step budget; returns the summary it writes."""
    started = time.perf_counter()
    progress = sys.stderr.isatty() if progress is None else progress
    task = get_task(config.task, config.env_kwargs)
    dream_mesh(config.devices, config.dream)  # refuses devices or a batch they cannot split, before --out is made
    # The devices are where a run goes on, not what it computes: a run may resume on others.
    with RunDirectory(config.out, config, resume=config.resume, per_call=("devices",)) as run:
        return _run_rounds(config, task, run, started, progress)


def _run_rounds(config: RunConfig, task: Task, run: RunDirectory, started: float, progress: bool) -> dict:
    traces_path = Path(config.out) / "traces"
    manager = run.checkpoint_manager("online")
    key = jax.random.key(config.seed)
    evaluation_seeds = reset_seeds(config.seed, config.eval_episodes, EVALUATION_STREAM)
    state = {"round": 0, "real_steps": 0, "eval_steps": 0, "episodes": 0, "policies": [], "random_return": 0.0}
    model = policy = None

    if config.resume:
        # Everything after the last round checkpoint is undone and redone: episodes a
        # killed round already appended, and the lines it already logged.
        if manager.latest_step() is not None:
            restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(progress=ocp.args.JsonRestore()))
            state = dict(restored["progress"])
            episodes = keep_first_episodes(traces_path, state["episodes"])
            model, policy = restore_learner(manager, manager.latest_step(), task, config,
                                            with_halt_reward(config.dream, state.get("halt_reward")), episodes)
        run.truncate_metrics(state["real_steps"])

    if state["round"] == 0:  # the grid's value until the first policy exists
        state["random_return"], state["eval_steps"] = random_policy_return(task, evaluation_seeds, config.seed)
    bar = tqdm(total=config.real_steps, initial=state["real_steps"], unit="step", desc=f"run {task.name}",
               disable=not progress, file=sys.stderr)
    try:
        while state["real_steps"] < config.real_steps:
            round_index = state["round"]
            # A key of this run and round: seed 0's round 1 never draws what seed 1's round 0 does.
            round_key = jax.random.fold_in(key, round_index)
            # Per-round generators, so a resumed run draws what an uninterrupted one would.
            rng = np.random.default_rng([config.seed, round_index])
            behaviour = RandomPolicy(task.action_space) if policy is None else _explorer(policy, model, config.explore)
            wanted = config.first_random_steps if policy is None else config.steps_per_round
            remaining = config.real_steps - state["real_steps"]
            new = record_episodes(
                task, behaviour, reset_seeds(config.seed, wanted + 1, ONLINE_ROUND_STREAM + round_index),
                num_envs=1, rng=rng, max_steps=remaining, min_steps=min(wanted, remaining), progress=False,
            )
            if traces_path.exists():
                append_traces(traces_path, new)
                episodes = read_traces(traces_path).episodes
            else:
                # Arrow: each round's append writes only that round's episodes.
                write_traces(traces_path, new, task, data_format="arrow", algorithm_name="dreamer run")
                episodes = new
            state["real_steps"] += new.num_steps
            bar.update(new.num_steps)

            learned = learn_round(config, task, episodes, model, policy, state.get("halt_reward"), round_key,
                                  config.out, progress)
            model, policy, state["halt_reward"], fit, dream = learned

            evaluation = record_episodes(
                task, acting_policy(policy.actor, model), evaluation_seeds, num_envs=config.eval_episodes,
                progress=False
            )
            state["eval_steps"] += evaluation.num_steps
            returns = evaluation.returns()
            # In force from here until the next round ends: the protocol's grid reads it.
            state["policies"].append({"real_steps": state["real_steps"], "mean_return": float(returns.mean())})
            state["round"] = round_index + 1
            state["episodes"] = episodes.num_episodes
            metrics = {
                "real_return": float(returns.mean()),
                "real_return_std": float(returns.std()),
                "deployed_return": float(new.returns().mean()),
                "dream_return": dream["dream_return"],
                "world_model_validation_loss": fit.validation_loss,
                "world_model_updates": fit.updates,
                "episodes": episodes.num_episodes,
                "eval_steps": state["eval_steps"],
                "wall_seconds": time.perf_counter() - started,
                **{f"dream/{name}": value for name, value in dream.items()},
            }
            run.log(state["real_steps"], metrics)
            bar.set_postfix(real_return=f"{returns.mean():.1f}")
            save_model(config.out, model, {**task.record(), "traces": str(traces_path.absolute()),
                                           "split": split_record(config.split_seed, config.fractions)})
            # The round's world model sits in the same checkpoint as the policy and progress,
            # so a resumed run never pairs one round's model with another round's policy.
            run.save(manager, state["real_steps"], learner_checkpoint(model, policy, progress=state))
    finally:
        bar.close()
        manager.close()

    save_policy(config.out, policy.actor, task, {"trained_by": "dreamer run", "traces": str(Path(config.out, "traces").absolute()),
                                                 "split": split_record(config.split_seed, config.fractions)},
                world_model=model)
    summary = summarise(state, config, task.reward_threshold, time.perf_counter() - started)
    run.write_summary(summary)
    return summary


def summarise(state: dict, config: RunConfig, threshold: float | None, wall_seconds: float) -> dict:
    """The run's figures through the evaluation protocol: budget used, final return, and
    from when the threshold held."""
    policies = state["policies"]
    evaluations = on_grid(policies, config.real_steps, config.eval_every, state["random_return"])
    final = policies[-1]["mean_return"] if policies else state["random_return"]
    return {
        "real_steps": state["real_steps"],
        "eval_steps": state["eval_steps"],
        "wall_seconds": wall_seconds,
        "rounds": state["round"],
        **protocol_summary(evaluations, final, threshold),
    }


def outcome_text(summary: dict, eval_episodes: int, out: str) -> str:
    """The closing lines of a training command: final return, threshold, where it wrote."""
    reached = summary["steps_to_threshold"]
    return (
        f"final mean return over {eval_episodes} fresh seeds: {summary['final_mean_return']:.1f}"
        + (f"; threshold {summary['reward_threshold']} held from {reached} real steps" if reached is not None else "")
        + f"\nwrote {out}"
    )


def _explorer(policy: PolicyInDreams, model, explore: str):
    if explore == "sample":
        return acting_policy(policy.actor, model, mode="sample")
    return acting_policy(policy.actor, model, mode="noisy", noise=float(explore.split(":", 1)[1]))
