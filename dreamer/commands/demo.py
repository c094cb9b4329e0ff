"""``dreamer demo``: the main job end to end on a small budget, in a few minutes on a CPU.

A comparison on Pendulum with one seed per arm: the dream-trained online loop with 2,000
real steps against SAC with 20,000, the held-out replay and the world model's error,
written as a report. 2,000 steps let the protocol see a crossing up to 1,000 steps hold
(five later grid points, and the run going on to twice the crossing's steps).
"""

from __future__ import annotations

from dreamer.commands.compare import summary_and_text
from dreamer.comparison import CompareConfig, compare
from tasks.config import config, option


@config
class DemoConfig:
    out: str = option("reports/demo", help="report folder")
    seed: int = option(0, help="seed of both arms")


def run(config: DemoConfig) -> tuple[dict, str]:
    comparison = CompareConfig(task="pendulum", out=config.out, seeds=1, dream_steps=2000, real_steps=20000,
                               algo="sac", seed=config.seed)
    results = compare(comparison, command=f"dreamer demo --out {config.out} --seed {config.seed}")
    return summary_and_text(results, comparison.out_dir)
