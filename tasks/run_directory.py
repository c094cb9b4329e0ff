"""The run directory every training command writes, and reads back to resume.

    RUN/config.yaml      the full config, so the run can be repeated or resumed
    RUN/metrics.jsonl    one JSON object per logged step
    RUN/events.*         the same scalars as TensorBoard events
    RUN/checkpoints/     orbax checkpoints
    RUN/summary.json     the final figures, written when the run ends
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import InputError

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"


class RunDirectory:
    """A run's folder: config, metrics, TensorBoard events, checkpoints, summary.

    Args:
        path: the run directory.
        config: the run's frozen dataclass config, written to ``config.yaml``.
        resume: continue a run already in ``path``; its config must match.
        resumable: whether the command can resume at all (its error message says so).
    """

    def __init__(self, path: str | Path, config: Any, resume: bool = False, resumable: bool = True):
        self.path = Path(path)
        self.config = config
        config_path = self.path / CONFIG_FILE
        written = config_to_dict(config)
        if config_path.exists():
            if not resume:
                how = "pass --resume to continue it, or choose another --out" if resumable else "choose another --out"
                raise InputError(self.path, f"already holds a run ({how})")
            saved = yaml.safe_load(config_path.read_text())
            changed = sorted(k for k in set(saved) | set(written) if k != "resume" and saved.get(k) != written.get(k))
            if changed:
                raise InputError(self.path, f"cannot resume with a different config (changed: {', '.join(changed)})")
        elif self.path.exists() and any(self.path.iterdir()):
            raise InputError(self.path, "exists and is not a run directory (no config.yaml); choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(written, sort_keys=False))
        self._tensorboard = None

    @property
    def checkpoint_path(self) -> Path:
        return (self.path / "checkpoints").absolute()

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
        """Every line of metrics.jsonl so far."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, after_step: int) -> None:
        """Drop lines logged after ``after_step``: a resumed run logs them again."""
        kept = [m for m in self.metrics() if m["step"] <= after_step]
        (self.path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / SUMMARY_FILE).write_text(json.dumps(_plain(summary), indent=2))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _writer(self):
        if self._tensorboard is None:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.path))
        return self._tensorboard


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The config a run directory was made with, as plain values."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(path, "not a run directory (no config.yaml)")
    return yaml.safe_load(config_path.read_text())


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
