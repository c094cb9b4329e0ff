"""Numbered policy versions of a run that learns in rounds, and which one is the latest.

    RUN/versions/N/          round N's policy (and world model): what `load_policy` reads
    RUN/rounds.json          the rounds' records and ``latest_version``, written atomically

`dreamer learn` saves one version per round and moves ``latest_version`` to it;
``--rollback N`` moves it back without deleting anything. Every reader of a saved policy
(`load_policy`, `load_actor`, ``collect --policy``, ``evaluate``) resolves a run
directory through `policy_folder`, so a run of any command, versioned or not, is named
the same way. This module needs only the standard library: the controller side imports it.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

VERSIONS_DIR = "versions"
ROUNDS_FILE = "rounds.json"


def is_versioned(run: str | os.PathLike) -> bool:
    """Whether ``run`` learns in rounds (holds numbered versions)."""
    return (Path(run) / ROUNDS_FILE).is_file()


def read_rounds(run: str | os.PathLike) -> dict:
    """The run's ``rounds.json``: ``{"latest_version", "rounds": [...], ...}``.

    Raises:
        FileNotFoundError: ``run`` holds no rounds.
        ValueError: the file is damaged.
    """
    path = Path(run) / ROUNDS_FILE
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "not a run directory made by `dreamer learn` (no rounds.json)", str(run))
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("rounds"), list):
            raise ValueError("expected an object with a list of rounds")
        int(record["latest_version"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: is damaged ({error})") from None
    return record


def policy_folder(run: str | os.PathLike, version: int | None = None) -> tuple[Path, int | None]:
    """Where the policy of ``run`` lives, and its version (None for an unversioned run).

    Args:
        run: a run directory of any command.
        version: a version of a run made by `dreamer learn` (default: its latest).

    Raises:
        FileNotFoundError: ``version`` does not exist, or was asked of a run without versions.
    """
    run = Path(run)
    if not is_versioned(run):
        if version is not None:
            raise FileNotFoundError(errno.ENOENT, f"has no policy versions (only `dreamer learn` saves them), "
                                                  f"so version {version} does not exist", str(run))
        return run, None
    record = read_rounds(run)
    chosen = int(record["latest_version"]) if version is None else int(version)
    known = [int(entry["policy_version"]) for entry in record["rounds"]]
    if chosen not in known:
        listed = f"versions {known[0]}-{known[-1]}" if known else "no versions"
        raise FileNotFoundError(errno.ENOENT, f"has no policy version {chosen} ({listed} exist)", str(run))
    return run / VERSIONS_DIR / str(chosen), chosen

