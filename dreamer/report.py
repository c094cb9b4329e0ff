"""The comparison report: a saved results.json drawn as report.md and PNG plots.

``dreamer compare`` runs the arms (dream-trained, real-trained, maybe offline) over
several seeds and keeps everything it measured in results.json; this module reads only
that file, so a report can be redrawn, restyled or checked without re-running anything.
Each arm is summarised over its seeds by the interquartile mean with a bootstrap interval,
beside every seed's own value, never by a best seed.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np

from dreamer.seed_statistics import iqm_with_interval, probability_of_fewer_with_interval
from tasks.errors import InputError
from worldmodel.fidelity import plot_fidelity

RESULTS_FORMAT = 1
REQUIRED_KEYS = ("format", "task", "arms")
FIDELITY_HORIZONS = (1, 5, 10, 15, 25, 50)
LEARNING_CURVES = "learning_curves.png"
DREAM_VS_REAL = "dream_vs_real.png"
WORLD_MODEL_ERROR = "world_model_error.png"
REPORT = "report.md"


def load_results(path: str | os.PathLike) -> dict:
    """A results.json as a dict, or an `InputError` naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such results file (`dreamer compare` writes one)")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid JSON ({str(error).splitlines()[0]})") from None
    if not isinstance(results, dict):
        raise InputError(path, "not a results object (expected a JSON mapping)")
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        raise InputError(path, f"not a comparison results file: missing {', '.join(missing)}")
    if results["format"] != RESULTS_FORMAT:
        raise InputError(path, f"unknown results format {results['format']!r} "
                               f"(this version reads format {RESULTS_FORMAT})")
    arms = results["arms"]
    if not isinstance(arms, list) or not arms:
        raise InputError(path, "'arms' must be a non-empty list")
    for arm in arms:
        if not isinstance(arm, dict) or "name" not in arm or not isinstance(arm.get("runs"), list):
            raise InputError(path, "every arm needs a 'name' and a list of 'runs'")
    return results


def arm_summary(arm: dict, threshold: float | None, eval_every: int | None = None) -> dict:
    """One arm over its seeds, through the protocol's statistics.

    Real steps to the threshold: a run that never held it counts as its budget plus one
    grid step (it would have needed more than it had), and the interquartile mean with
    its 95% bootstrap interval is given only when at least three quarters of the runs held
    it (``reached`` says how many did); without a threshold every step figure is null.
    Final return: the interquartile mean over seeds and its interval. Per-seed values are
    always kept, and so is whether a run lost the threshold after reaching it.
    """
    runs = arm["runs"]
    budget = arm.get("budget_real_steps") or 0
    per_seed = [run.get("steps_to_threshold") for run in runs] if threshold is not None else [None] * len(runs)
    reached = sum(steps is not None for steps in per_seed)
    iqm, interval = None, None
    if threshold is not None and runs and reached >= 0.75 * len(runs):
        not_reached = budget + (eval_every or 0)
        iqm, interval = iqm_with_interval([not_reached if steps is None else steps for steps in per_seed])
    final_returns = [run["final_mean_return"] for run in runs if run.get("final_mean_return") is not None]
    final_iqm, final_interval = iqm_with_interval(final_returns) if final_returns else (None, None)
    at_budget = [run["return_at_budget"] for run in runs if run.get("return_at_budget") is not None]
    budget_iqm, budget_interval = iqm_with_interval(at_budget) if at_budget else (None, None)
    wall_seconds = [run["wall_seconds"] for run in runs if run.get("wall_seconds") is not None]
    return {
        "name": arm["name"],
        "label": arm.get("label", arm["name"]),
        "algorithm": arm.get("algorithm"),
        "seeds": [run.get("seed") for run in runs],
        "budget_real_steps": arm.get("budget_real_steps"),
        "fixed_traces": bool(arm.get("fixed_traces")),
        "steps_to_threshold": {
            "iqm": iqm,
            "interval": interval,
            "per_seed": per_seed,
            "reached": reached,
            "runs": len(runs),
            "lost_after_reaching": [bool(run.get("lost_after_reaching")) for run in runs],
        },
        "final_mean_return": {"iqm": final_iqm, "interval": final_interval, "per_seed": final_returns},
        "return_at_budget": {"iqm": budget_iqm, "interval": budget_interval, "per_seed": at_budget},
        "wall_seconds": _spread(wall_seconds),
    }


