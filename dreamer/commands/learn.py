"""``dreamer learn`` and ``dreamer history``: learning on the job from trace files in rounds.

``learn --run RUN --traces T`` learns one round from a new batch of deployment traces and
saves the next policy version; ``learn --run RUN --rollback N`` makes version N the
latest again. ``history --run RUN`` says what every round changed (`dreamer.learning`).
"""

from __future__ import annotations

from dreamer.learning import ERROR_HORIZON, LearnConfig, learn
from policies.versions import read_rounds
from tasks.config import config, option
from tasks.errors import InputError

__all__ = ["LearnConfig", "HistoryConfig", "run", "history"]


def run(config: LearnConfig) -> tuple[dict, str]:
    return learn(config)


@config
class HistoryConfig:
    run: str = option(help="run directory made by `dreamer learn`")
    seed: int = option(0, help="accepted for uniformity; history draws no random numbers")


def history(config: HistoryConfig) -> tuple[dict, str]:
    try:
        record = read_rounds(config.run)
    except ValueError as error:
        raise InputError(config.run, str(error)) from None
    rounds = record["rounds"]
    summary = {"rounds": rounds, "latest_version": record["latest_version"], "rollbacks": record.get("rollbacks", [])}
    return summary, _table(rounds, record)


def _table(rounds: list[dict], record: dict) -> str:
    number = lambda value, digits: "-" if value is None else f"{value:.{digits}f}"  # noqa: E731
    lines = [f"{'round':>5} {'version':>7} {'parent':>6} {'+episodes':>9} {'+steps':>7} {'new err':>8} "
             f"{'changed':>7} {'dream':>8} {'real':>8}  held-out error by origin (forgetting *)"]
    for entry in rounds:
        errors = " ".join(f"{origin}:{number(error, 2)}{'*' if origin in entry['forgetting'] else ''}"
                          for origin, error in entry["heldout_obs_rmse_by_origin"].items())
        parent = entry["parent_version"]
        lines.append(
            f"{entry['round']:>5} {entry['policy_version']:>7} {'-' if parent is None else parent:>6} "
            f"{entry['episodes_added']:>9} {entry['steps_added']:>7} "
            f"{number(entry['new_batch_obs_rmse_before_update'], 3):>8} "
            f"{_change(entry):>7} {number(entry['dream_return'], 1):>8} "
            f"{number(entry['real_return'], 1):>8}  {errors}")
    lines.append(f"errors: open-loop observation RMSE at {ERROR_HORIZON} steps in round 1's training std units; "
                 f"changed: the new batch lay outside what the model knew (yes), from a changed plant (plant); "
                 f"latest version: {record['latest_version']}")
    for rollback in record.get("rollbacks", []):
        lines.append(f"after round {rollback['after_round']}: rolled back from version {rollback['from']} "
                     f"to {rollback['to']}")
    return "\n".join(lines)


def _change(entry: dict) -> str:
    if entry.get("plant_changed"):
        return "plant"
    return "yes" if entry["world_changed"] else "no"
