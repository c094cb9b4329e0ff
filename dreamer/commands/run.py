"""``dreamer run``: learn on the job, alternating real deployment, model refits and dreams."""

from __future__ import annotations

from dreamer.online import RunConfig, outcome_text, run_online


def run(config: RunConfig) -> tuple[dict, str]:
    summary = run_online(config)
    text = (
        f"{summary['rounds']} rounds, {summary['real_steps']} real steps (+{summary['eval_steps']} for evaluation), "
        f"{summary['wall_seconds']:.0f} s\n" + outcome_text(summary, config.eval_episodes, config.out)
    )
    return summary, text