def headline(results: dict) -> dict:
    """The fraction of the real-trained arm's real experience the dream-trained arm needed.

    ``fraction_of_real_experience`` is the ratio of the arms' interquartile means of real
    steps to the threshold; null when the task has no threshold, an arm is missing, or an
    arm has no IQM (fewer than three quarters of its runs held the threshold).
    ``probability_dream_needs_fewer`` is P(dream < real) over pairs of seeds (runs that
    never held it count as their budget plus one grid step), with its bootstrap interval.
    ``statement`` says it in one sentence.
    """
    threshold = results.get("reward_threshold")
    every = _grid_every(results)
    arms = {arm["name"]: arm_summary(arm, threshold, every) for arm in results["arms"]}
    dream, real = arms.get("dream"), arms.get("real")
    dream_steps = dream["steps_to_threshold"]["iqm"] if dream else None
    real_steps = real["steps_to_threshold"]["iqm"] if real else None
    fraction = dream_steps / real_steps if dream_steps is not None and real_steps else None
    probability, probability_interval = None, None
    if threshold is not None and dream and real and dream["seeds"] and real["seeds"]:
        probability, probability_interval = probability_of_fewer_with_interval(
            _penalised(dream, every), _penalised(real, every))
    return {
        "reward_threshold": threshold,
        "dream_steps_to_threshold": dream_steps,
        "real_steps_to_threshold": real_steps,
        "fraction_of_real_experience": fraction,
        "probability_dream_needs_fewer": probability,
        "probability_interval": probability_interval,
        "statement": _statement(threshold, dream, real, fraction, probability),
    }


def _penalised(summary: dict, every: int | None) -> list[float]:
    not_reached = (summary["budget_real_steps"] or 0) + (every or 0)
    return [not_reached if steps is None else steps for steps in summary["steps_to_threshold"]["per_seed"]]


def _grid_every(results: dict) -> int | None:
    every = (results.get("evaluation") or {}).get("every")
    return every if isinstance(every, int) else None


