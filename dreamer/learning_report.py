"""The picture of a run that learns in rounds: what each round did to the model and the policy.

Left: the world model's held-out open-loop error after each round, one line per round of
origin, so forgetting shows as an old round's line rising. Right: the dream-predicted
return of each version and, where measured, its real return on fresh reset seeds.
"""

from __future__ import annotations

from pathlib import Path


def plot_rounds(rounds: list[dict], path: str | Path, task_name: str) -> None:
    """Draw ``rounds`` (records of `dreamer.learning`) into the PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [entry["round"] for entry in rounds]
    figure, (errors, returns) = plt.subplots(1, 2, figsize=(11, 4.2))
    for origin in map(str, numbers):
        points = [(entry["round"], entry["heldout_obs_rmse_by_origin"].get(origin)) for entry in rounds]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            errors.plot(*zip(*points), marker="o", label=f"round {origin}'s episodes")
    changed = [entry for entry in rounds if entry.get("world_changed")]
    for entry in changed:  # dashed where the plant itself changed, dotted for a new behaviour
        errors.axvline(entry["round"], color="grey", linestyle="--" if entry.get("plant_changed") else ":",
                       linewidth=1)
    errors.set_title("held-out model error, 15 steps open loop", fontsize=10)
    errors.set_xlabel("after round" + (" (grey: a batch outside what the model knew; dashed: a changed plant)"
                                       if changed else ""), fontsize=9)
    errors.set_ylabel("observation RMSE (round-1 training std units)")
    if errors.has_data():
        errors.set_yscale("log")  # old rounds' errors and a changed plant's differ by orders of magnitude
        errors.legend(fontsize=8)
    for key, label in (("dream_return", "dream-predicted"), ("real_return", "real, fresh reset seeds")):
        points = [(entry["round"], entry[key]) for entry in rounds if entry.get(key) is not None]
        if points:
            returns.plot(*zip(*points), marker="o", label=label)
    returns.set_title(f"return of each round's version ({task_name})", fontsize=10)
    returns.set_xlabel("round (version)")
    returns.set_ylabel("undiscounted return")
    if returns.has_data():
        returns.legend(fontsize=8)
    for axis in (errors, returns):
        axis.set_xticks(numbers)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
