"""``dreamer train-real``: a baseline trained on the real environment (PPO or SAC).

A thin shell over `policies.baselines.train_baseline`, measured exactly as the
dream-trained policy is: the deterministic actor on the same fresh reset seeds (for the
same ``--seed``), at every point of the ``--eval-every`` grid.
"""

from __future__ import annotations

from dreamer.online import outcome_text
from policies.baselines import TrainRealConfig, algo_label, train_baseline


def run(config: TrainRealConfig) -> tuple[dict, str]:
    summary = train_baseline(config)
    text = (
        f"{summary['task']} {algo_label(summary['algorithm'])}: {summary['real_steps']} real steps "
        f"(+{summary['eval_steps']} for evaluation), {summary['wall_seconds']:.0f} s\n"
        + outcome_text(summary, config.eval_episodes, config.out)
    )
    return summary, text
