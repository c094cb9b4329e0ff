"""``dreamer run``: learn on the job, alternating real deployment, model refits and dreams."""

from __future__ import annotations

from dreamer.online import RunConfig, run_online


def run(config: RunConfig) -> tuple[dict, str]:
    summary = run_online(config)
    reached = summary["steps_to_threshold"]
    text = (
        f"{summary['rounds']} rounds, {summary['real_steps']} real steps (+{summary['eval_steps']} for evaluation), "
        f"{summary['wall_seconds']:.0f} s\n"
        f"final mean return over fresh seeds: {summary['final_mean_return']:.1f}"
        + (f"; threshold {summary['reward_threshold']} held from {reached} real steps" if reached is not None else "")
        + f"\nwrote {config.out}"
    )
    return summary, text
