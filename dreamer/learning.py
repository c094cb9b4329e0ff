"""Learning on the job from trace files: one round per batch of deployment traces.

    RUN/config.yaml            the run's settings, fixed for the run
    RUN/traces/                every episode learned from (Arrow; each round appends its batch)
    RUN/rounds.json            each round's record and the latest version: a round counts
                               once this file (written atomically) names it
    RUN/versions/N/            round N's policy (policy.json, policy.stablehlo) and world model
    RUN/checkpoints/learner/N  round N's world model and policy training state, to go on from
    RUN/report.png             held-out model error per round of origin, returns per round

A round adds the batch's episodes that the run does not hold yet (same content hash,
same episode) to the store, refits the world model warm on all training episodes and
trains the policy further in its dreams from the parent version (`dreamer.rounds.
learn_round`, which `dreamer run` calls too), then saves version N with its figures.
There is no environment to correct the model, so dreams are penalised by the model's
disagreement and halted where it runs high, as `dreamer dream` does.

Held-out episodes (by content hash, so each keeps its split forever) are never learned
from. Before refitting, the current model's error on the new batch is compared with its
error on the old rounds' held-out episodes: well above it, the traces lie outside what
the model knew (``world_changed``). That is either a new behaviour (new states of the
same plant) or a changed plant (the states the model knew now move differently); the
model's one-step error on the new steps from states it knew tells them apart. After a
changed plant (``plant_changed``) the model's world starts over by default: it is fitted,
and dreams start, only on episodes from that round on (the old ones stay in the store; a
model fitted on two plants at once predicts neither). After refitting, the error on each
round's held-out episodes is measured again, in the units of round 1's training standard
deviations, and a rise above its first measurement is flagged as forgetting.

A round killed at any point leaves the previous one intact: the next call undoes what
the killed round wrote (store episodes, version folder, checkpoint) before it starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np
import orbax.checkpoint as ocp

from dreamer.actor_critic import DreamConfig, dream_mesh
from dreamer.heldout import dream_returns
from dreamer.learning_report import plot_rounds
from dreamer.rounds import learn_round, learner_checkpoint, restore_learner
from policies.acting import ActorPolicy
from policies.saving import save_policy
from policies.versions import ROUNDS_FILE, VERSIONS_DIR, is_versioned, read_rounds
from tasks.config import config, option
from tasks.episodes import NO_POLICY_VERSION, Episodes
from tasks.errors import InputError
from tasks.recording import EVALUATION_STREAM, record_episodes, reset_seeds
from tasks.registry import Task, check_spaces_match, task_from_record
from tasks.locks import exclusive_lock
from tasks.run_directory import CONFIG_FILE, LOCK_FILE, PENDING_FILE, RunDirectory
from tasks.splits import SplitFractions, fitting_episodes, split_of, split_record
from tasks.traces import (
    Traces,
    append_traces,
    keep_first_episodes,
    read_traces,
    remove_path,
    write_atomically,
    write_traces,
)
from worldmodel.ensemble import EnsembleConfig
from worldmodel.fidelity import observation_scale, one_step_errors, open_loop_squared_errors
from worldmodel.fit import FitConfig
from worldmodel.saving import save_model
from worldmodel.sharding import DEVICES_HELP

# Where the run is, one call's input and the devices it runs on: not its settings (a run may move).
PER_CALL_FIELDS = ("run", "traces", "rollback", "devices")
ERROR_HORIZON = 15  # open-loop steps at which held-out model error is measured
FORGETTING_FACTOR = 1.1  # an old round's held-out error above this times its first measurement
WORLD_CHANGED_FACTOR = 2.0  # new-batch error above this times the old held-out error
KNOWN_DISAGREEMENT_QUANTILE = 0.9  # a new step is in a known state below this quantile of old held-out disagreement
MIN_KNOWN_STEPS = 100  # fewer new steps in known states tell nothing about the plant
REPORT_FILE = "report.png"


@config
class LearnConfig:
    # `learn` refits an ensemble: its known-state check reads single observations.
    model = "ensemble"
    rssm = None

    run: str = option(help="run directory of the job (the first `learn` makes it)")
    traces: str | None = option(None, help="trace location of the new batch (a dataset folder, its data/, or an id)")
    rollback: int | None = option(None, min=1, help="make version N the latest again instead of learning "
                                                     "(deletes nothing; the next round's parent is N)")
    ensemble: EnsembleConfig = option(EnsembleConfig(hidden_size=128, hidden_layers=3), help="world model settings")
    fit: FitConfig = option(FitConfig(max_updates=2000, updates_per_call=250, patience=4),
                            help="refit per round (warm from the parent version)")
    dream: DreamConfig = option(DreamConfig(uncertainty_penalty=1.0), help="policy training in dreams")
    halt_multiple: float = option(2.0, min=0, help="halt a dream where disagreement exceeds this multiple of the "
                                                   "largest on round 1's real training transitions (0 disables)")
    dream_updates: int = option(1000, min=1, help="actor-critic updates per round (warm from the parent version)")
    validation_fraction: float = option(0.1, min=0, max=1, help="share of episodes kept for early stopping of the refit")
    heldout_fraction: float = option(0.2, min=0, max=1, help="share of episodes kept out of all learning, forever")
    split_seed: int = option(0, help="seed of the episode-content hash that assigns splits")
    eval_episodes: int = option(10, min=0, help="the new version's real return from this many fresh reset seeds "
                                                "after each round (measurement only; 0 where the task's "
                                                "environment cannot run here)")
    after_world_change: Literal["new-world-only", "all-data"] = option(
        "new-world-only", help="once a round's traces show a changed plant (plant_changed: outside what the model "
                               "knew, and moving differently even from states it knew), fit and dream only on "
                               "episodes from that round on ('new-world-only': old episodes describe a world that "
                               "is gone), or go on with all of them")
    devices: int | None = option(None, min=1, help=DEVICES_HELP)
    seed: int = option(0, help="seed of the networks, the dreams and the evaluation seeds")

    def __post_init__(self):
        if (self.traces is None) == (self.rollback is None):
            raise ValueError("pass --traces (learn a round) or --rollback N (make version N the latest), not both")
        if self.validation_fraction + self.heldout_fraction >= 1:
            raise ValueError("validation_fraction and heldout_fraction must leave a share for training")
        if self.halt_multiple > 0 and self.dream.gamma >= 1:
            raise ValueError("halting (--halt-multiple above 0) needs --dream.gamma below 1")

    @property
    def fractions(self) -> SplitFractions:
        return SplitFractions.rest_for_training(self.validation_fraction, self.heldout_fraction)


def learn(config: LearnConfig, progress: bool | None = None) -> tuple[dict, str]:
    """Learn one round from ``config.traces``, or roll back; returns the summary and its text."""
    run = Path(config.run)
    _check_made_by_learn(run)
    if config.rollback is not None:
        return roll_back(run, config)
    progress = sys.stderr.isatty() if progress is None else progress
    started = time.perf_counter()
    dream_mesh(config.devices, config.dream)  # refuses devices or a batch they cannot split, before the run is touched
    batch = read_traces(config.traces)
    with RunDirectory(run, config, resume=(run / CONFIG_FILE).exists(), per_call=PER_CALL_FIELDS) as run_dir:
        manager = ocp.CheckpointManager(run_dir.checkpoint_path / "learner", options=ocp.CheckpointManagerOptions(
            max_to_keep=None, create=True, enable_async_checkpointing=False))
        try:
            return _learn_round(config, run_dir, manager, batch, started, progress)
        finally:
            manager.close()


def _learn_round(config: LearnConfig, run_dir: RunDirectory, manager: ocp.CheckpointManager, batch: Traces,
                 started: float, progress: bool) -> tuple[dict, str]:
    run = run_dir.path
    record = read_rounds(run) if is_versioned(run) else None
    rounds = record["rounds"] if record else []
    task = _task_for(record, batch, config.traces)
    store = run / "traces"
    stored, undone = _undo_unfinished_round(run, manager, store, rounds)

    stored_ids = stored.content_ids() if stored is not None else []
    known = set(stored_ids)
    fresh_ids, fresh_indices = [], []
    for index, content in enumerate(batch.episodes.content_ids()):
        if content not in known:
            known.add(content)
            fresh_ids.append(content)
            fresh_indices.append(index)
    duplicates = batch.episodes.num_episodes - len(fresh_indices)
    if not fresh_indices:
        summary = {"run": str(run), "round": None, "episodes_added": 0, "steps_added": 0,
                   "duplicates_skipped": duplicates, "latest_version": record["latest_version"] if record else None}
        return summary, (f"nothing new in {config.traces}: its {duplicates} episodes are all in the run already; "
                         f"no round was learned")
    fresh = batch.episodes.select(fresh_indices)

    version = len(rounds) + 1
    parent = record["latest_version"] if record else None
    key = jax.random.fold_in(jax.random.key(config.seed), version)
    error_key, dream_key, round_key = jax.random.split(key, 3)
    stored_origins = _origins(rounds)
    world_since = rounds[-1]["world_since_round"] if rounds else 1  # the round the model's world began with
    stored_heldout = _heldout_mask(stored_ids, config)

    model = policy = None
    new_error = old_error = known_ratio = None
    if parent is not None:
        halting = record["halting"]
        dream_settings = dataclasses.replace(config.dream, halt_threshold=halting["threshold"],
                                             halt_reward=halting["reward"])
        model, policy = restore_learner(manager, parent, task, config, dream_settings, stored)
        scale = np.asarray(record["observation_scale"])
        # Before the update: does the current model know where the new traces lie?
        new_error = _pooled_error(model, fresh, scale, error_key)
        known_heldout = stored_heldout & (stored_origins >= world_since)
        if known_heldout.any():
            old_heldout = stored.select(np.flatnonzero(known_heldout))
            old_error = _pooled_error(model, old_heldout, scale, error_key)
            known_ratio = _known_state_error_ratio(model, fresh, old_heldout, scale, error_key)
    world_changed = bool(new_error is not None and old_error is not None
                         and new_error > WORLD_CHANGED_FACTOR * old_error)
    # New traces outside what the model knew may come from a new behaviour (new states,
    # same plant: keep learning from everything) or a changed plant (the states it knew
    # now move differently). Only the second starts the model's world over.
    plant_changed = bool(world_changed and known_ratio is not None and known_ratio > WORLD_CHANGED_FACTOR)
    if plant_changed and config.after_world_change == "new-world-only":
        world_since = version

    write_started = time.perf_counter()
    if stored is None:
        write_traces(store, fresh, task, data_format="arrow", algorithm_name="dreamer learn")
        episodes = fresh
    else:
        append_traces(store, fresh)
        episodes = stored.concatenate(fresh)
    store_seconds = time.perf_counter() - write_started

    origins = np.concatenate([stored_origins, np.full(fresh.num_episodes, version)])
    current = origins >= world_since
    world = episodes if current.all() else episodes.select(np.flatnonzero(current))
    learned = learn_round(config, task, world, model, policy, None, round_key, str(run), progress,
                          halt_multiple=config.halt_multiple)
    model, policy = learned.model, learned.policy
    if record is None:
        train, _ = fitting_episodes(episodes, config.split_seed, config.fractions)
        scale = observation_scale(train)  # round 1's training spread: the run's units of model error

    heldout = np.concatenate([stored_heldout, _heldout_mask(fresh_ids, config)])
    heldout_episodes = episodes.select(np.flatnonzero(heldout)) if heldout.any() else None
    by_origin = _errors_by_origin(model, heldout_episodes, origins[heldout], version, scale, error_key)
    # A rise on rounds of an earlier world is what leaving it means, not forgetting.
    forgetting = [origin for origin, error in by_origin.items() if world_since <= int(origin) < version
                  and _rose(error, rounds[int(origin) - 1]["heldout_obs_rmse_by_origin"].get(origin))]
    actor = policy.actor
    dream_return = None
    if (heldout & current).any():
        starts = episodes.select(np.flatnonzero(heldout & current)).first_observations()
        dream_return = float(dream_returns(model, actor, starts, task.horizon, dream_key).mean())
    real_return = None
    deployed = batch.task or task  # the plant the newest traces come from (its --env-kwargs included)
    if config.eval_episodes > 0:
        seeds = reset_seeds(config.seed, config.eval_episodes, EVALUATION_STREAM)
        real_return = float(record_episodes(deployed, ActorPolicy(actor), seeds, num_envs=min(len(seeds), 16),
                                            progress=False).returns().mean())

    round_record = {
        "round": version,
        "policy_version": version,
        "parent_version": parent,
        "traces": str(batch.dataset_path),
        "traces_task": batch.task.record() if batch.task is not None else None,
        "episodes_added": fresh.num_episodes,
        "steps_added": fresh.num_steps,
        "duplicates_skipped": duplicates,
        "episodes_total": episodes.num_episodes,
        "recorded_by_versions": _recorded_by(fresh),
        "new_batch_obs_rmse_before_update": new_error,
        "old_heldout_obs_rmse_before_update": old_error,
        "world_changed": world_changed,
        "known_state_error_ratio": known_ratio,
        "plant_changed": plant_changed,
        "world_since_round": world_since,
        "heldout_obs_rmse_by_origin": by_origin,
        "forgetting": forgetting,
        "dream_return": dream_return,
        "real_return": real_return,
        "real_return_task": deployed.record() if real_return is not None else None,
        "fit_updates": learned.fit.updates,
        "fit_validation_loss": learned.fit.validation_loss,
        "dream_updates_total": int(policy.state.updates),
        "store_write_seconds": store_seconds,
        "wall_seconds": time.perf_counter() - started,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _save_version(run, version, round_record, model, actor, task, config)
    manager.save(version, args=learner_checkpoint(model, policy))
    manager.wait_until_finished()
    record = record or {"task": task.record(), "observation_scale": scale.tolist(),
                        "halting": {"threshold": policy.config.halt_threshold, "reward": policy.config.halt_reward},
                        "rollbacks": []}
    record = {**record, "latest_version": version, "rounds": [*rounds, round_record]}
    write_atomically(run / ROUNDS_FILE, json.dumps(record, indent=2))  # the round counts from here
    run_dir.commit()
    plot_rounds(record["rounds"], run / REPORT_FILE, task.name)
    summary = {"run": str(run), **round_record, "latest_version": version, "undone_unfinished_episodes": undone}
    return summary, _round_text(summary, config.traces, run)


def roll_back(run: Path, config: LearnConfig) -> tuple[dict, str]:
    """Make version ``config.rollback`` the latest again; the next round's parent is it."""
    if not is_versioned(run):
        raise InputError(run, f"holds no rounds to roll back (no {ROUNDS_FILE}: not a run made by `dreamer learn`)")
    # The run's lock, not its settings: a rollback needs none of them.
    with exclusive_lock(run / LOCK_FILE, run, what="is in use by another process (a round is being learned)"):
        record = read_rounds(run)
        versions = [entry["policy_version"] for entry in record["rounds"]]
        if config.rollback not in versions:
            raise InputError(run, f"has no policy version {config.rollback} (versions {versions[0]}-{versions[-1]} exist)")
        previous = record["latest_version"]
        rollback = {"from": previous, "to": config.rollback, "after_round": len(record["rounds"]),
                    "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        record = {**record, "latest_version": config.rollback, "rollbacks": [*record.get("rollbacks", []), rollback]}
        write_atomically(run / ROUNDS_FILE, json.dumps(record, indent=2))
    summary = {"run": str(run), "latest_version": config.rollback, "previous_latest_version": previous}
    return summary, (f"version {config.rollback} is the latest again (was {previous}); nothing was deleted, "
                     f"and the next round goes on from version {config.rollback}")


def _check_made_by_learn(run: Path) -> None:
    if run.exists() and not run.is_dir():
        raise InputError(run, "is a file, not a run directory")
    made_by_another = (run / CONFIG_FILE).exists() and not (run / PENDING_FILE).exists() and not is_versioned(run)
    if made_by_another:
        raise InputError(run, f"is not a run directory made by `dreamer learn` (no {ROUNDS_FILE}); choose another --run")


def _task_for(record: dict | None, batch: Traces, traces: str) -> Task:
    """The run's task (from round 1's traces), checked against the new batch."""
    if record is None:
        if batch.task is None:
            raise InputError(traces, "names no task; record it with `dreamer collect`, or import it with "
                                     "`dreamer traces import --task NAME`")
        return batch.task
    task = task_from_record(record["task"])
    # Another plant setting (--env-kwargs) is what `world_changed` is for; another environment is an error.
    if batch.task is not None and batch.task.env_id != task.env_id:
        raise InputError(traces, f"holds traces of {batch.task.name} ({batch.task.env_id}), but this run learns "
                                 f"{task.name} ({task.env_id})")
    check_spaces_match(task, batch.observation_space, batch.action_space, traces)
    return task


def _undo_unfinished_round(run: Path, manager: ocp.CheckpointManager, store: Path,
                           rounds: list[dict]) -> tuple[Episodes | None, int]:
    """Remove what a killed round wrote past the last recorded one; returns the store's
    episodes and how many episodes were removed."""
    recorded = {entry["policy_version"] for entry in rounds}
    for step in manager.all_steps():
        if step not in recorded:
            manager.delete(step)
    versions = run / VERSIONS_DIR
    if versions.is_dir():
        for folder in versions.iterdir():
            if not (folder.name.isdigit() and int(folder.name) in recorded):
                remove_path(folder)
    if not store.exists():
        return None, 0
    stored = read_traces(store).episodes
    expected = rounds[-1]["episodes_total"] if rounds else 0
    if stored.num_episodes <= expected:
        return stored, 0
    if not rounds:  # round 1 was killed after writing the store: the run holds no episode yet
        remove_path(store)
        return None, stored.num_episodes
    return keep_first_episodes(store, expected), stored.num_episodes - expected


def _origins(rounds: list[dict]) -> np.ndarray:
    """The round each stored episode was added in, in store order."""
    return np.repeat([entry["round"] for entry in rounds], [entry["episodes_added"] for entry in rounds]).astype(int)


def _heldout_mask(content_ids: list[str], config: LearnConfig) -> np.ndarray:
    return np.array([split_of(content, config.split_seed, config.fractions) == "heldout" for content in content_ids],
                    dtype=bool)


def _pooled_error(model, episodes: Episodes, scale: np.ndarray, key: jax.Array) -> float | None:
    """The model's open-loop observation RMSE at `ERROR_HORIZON` over all of ``episodes``."""
    squared, valid = open_loop_squared_errors(model, episodes, scale, ERROR_HORIZON, key)
    return float(np.sqrt(squared[valid].mean())) if valid.any() else None


def _known_state_error_ratio(model, fresh: Episodes, old_heldout: Episodes, scale: np.ndarray,
                             key: jax.Array) -> float | None:
    """The model's one-step error on the new batch's steps from states and actions it knew
    (disagreement no higher than on most old held-out steps), over its error on the old
    held-out steps; None where too few new steps lie in known states to tell."""
    old_error, old_disagreement = one_step_errors(model, old_heldout, scale, key)
    new_error, new_disagreement = one_step_errors(model, fresh, scale, key)
    known = new_disagreement <= np.quantile(old_disagreement, KNOWN_DISAGREEMENT_QUANTILE)
    if known.sum() < MIN_KNOWN_STEPS or old_error.mean() <= 0:
        return None
    return float(np.sqrt(new_error[known].mean() / old_error.mean()))


def _errors_by_origin(model, heldout: Episodes | None, origins: np.ndarray, rounds: int, scale: np.ndarray,
                      key: jax.Array) -> dict[str, float | None]:
    """Held-out open-loop error at `ERROR_HORIZON` per round of origin (None: no held-out episode)."""
    errors: dict[str, float | None] = {str(origin): None for origin in range(1, rounds + 1)}
    if heldout is None:
        return errors
    squared, valid = open_loop_squared_errors(model, heldout, scale, ERROR_HORIZON, key)
    window_origins = np.repeat(origins, heldout.lengths)
    for origin in np.unique(origins):
        chosen = valid & (window_origins == origin)
        errors[str(origin)] = float(np.sqrt(squared[chosen].mean())) if chosen.any() else None
    return errors


def _rose(error: float | None, first: float | None) -> bool:
    """Whether an old round's held-out error rose above `FORGETTING_FACTOR` times its first measurement."""
    return error is not None and first is not None and error > FORGETTING_FACTOR * first


def _recorded_by(episodes: Episodes) -> dict[str, int]:
    """How many episodes each policy version recorded (``none``: no version of this run's)."""
    names = ["none" if v == NO_POLICY_VERSION else str(v) for v in episodes.policy_versions.tolist()]
    return {name: names.count(name) for name in dict.fromkeys(names)}


def _save_version(run: Path, version: int, round_record: dict, model, actor, task: Task, config: LearnConfig) -> None:
    """Write ``RUN/versions/N`` whole: built in a hidden folder, then renamed into place."""
    staging = run / VERSIONS_DIR / f".{version}-writing"
    remove_path(staging)
    staging.mkdir(parents=True)
    provenance = {"trained_by": "dreamer learn", "policy_version": version,
                  "parent_version": round_record["parent_version"], "traces": str((run / "traces").absolute()),
                  "split": split_record(config.split_seed, config.fractions)}
    save_policy(staging, actor, task, provenance)
    save_model(staging, model, {**task.record(), **provenance})
    (staging / "round.json").write_text(json.dumps(round_record, indent=2))
    final = run / VERSIONS_DIR / str(version)
    remove_path(final)
    staging.rename(final)


def _round_text(summary: dict, traces: str, run: Path) -> str:
    units = "round-1 training std units"
    lines = [f"round {summary['round']}: added {summary['episodes_added']} episodes ({summary['steps_added']} steps) "
             f"from {traces}" + (f"; {summary['duplicates_skipped']} already in the run" if summary['duplicates_skipped'] else "")]
    if summary["undone_unfinished_episodes"]:
        lines.append(f"undid a round that did not finish ({summary['undone_unfinished_episodes']} episodes removed "
                     f"from the store; learn their traces again)")
    new, old = summary["new_batch_obs_rmse_before_update"], summary["old_heldout_obs_rmse_before_update"]
    if new is not None:
        seen = ("the new traces lie outside what the model knew (a new behaviour or a changed plant)"
                if summary["world_changed"] else "within what the model knew")
        if summary["plant_changed"]:
            seen += (f"; the plant itself changed (one-step error {summary['known_state_error_ratio']:.1f}x "
                     f"in states the model knew)")
        if summary["plant_changed"] and summary["world_since_round"] == summary["round"]:
            seen += f"; from now on the model learns from round {summary['round']}'s episodes on"
        lines.append(f"before the update: model error {new:.3f} on the new batch vs "
                     f"{'-' if old is None else f'{old:.3f}'} on old rounds' held-out episodes ({units}): {seen}")
    errors = ", ".join(f"{origin}: {'-' if error is None else f'{error:.3f}'}"
                       for origin, error in summary["heldout_obs_rmse_by_origin"].items())
    flagged = ", ".join(summary["forgetting"]) or "none"
    lines.append(f"held-out error at {ERROR_HORIZON} steps by round of origin ({units}): {errors}; "
                 f"forgetting: {flagged}")
    dream = "-" if summary["dream_return"] is None else f"{summary['dream_return']:.1f}"
    real = "" if summary["real_return"] is None else f"; real return {summary['real_return']:.1f} on fresh seeds"
    parent = summary["parent_version"]
    lines.append(f"version {summary['policy_version']} (parent {parent if parent is not None else 'none'}): "
                 f"dream return {dream}{real}")
    lines.append(f"wrote {run / VERSIONS_DIR / str(summary['policy_version'])} (the latest version)")
    return "\n".join(lines)
