"""``dreamer compare``: the dream-trained and the real-trained arm on one task, in one report."""

from __future__ import annotations

from dreamer.comparison import CompareConfig, compare
from dreamer.report import headline


def run(config: CompareConfig) -> tuple[dict, str]:
    results = compare(config)
    return summary_and_text(results, config.out_dir)


def summary_and_text(results: dict, out) -> tuple[dict, str]:
    """What `compare` and `demo` print: the headline and where the report is."""
    summary = {
        "report": str(out / "report.md"),
        "results": str(out / "results.json"),
        "headline": headline(results),
        "arms": {arm["name"]: [{k: run[k] for k in ("seed", "steps_to_threshold", "final_mean_return", "wall_seconds")}
                               for run in arm["runs"]] for arm in results["arms"]},
    }
    text = f"{summary['headline']['statement']}\nreport: {summary['report']}"
    return summary, text
