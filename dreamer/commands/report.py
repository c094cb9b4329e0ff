"""``dreamer report``: redraw the comparison report from a saved results.json, running nothing."""

from __future__ import annotations

from pathlib import Path

from dreamer.report import headline, load_results, plot_files, render_report
from tasks.config import config, option


@config
class ReportConfig:
    results: str = option(help="results.json written by `dreamer compare`")
    out: str | None = option(None, help="folder for report.md and its plots (default: the folder results.json is in)")
    seed: int = option(0, help="accepted for uniformity; a report draws no random numbers")


def run(config: ReportConfig) -> tuple[dict, str]:
    results = load_results(config.results)
    out = Path(config.out) if config.out else Path(config.results).parent
    report = render_report(results, out)
    plots = [out / name for name in plot_files(results)]
    summary = {
        "results": str(config.results),
        "report": str(report),
        "plots": [str(path) for path in plots],
        "headline": headline(results),
    }
    text = f"{summary['headline']['statement']}\nwrote {report} and {len(plots)} plot{'s' if len(plots) != 1 else ''}"
    return summary, text
