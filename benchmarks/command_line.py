"""Running a `dreamer` command in-process from a benchmark and reading its --json result."""

from __future__ import annotations

import contextlib
import io
import json

from dreamer.cli import main as dreamer


def dreamer_json(*argv: str) -> dict:
    """Run ``dreamer ARGV --json`` in this process; its JSON object, or exit on failure."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = dreamer([*map(str, argv), "--json"])
    if code != 0:
        raise SystemExit(f"dreamer {' '.join(map(str, argv))} failed with status {code}")
    return json.loads(stdout.getvalue())