def render_report(results: dict, out_dir: str | os.PathLike) -> Path:
    """Write report.md and its plots into ``out_dir``; the path of report.md.

    Plots: learning curves always, dream against real return if the results hold a
    held-out check, world-model error against horizon if they hold a fidelity check.
    report.md is written last and whole, so a failed plot leaves no report behind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_files(results)
    plot_learning_curves(results, out / LEARNING_CURVES)
    if DREAM_VS_REAL in plots:
        plot_dream_vs_real(results, out / DREAM_VS_REAL)
    if WORLD_MODEL_ERROR in plots:
        fidelity = results["fidelity"]
        held = fidelity.get("heldout_episodes", "?")
        title = f"{_task_name(results)}: world-model open-loop error on {held} held-out episodes"
        plot_fidelity(fidelity, out / WORLD_MODEL_ERROR, title)

    threshold = results.get("reward_threshold")
    summaries = [arm_summary(arm, threshold, _grid_every(results)) for arm in results["arms"]]
    sections = [
        _title(results),
        f"**Headline.** {headline(results)['statement']}",
        _arms_section(results, summaries),
        _heldout_section(results.get("heldout")),
        _fidelity_section(results.get("fidelity")),
        "## Plots\n\n" + "\n\n".join(f"![{_PLOT_TITLES[file]}]({file})" for file in plots),
        _reproduce_section(results),
    ]
    path = out / REPORT
    partial = out / (REPORT + ".partial")
    partial.write_text("\n\n".join(section for section in sections if section) + "\n")
    partial.replace(path)
    return path


def plot_files(results: dict) -> list[str]:
    """The names of the plots a report of ``results`` has: optional parts are drawn only when present."""
    heldout = results.get("heldout") or {}
    return ([LEARNING_CURVES] + ([DREAM_VS_REAL] if heldout.get("episodes") else [])
            + ([WORLD_MODEL_ERROR] if results.get("fidelity") else []))


def plot_learning_curves(results: dict, path: str | os.PathLike) -> None:
    """Real return against real steps per arm: the IQM over seeds, shaded over its 95% interval.

    The x axis is logarithmic when the arms' budgets differ tenfold or more, so a dream arm
    of a thousand steps stays visible beside a real arm of tens of thousands.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    arms = [arm for arm in results["arms"] if any(run.get("evaluations") for run in arm["runs"])]
    budgets = [arm["budget_real_steps"] for arm in arms if arm.get("budget_real_steps")]
    log_x = len(budgets) > 1 and max(budgets) >= 10 * min(budgets)
    figure, axis = plt.subplots(figsize=(9, 5.5))
    for index, arm in enumerate(arms):
        steps, middle, low, high = _curve_over_seeds(arm["runs"])
        if log_x:
            keep = steps > 0
            steps, middle, low, high = steps[keep], middle[keep], low[keep], high[keep]
        color = _ARM_COLORS.get(arm["name"], f"C{index + 3}")
        seeds = len([run for run in arm["runs"] if run.get("evaluations")])
        label = f"{arm.get('label', arm['name'])} ({seeds} seed{'s' if seeds != 1 else ''})"
        if len(steps) == 1:  # an arm evaluated at one step count has no band to shade
            axis.errorbar(steps, middle, yerr=[middle - low, high - middle], color=color, marker="o",
                          markersize=6, capsize=5, linewidth=2, label=label)
            continue
        axis.plot(steps, middle, color=color, linewidth=2, marker="o", markersize=3, label=label)
        axis.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
    threshold = results.get("reward_threshold")
    if threshold is not None:
        axis.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"task threshold ({threshold:g})")
    if log_x:
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_minor_formatter(NullFormatter())
    axis.xaxis.set_major_formatter(FuncFormatter(lambda steps, _: f"{steps:,.0f}"))
    episodes = (results.get("evaluation") or {}).get("episodes")
    axis.set_xlabel("real environment steps" + (" (log scale)" if log_x else ""))
    axis.set_ylabel(f"mean return over {episodes} evaluation episodes" if episodes else "mean evaluation return")
    axis.set_title(f"{_task_name(results)}: real return while learning\n"
                   "line: interquartile mean over seeds; shaded: its 95% bootstrap interval", fontsize=11)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_dream_vs_real(results: dict, path: str | os.PathLike) -> None:
    """Per held-out episode, the return the dream predicted against the real one.

    Points on the y = x line are episodes the world model predicted exactly. The behaviour
    policy's real returns on the same episodes are ticks along the x axis, so the policy's
    improvement reads left to right; when they lie far from the policy's returns, a second
    panel shows the policy's episodes close up, where the dream-to-real gap is visible.
    """
    plt = _pyplot()
    heldout = results["heldout"]
    episodes = heldout["episodes"]
    real = np.array([e["real_return"] for e in episodes], dtype=float)
    dream = np.array([np.nan if e.get("dream_return") is None else e["dream_return"] for e in episodes], float)
    behaviour = np.array([e["behaviour_return"] for e in episodes if e.get("behaviour_return") is not None], float)
    policy_values = np.concatenate([real, dream[np.isfinite(dream)]])
    everything = _padded_range(np.concatenate([policy_values, behaviour]))
    close_up = _padded_range(policy_values)
    zoom = close_up[1] - close_up[0] < (everything[1] - everything[0]) / 3

    figure, axes = plt.subplots(1, 2 if zoom else 1, figsize=(13, 6.2) if zoom else (7, 6.5), squeeze=False)
    arm, seed = heldout.get("arm", "dream"), heldout.get("seed", "?")
    policy = f"{arm}-trained policy (seed {seed}), one point per episode"
    for axis, limits in zip(axes.flat, [everything, close_up]):
        axis.plot(limits, limits, color="gray", linestyle="--", linewidth=1, label="dream = real")
        axis.scatter(real, dream, color="C0", s=36, zorder=3, label=policy)
        axis.set_xlim(limits)
        axis.set_ylim(limits)
        axis.set_aspect("equal")
        axis.set_xlabel("real return of the episode (replayed from its reset seed)")
        axis.set_ylabel("return predicted in the dream (same start, up to the task horizon)")
        axis.grid(alpha=0.3)
    first = axes.flat[0]
    if len(behaviour):
        first.plot(behaviour, np.full_like(behaviour, 0.035), linestyle="none", marker="|", markersize=14,
                   markeredgewidth=2, color="C3", transform=first.get_xaxis_transform(),
                   label="behaviour policy's real return (ticks)")
        first.axvline(behaviour.mean(), color="C3", linestyle=":", linewidth=1.2,
                      label=f"behaviour policy's mean real return ({behaviour.mean():,.1f})")
    first.legend(loc="best", fontsize=8.5)
    if zoom:
        first.set_title("all held-out returns", fontsize=10)
        axes.flat[1].set_title("close-up of the policy's episodes", fontsize=10)
        axes.flat[1].legend(loc="best", fontsize=8.5)
    separator = " " if zoom else "\n"  # one panel is too narrow for the title on one line
    figure.suptitle(f"{_task_name(results)}: dream-predicted against real return{separator}"
                    f"on {len(episodes)} held-out episodes")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- summaries ---------------------------------------------------------------------------

