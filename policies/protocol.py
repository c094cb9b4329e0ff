"""The evaluation protocol every arm of a comparison is measured with, in one place.

An arm is evaluated on a grid of real steps, ``s = k * every`` for ``k = 0, 1, ...`` up to
its budget. The value at ``s`` is the mean return, on the same fresh reset seeds for every
arm, of the deterministic policy *in force* at real step ``s``: the one trained from the
experience of the last learning step that ended at or before ``s`` (the random policy's
return before the arm has learned anything). Evaluating on one grid means neither arm's
crossing is rounded to a coarser grid than the other's.

"Real steps to the threshold" is the first grid point from which every later evaluation
holds the threshold, with at least `MIN_LATER_EVALUATIONS` later evaluations and the last
one at no less than twice that many real steps: a crossing at the very end of a run, with
nothing after it to show that it holds, does not count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.recording import RandomPolicy, record_episodes
from tasks.registry import Task

MIN_LATER_EVALUATIONS = 5
DEFAULT_EVAL_EVERY = 200
# Locomotion episodes last up to 1,000 steps: ten of them every 200 real steps would cost
# more than the learning does, so those tasks are evaluated every 1,000 (as MBPO is).
EVAL_EVERY = {"hopper": 1000, "halfcheetah": 1000}
EVAL_EVERY_HELP = "the evaluation grid's spacing in real steps (default: 1000 for hopper and halfcheetah, 200 otherwise)"
BUDGET_EVALUATIONS = 3  # an arm's return at its budget: the mean of its last this many evaluations


def grid_presets() -> dict[str, dict]:
    """Per-task presets of a config's ``eval_every`` (`dreamer.config.with_presets`)."""
    return {task: {"eval_every": every} for task, every in EVAL_EVERY.items()}


def grid(budget: int, every: int) -> list[int]:
    """The real steps an arm is evaluated at: ``0, every, 2 * every, ...`` up to ``budget``."""
    if every < 1:
        raise ValueError(f"the evaluation grid needs a positive step, got {every}")
    return list(range(0, budget + 1, every))


def random_policy_return(task: Task, evaluation_seeds: Sequence[int], seed: int) -> tuple[float, int]:
    """The uniformly random policy's mean return on the evaluation seeds, and the real steps it took.

    Every arm's grid starts with this value (no arm has a policy at real step 0), and the
    same seeds and generator give every arm of a seed the same value.
    """
    episodes = record_episodes(task, RandomPolicy(task.action_space), evaluation_seeds, num_envs=len(evaluation_seeds),
                               rng=np.random.default_rng([seed, len(evaluation_seeds)]), progress=False)
    return float(episodes.returns().mean()), episodes.num_steps


def covers(start: int, stop: int, every: int) -> bool:
    """Whether a grid point lies in ``[start, stop)``: a policy in force there must be evaluated."""
    first = -(-start // every) * every
    return first < stop


def on_grid(changes: list[dict], budget: int, every: int, random_return: float) -> list[dict]:
    """The evaluation at every grid point, from the evaluations of the policies in force.

    Args:
        changes: in order, ``{"real_steps", "mean_return"}`` for each policy the arm
            produced, where ``real_steps`` is the step from which it is in force (the
            experience it learned from). A policy that no grid point sees may be left out.
        budget: the arm's real-step budget, the grid's end.
        every: grid spacing in real steps.
        random_return: the random policy's mean return on the same evaluation seeds, in
            force before the first policy.

    Returns:
        ``{"real_steps", "mean_return"}`` at every point of `grid`.
    """
    evaluations, index, value = [], 0, random_return
    for point in grid(budget, every):
        while index < len(changes) and changes[index]["real_steps"] <= point:
            value = changes[index]["mean_return"]
            index += 1
        evaluations.append({"real_steps": point, "mean_return": float(value)})
    return evaluations


def steps_to_threshold(evaluations: list[dict], threshold: float | None,
                       min_later: int = MIN_LATER_EVALUATIONS) -> int | None:
    """The first grid point from which the threshold holds for good, or None.

    Every evaluation from that point on is at or above ``threshold``, at least
    ``min_later`` evaluations follow it, and the last is at twice its real steps or more.
    """
    if threshold is None or not evaluations:
        return None
    holds_from = len(evaluations)
    for index in range(len(evaluations) - 1, -1, -1):
        if evaluations[index]["mean_return"] < threshold:
            break
        holds_from = index
    if holds_from == len(evaluations):
        return None
    steps = evaluations[holds_from]["real_steps"]
    later = len(evaluations) - 1 - holds_from
    if later < min_later or evaluations[-1]["real_steps"] < 2 * steps:
        return None
    return int(steps)


def lost_after_reaching(evaluations: list[dict], threshold: float | None) -> bool:
    """Whether the run was at or above the threshold at some point and fell below it later."""
    if threshold is None:
        return False
    reached = False
    for evaluation in evaluations:
        if evaluation["mean_return"] >= threshold:
            reached = True
        elif reached:
            return True
    return False


def return_at_budget(evaluations: list[dict]) -> float | None:
    """The mean of the last `BUDGET_EVALUATIONS` evaluations: a run's return at its budget,
    less at the mercy of one evaluation than the final one alone (None without any)."""
    if not evaluations:
        return None
    return float(np.mean([evaluation["mean_return"] for evaluation in evaluations[-BUDGET_EVALUATIONS:]]))


def protocol_summary(evaluations: list[dict], final_mean_return: float, threshold: float | None) -> dict:
    """The protocol's figures of one run, as every arm's summary and run record keep them."""
    return {
        "final_mean_return": final_mean_return,
        "reward_threshold": threshold,
        "steps_to_threshold": steps_to_threshold(evaluations, threshold),
        "lost_after_reaching": lost_after_reaching(evaluations, threshold),
        "return_at_budget": return_at_budget(evaluations),
        "evaluations": evaluations,
    }
