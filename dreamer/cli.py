"""The ``dreamer`` command line: one subcommand per job, each generated from its config.

Every command takes ``--json`` (stdout then holds one JSON object and nothing else),
``--config FILE.yaml`` (sets any config field), ``--seed`` and ``--out``. Bad input ends
with one line on stderr naming the file and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import dataclasses
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence

from dreamer.commands import check, collect, compare, demo, dream, evaluate, fit, learn, report, train_real, traces
from dreamer.commands import run as run_command
from dreamer.comparison import CompareConfig
from dreamer.online import RunConfig
from dreamer.config import add_config_arguments, config_from_args
from tasks.errors import InputError, RunFailed

USAGE_ERROR = 2


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its words (``traces info``), config class, and what runs it."""

    words: tuple[str, ...]
    config_cls: type
    run: Callable[[object], tuple[dict, str]]
    help: str


COMMANDS = (
    Command(("collect",), collect.CollectConfig, collect.run,
            "record real episodes with a behaviour policy into a trace file"),
    Command(("traces", "info"), traces.InfoConfig, traces.info,
            "episodes, steps, returns, spaces and split sizes of a trace file"),
    Command(("traces", "import"), traces.ImportConfig, traces.import_,
            "turn a flat .npz or a Parquet/CSV table of transitions into a trace file"),
    Command(("traces", "export"), traces.ExportConfig, traces.export,
            "write a trace file as a flat .npz (D4RL keys plus next_observations)"),
    Command(("fit",), fit.FitCommandConfig, fit.run,
            "fit a world model on a trace file's training split, early-stopped on validation"),
    Command(("check",), check.CheckConfig, check.run,
            "measure a world model's open-loop error on held-out episodes beside two trivial predictors"),
    Command(("dream",), dream.DreamCommandConfig, dream.run,
            "train a policy purely in a fitted world model's dreams, from a fixed trace file"),
    Command(("run",), RunConfig, run_command.run,
            "learn on the job: deploy, record, refit the world model, train the policy in dreams, repeat"),
    Command(("learn",), learn.LearnConfig, learn.run,
            "learn on the job from trace files: one round per new batch (refit warm, dream, save a policy version)"),
    Command(("history",), learn.HistoryConfig, learn.history,
            "what each round of `dreamer learn` changed: episodes, model error by round of origin, returns"),
    Command(("train-real",), train_real.TrainRealConfig, train_real.run,
            "train a baseline policy on the real environment (PPO or SAC), evaluated as the dream arm is"),
    Command(("evaluate",), evaluate.EvaluateConfig, evaluate.run,
            "a saved policy's real return, deterministic, from fresh reset seeds or held-out episodes of a trace file"),
    Command(("compare",), CompareConfig, compare.run,
            "dream-trained against real-trained over several seeds: results.json, report.md and plots"),
    Command(("report",), report.ReportConfig, report.run,
            "redraw a comparison report from its results.json, running nothing"),
    Command(("demo",), demo.DemoConfig, demo.run,
            "the main job on a small budget: compare on Pendulum, one seed per arm, in a few minutes"),
)


class _OneLineErrorParser(argparse.ArgumentParser):
    """Argument errors end like every other bad input: one line, exit status 2."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="dreamer",
        description="Learn world models from deployment traces and train policies in their dreams.",
    )
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="command", required=True)}
    for command in COMMANDS:
        for depth in range(1, len(command.words)):
            prefix = command.words[:depth]
            if prefix not in groups:
                group_parser = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = group_parser.add_subparsers(dest=f"command_{depth}", required=True)
        sub = groups[command.words[:-1]].add_parser(command.words[-1], help=command.help, description=command.help)
        add_config_arguments(sub, command.config_cls)
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
        sub.add_argument("--config", metavar="FILE.yaml", help="YAML file setting any of the fields above")
        sub.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help, or an argument error already reported
        return int(exit.code or 0)
    command: Command = args._command
    with quiet_libraries() as caught:
        try:
            config = config_from_args(command.config_cls, args, args.config)
            summary, text = command.run(config)
        except BaseException as error:  # noqa: BLE001 (the one exit path: every error ends here)
            return report_error(error)
    for warning in caught:  # the run went well: its warnings may matter, so show them now
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    if args.json:
        print(json.dumps(summary))
    else:
        print(text)
    return 0


def report_error(error: BaseException) -> int:
    """Print one line for ``error`` and return the exit status it ends with.

    Bad input (ours, or a path the operating system refuses) ends with status 2 and a
    line naming the path; a run that failed after starting well, 1; an interrupt, 130.
    Anything else is a bug: one line too, and the traceback only when
    ``DREAMER_TRACEBACK=1`` asks for it.
    """
    if isinstance(error, InputError):
        print(f"dreamer: error: {one_line(str(error))}", file=sys.stderr)
        return USAGE_ERROR
    if isinstance(error, OSError) and error.filename is not None:
        problem = error.strerror or type(error).__name__
        print(f"dreamer: error: {error.filename}: {problem[0].lower() + problem[1:]}", file=sys.stderr)
        return USAGE_ERROR
    if isinstance(error, RunFailed):
        print(f"dreamer: failed: {one_line(str(error))}", file=sys.stderr)
        return 1
    if isinstance(error, KeyboardInterrupt):
        print("dreamer: interrupted", file=sys.stderr)
        return 130
    if isinstance(error, SystemExit):
        raise error
    if os.environ.get("DREAMER_TRACEBACK") == "1":
        traceback.print_exception(error, file=sys.stderr)
    print(f"dreamer: failed: unexpected {type(error).__name__}: {one_line(str(error))[:300] or 'no message'} "
          f"(a bug: set DREAMER_TRACEBACK=1 to see where, and report it)", file=sys.stderr)
    return 1


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(text.split())


@contextlib.contextmanager
def quiet_libraries() -> Iterator[list[warnings.WarningMessage]]:
    """Keep orbax's and asyncio's logging off the terminal, and hold warnings back.

    What goes wrong reaches the user as our one line; the libraries' INFO chatter and the
    pages they log while failing (a damaged checkpoint) do not. Warnings are recorded
    into the list this yields; `main` shows them only when the command succeeds.
    """
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio", "orbax", "jax._src.xla_bridge")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    unraisable_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None  # a failed restore leaves coroutines never awaited
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield caught
    finally:
        gc.collect()  # finalise those coroutines now, while their complaints are still silenced
        sys.unraisablehook = unraisable_hook
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def entry_point() -> None:
    """The ``dreamer`` console script.

    After a failure the process ends at once: threads that orbax and TensorStore leave
    behind would otherwise print tracebacks while the interpreter shuts down, after the
    one line that says what went wrong. Everything of ours is closed by then.
    """
    code = main()
    if code != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry_point()
