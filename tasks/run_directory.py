"""The run directory every training command writes, and reads back to resume.

    RUN/config.yaml      the full config, so the run can be repeated or resumed
    RUN/metrics.jsonl    one JSON object per logged step
    RUN/events.*         the same scalars as TensorBoard events
    RUN/checkpoints/     orbax checkpoints
    RUN/summary.json     the final figures, written when the run ends
    RUN/.lock            held (flock) by the one process writing the run
    RUN/.pending         present until the run's first checkpoint: the run holds nothing yet

A run directory is atomic in the sense that matters to a user: until its first
checkpoint (or its summary) it is *pending*, and a command that fails while it is pending
removes what it created, so a corrected re-run just works. A process killed while its
run is pending leaves the marker behind, and the next command opening that directory
clears it. Once committed, a run is kept; ``--resume`` continues it, and a command that
grows one run over many calls opens it again the same way.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
import yaml

from tasks.errors import InputError
from tasks.locks import exclusive_lock

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
PENDING_FILE = ".pending"


class RunDirectory:
    """A run's folder: config, metrics, TensorBoard events, checkpoints, summary.

    Use it as a context manager: entering locks the folder against a second writer;
    leaving with an exception before the run was committed removes what it created.

    Args:
        path: the run directory.
        config: the run's frozen dataclass config, written to ``config.yaml``.
        resume: continue a run already in ``path``; its config must match.
        resumable: whether the command can resume at all (its error message says so).
        per_call: fields that name one call's input rather than the run's settings (a
            command that grows one run over many calls): neither written nor compared.

    Raises:
        InputError: ``path`` is a plain file or sits under one, is in use by another
            process, holds another run (or other files), or ``resume`` finds a different
            config.
    """

    def __init__(self, path: str | Path, config: Any, resume: bool = False, resumable: bool = True,
                 per_call: tuple[str, ...] = ()):
        self.path = Path(path)
        self.config = config
        self.committed = False
        self._tensorboard = None
        self._created = _first_missing(self.path)  # the top-most folder this run makes, if any
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = exclusive_lock(self.path / LOCK_FILE, self.path, what="is in use by another process")
        self._lock.__enter__()
        try:
            written = {name: value for name, value in config_to_dict(config).items() if name not in per_call}
            self._open(written, resume, resumable)
        except BaseException:
            self._release(remove=self._created is not None)
            raise

    def _open(self, written: dict, resume: bool, resumable: bool) -> None:
        config_path = self.path / CONFIG_FILE
        if (self.path / PENDING_FILE).exists():
            _clear(self.path)  # left by a process killed before its first checkpoint
        if config_path.exists():
            if not resume:
                how = "pass --resume to continue it, or choose another --out" if resumable else "choose another --out"
                raise InputError(self.path, f"already holds a run ({how})")
            saved = read_run_config(self.path)
            changed = sorted(k for k in set(saved) | set(written) if k != "resume" and saved.get(k) != written.get(k))
            if changed:
                raise InputError(self.path, f"cannot resume with a different config (changed: {', '.join(changed)})")
            self.committed = True
            return
        if any(entry.name != LOCK_FILE for entry in self.path.iterdir()):
            raise InputError(self.path, "exists and is not a run directory (no config.yaml); choose another --out")
        (self.path / PENDING_FILE).touch()
        config_path.write_text(yaml.safe_dump(written, sort_keys=False))

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            self.commit()
        self._release(remove=not self.committed)

    @property
    def checkpoint_path(self) -> Path:
        return (self.path / "checkpoints").absolute()

    def checkpoint_manager(self, name: str) -> ocp.CheckpointManager:
        """Orbax checkpoints under ``RUN/checkpoints/NAME``: the last one kept, written synchronously.

        The checkpoints are this process's alone, like the folder: in a JAX job of several
        processes orbax would otherwise wait at its barriers for the others, which write
        nothing. (What is saved must then be held whole by this process.)
        """
        this = ocp.multihost.process_index()
        path = self.checkpoint_path / name
        path.mkdir(parents=True, exist_ok=True)  # orbax refuses to create it for a subset of processes
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=False, enable_async_checkpointing=False,
            multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=this, active_processes={this}),
        )
        return ocp.CheckpointManager(path, options=options)

    def save(self, manager: ocp.CheckpointManager, step: int, args: ocp.args.CheckpointArgs) -> None:
        """Write a checkpoint and wait for it; from the first one on, the run is kept."""
        manager.save(step, args=args)
        manager.wait_until_finished()
        self.commit()

    def commit(self) -> None:
        """The run now holds work worth keeping: a failure from here on leaves it for --resume."""
        if not self.committed:
            (self.path / PENDING_FILE).unlink(missing_ok=True)
            self.committed = True

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append ``metrics`` at ``step`` to metrics.jsonl and to TensorBoard."""
        scalars = {k: float(v) for k, v in metrics.items() if _is_scalar(v)}
        with open(self.path / "metrics.jsonl", "a") as file:
            file.write(json.dumps({"step": step, **scalars}) + "\n")
        writer = self._writer()
        for name, value in scalars.items():
            writer.add_scalar(name, value, step)
        writer.flush()

    def metrics(self) -> list[dict[str, float]]:
        """Every line of metrics.jsonl so far; a last line cut short by a kill is dropped."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        text = path.read_text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines = lines[:-1]  # the process was killed while writing it
        metrics = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                raise InputError(path, f"line {number} is damaged (expected a JSON object with an integer step)")
            metrics.append(entry)
        return metrics

    def truncate_metrics(self, after_step: int) -> None:
        """Drop lines logged after ``after_step``: a resumed run logs them again."""
        kept = [m for m in self.metrics() if m["step"] <= after_step]
        (self.path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / SUMMARY_FILE).write_text(json.dumps(_plain(summary), indent=2))
        self.commit()

    def _writer(self):
        if self._tensorboard is None:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.path))
        return self._tensorboard

    def _release(self, remove: bool) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._lock is None:
            return
        if remove:
            if self._created is not None:
                shutil.rmtree(self._created, ignore_errors=True)
            else:
                _clear(self.path)
                (self.path / LOCK_FILE).unlink(missing_ok=True)
        self._lock.__exit__(None, None, None)
        self._lock = None


def _first_missing(path: Path) -> Path | None:
    """The top-most folder of ``path`` that does not exist yet (None if ``path`` exists).

    Raises:
        InputError: ``path`` is a plain file, or sits under one.
    """
    missing = None
    for folder in [path, *path.parents]:
        if folder.is_dir():
            return missing
        if folder.exists() or folder.is_symlink():
            where = "is a file" if folder == path else f"sits under a file ({folder})"
            raise InputError(path, f"{where}, not a folder; choose another --out")
        missing = folder
    return missing


def _clear(path: Path) -> None:
    """Remove everything in ``path`` but the lock file (held by this process)."""
    for entry in path.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The config a run directory was made with, as plain values."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(path, "not a run directory (no config.yaml)")
    try:
        loaded = yaml.safe_load(config_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(config_path, f"not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise InputError(config_path, "is damaged: expected a mapping of config fields")
    return loaded


def _is_scalar(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen dataclass config as plain nested values, for YAML and JSON."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    """Tuples as lists, so YAML and JSON hold only plain values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