_ARM_COLORS = {"dream": "C0", "real": "C1", "offline": "C2"}
_ACTING = {"deterministic": "deterministically (its mode)", "sample": "by sampling"}
_PLOT_TITLES = {
    LEARNING_CURVES: "real return against real environment steps",
    DREAM_VS_REAL: "dream-predicted against real return on held-out episodes",
    WORLD_MODEL_ERROR: "world-model error against open-loop horizon",
}


def _curve_over_seeds(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, and the IQM over seeds with its 95% interval at each of them.

    Seeds may be evaluated at different step counts (a round ends with an episode), so
    each seed is interpolated between its own evaluations onto every step any seed was
    evaluated at, and left out beyond its first and last evaluation.
    """
    curves = []
    for run in runs:
        # An arm that evaluates several times at one step count (offline) is shown by its last policy.
        at_step = {e["real_steps"]: e["mean_return"] for e in run.get("evaluations") or []}
        if at_step:
            steps = sorted(at_step)
            curves.append((np.array(steps, dtype=float), np.array([at_step[s] for s in steps], dtype=float)))
    steps = np.unique(np.concatenate([s for s, _ in curves]))
    returns = np.full((len(curves), len(steps)), np.nan)
    for row, (run_steps, run_returns) in zip(returns, curves):
        inside = (steps >= run_steps[0]) & (steps <= run_steps[-1])
        row[inside] = np.interp(steps[inside], run_steps, run_returns)
    middle, low, high = (np.full(len(steps), np.nan) for _ in range(3))
    for column in range(len(steps)):
        present = returns[:, column][np.isfinite(returns[:, column])]
        if len(present):
            middle[column], (low[column], high[column]) = iqm_with_interval(present)
    return steps, middle, low, high


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    pad = 0.06 * (high - low or abs(high) or 1.0)
    return low - pad, high + pad


def _spread(values: list[float]) -> dict:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _statement(threshold: float | None, dream: dict | None, real: dict | None, fraction: float | None,
               probability: float | None) -> str:
    if dream is None or real is None:
        return "The results lack a dream-trained or a real-trained arm, so there is no comparison to state."
    if threshold is None:
        return (f"The task has no reward threshold, so no steps-to-threshold comparison; final real return "
                f"(IQM over seeds): dream-trained {_number(dream['final_mean_return']['iqm'])} after "
                f"{_steps(dream['budget_real_steps'])} real steps, real-trained "
                f"{_number(real['final_mean_return']['iqm'])} after {_steps(real['budget_real_steps'])}.")
    held = f"held the return threshold ({threshold:g})"
    dream_part = f"The dream-trained arm {held} {_reached_text(dream)}"
    odds = (f" In {probability:.0%} of pairs of seeds the dream-trained run needed fewer real steps."
            if probability is not None else "")
    if fraction is not None:
        real_steps = _steps(real["steps_to_threshold"]["iqm"])
        return f"{dream_part}, {_fraction(fraction)} the real-trained arm's {real_steps}.{odds}"
    return f"{dream_part}; the real-trained arm {_reached_text(real)}, so no fraction can be given.{odds}"


def _reached_text(summary: dict) -> str:
    steps = summary["steps_to_threshold"]
    reached, runs = steps["reached"], steps["runs"]
    if steps["iqm"] is None:
        return (f"in only {reached} of {runs} seeds within its {_steps(summary['budget_real_steps'])}-step budget "
                f"(too few for an IQM)")
    if runs == 1:
        return f"after {_steps(steps['iqm'])} real steps (one seed)"
    seeds = f"IQM over {runs} seeds, 95% interval {_interval(steps['interval'], _steps)}"
    seeds += "" if reached == runs else f"; {reached} of them held it"
    return f"after {_steps(steps['iqm'])} real steps ({seeds})"


def _fraction(fraction: float) -> str:
    if fraction == 0:
        return "none of"
    if fraction < 1:
        ratio = 1 / fraction
        return f"1/{ratio:.1f} of" if ratio < 10 else f"1/{ratio:.0f} of"
    if fraction == 1:
        return "the same as"
    return f"{fraction:.1f} times"


# -- report.md ---------------------------------------------------------------------------


def _title(results: dict) -> str:
    created = f"\n\n{results['created']}" if results.get("created") else ""
    title = f"{_task_name(results)}: policies trained in dreams against policies trained on the real environment"
    return f"# {title}{created}"


def _arms_section(results: dict, summaries: list[dict]) -> str:
    threshold = results.get("reward_threshold")
    lines = ["## Arms", "", _protocol(results, threshold), ""]
    lines += _table(
        ["arm", "algorithm", "seeds", "real-step budget", "real steps to threshold: IQM [95% interval] (per seed)",
         "final real return: IQM [95% interval]", "return at budget, last 3 evaluations: IQM (per seed)",
         "wall-clock per run: median"],
        [[s["label"], s["algorithm"] or "-", ", ".join(str(seed) for seed in s["seeds"]),
          _steps(s["budget_real_steps"]), _steps_cell(s, threshold), _return_cell(s["final_mean_return"]),
          _budget_cell(s.get("return_at_budget")), _duration(s["wall_seconds"]["median"])] for s in summaries],
        align="lllrrrrr",
    )
    return "\n".join(lines)


def _protocol(results: dict, threshold: float | None) -> str:
    evaluation = results.get("evaluation") or {}
    parts = []
    if evaluation.get("episodes"):
        policy = evaluation.get("policy")
        acting = f", the policy acting {_ACTING.get(policy, policy)}" if policy else ""
        parts.append(f"Real return is the mean over {evaluation['episodes']} evaluation episodes "
                     f"from fresh reset seeds{acting}.")
    if evaluation.get("every"):
        parts.append(f"Every arm is evaluated on one grid, every {_every(evaluation['every'])} up to its budget, "
                     "each point with the policy in force there (the random policy before the first one). "
                     "Return at budget is the mean of a run's last 3 evaluations (for an arm learning from a "
                     "fixed file, its one policy's return).")
    if threshold is None:
        parts.append("The task has no reward threshold.")
    else:
        parts.append(f"Threshold: mean return {threshold:g}; a run's steps to threshold is the first grid point from "
                     "which every later evaluation stays at or above it, with at least 5 later evaluations and the "
                     "run going on to at least twice as many steps (never: it did not). A run that never held it "
                     "counts as its budget plus one grid step; an IQM is given when three quarters of the runs "
                     "held it. Intervals are 95% percentile bootstraps over seeds. A dagger (†) marks a run that "
                     "lost the threshold after reaching it.")
    return " ".join(parts)


def _every(value: int | str) -> str:
    """An evaluation interval: a count of real steps, or a word such as ``round``."""
    return f"{_steps(value)} real steps" if isinstance(value, (int, float)) else str(value)


def _steps_cell(summary: dict, threshold: float | None) -> str:
    if threshold is None:
        return "n/a"
    if summary["fixed_traces"]:
        return "n/a (one policy, after the whole file)"
    steps = summary["steps_to_threshold"]
    per_seed = ", ".join(("never" if value is None else _steps(value)) + ("†" if lost else "")
                         for value, lost in zip(steps["per_seed"], steps["lost_after_reaching"]))
    if steps["iqm"] is None:
        return f"- ({per_seed})"
    return f"{_steps(steps['iqm'])} [{_interval(steps['interval'], _steps)}] ({per_seed})"


def _return_cell(summary: dict) -> str:
    if summary["iqm"] is None:
        return "-"
    return f"{_number(summary['iqm'])} [{_interval(summary['interval'])}]"


def _budget_cell(summary: dict | None) -> str:
    """An arm's return at its budget over seeds (results written before it was kept: -)."""
    if not summary or summary["iqm"] is None:
        return "-"
    return f"{_number(summary['iqm'])} ({', '.join(_number(value) for value in summary['per_seed'])})"


def _heldout_section(heldout: dict | None) -> str:
    if not heldout:
        return ""
    summary = heldout.get("summary") or {}
    episodes = heldout.get("episodes") or []
    intro = (f"The {heldout.get('arm', 'dream')} arm's policy (seed {heldout.get('seed', '?')}) on "
             f"{summary.get('episodes', len(episodes))} held-out episodes of `{heldout.get('traces', '?')}`: each "
             "replayed in the real environment from its recorded reset seed, and in the world model "
             f"`{heldout.get('world_model', '?')}` from the same start. Policy: `{heldout.get('policy', '?')}`.")
    measures = [
        ("real return", "mean_real_return", "real_return_ci95", _number),
        ("improvement over the behaviour policy", "improvement", "improvement_ci95", _number),
        ("dream-to-real gap, absolute", "gap_abs_mean", "gap_abs_ci95", _number),
        ("dream-to-real gap, relative to the mean absolute real return", "gap_relative_mean", "gap_relative_ci95", _significant),
        ("behaviour policy's real return", "mean_behaviour_return", None, _number),
    ]
    rows = [[name, write(summary[mean]), _interval(summary.get(ci), write) if ci else "-"]
            for name, mean, ci, write in measures if mean in summary]
    lines = ["## Held-out real episodes", "", intro, ""]
    if rows:
        lines += _table(["measure", "mean", "95% CI"], rows, align="lrr") + [""]
    lines += ["Per episode:", ""]
    lines += _table(
        ["reset seed", "behaviour return", "real return", "dream return", "dream - real"],
        [[str(e.get("seed", "-")), _number(e.get("behaviour_return")), _number(e.get("real_return")),
          _number(e.get("dream_return")), _number(_difference(e.get("dream_return"), e.get("real_return")))]
         for e in episodes],
        align="rrrrr",
    )
    return "\n".join(lines)


def _fidelity_section(fidelity: dict | None) -> str:
    if not fidelity:
        return ""
    horizons = list(fidelity["horizons"])
    shown = [k for k in FIDELITY_HORIZONS if k in horizons]
    names = {"model": "world model", "nothing_changes": "nothing changes", "linear": "linear least squares"}
    measures = {"obs_rmse": "observation RMSE (training std)", "reward_mae": "reward abs. error",
                "return_error": "k-step return abs. error", "termination_accuracy": "termination balanced acc."}
    rows = []
    for name, metrics in fidelity["predictors"].items():
        for measure, label in measures.items():
            if measure in metrics:
                values = [metrics[measure][horizons.index(k)] for k in shown]
                rows.append([names.get(name, name), label] + [_significant(v) for v in values])
    held = fidelity.get("heldout_episodes")
    intro = ("Open-loop error of the world model beside two trivial predictors"
             + (f", on {held} held-out episodes" if held is not None else "")
             + (f" ({fidelity['rollouts']:,} rollouts)" if fidelity.get("rollouts") is not None else "")
             + "; k is the number of steps predicted without seeing real data (- : too few samples).")
    lines = ["## World-model fidelity", "", intro, ""]
    lines += _table(["predictor", "measure"] + [f"k={k}" for k in shown], rows, align="ll" + "r" * len(shown))
    return "\n".join(lines)


def _reproduce_section(results: dict) -> str:
    commit = results.get("commit")
    commit_text = f"`{commit}`" if commit else "unknown (not run from a git checkout)"
    if results.get("dirty"):
        commit_text += ", with uncommitted changes in the working tree"
    packages = results.get("packages") or {}
    machine = results.get("machine") or {}
    machine_text = ", ".join(f"{key} {value}" for key, value in machine.items()) or "unknown"
    lines = ["## Reproduce", ""]
    if results.get("command"):
        lines += ["```", results["command"], "```", ""]
    lines += [
        f"- commit: {commit_text}",
        f"- seeds: {', '.join(str(seed) for seed in results.get('seeds') or []) or 'unknown'}",
        f"- packages: {', '.join(f'{name} {version}' for name, version in packages.items()) or 'unknown'}",
        f"- machine: {machine_text}",
        "- redraw this report from the saved results: `dreamer report --results results.json`",
    ]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A GitHub-flavoured markdown table; cells are escaped so it pastes anywhere."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(_cell(c) for c in row) + " |" for row in [header, rule, *rows]]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# -- numbers as text ---------------------------------------------------------------------


def _task_name(results: dict) -> str:
    env_id = results.get("env_id")
    return f"{results['task']} ({env_id})" if env_id else str(results["task"])


def _steps(value: float | None) -> str:
    """A count of real steps, to the whole step (an IQM or a bound may fall between two)."""
    if value is None:
        return "-"
    return f"{value:,.0f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _significant(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _interval(bounds: list[float] | None, write=_number) -> str:
    return "-" if not bounds else f"{write(bounds[0])} to {write(bounds[1])}"


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
