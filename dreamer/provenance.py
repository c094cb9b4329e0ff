"""What a result was produced by: source commit, package versions and machine.

Reports and benchmarks record these beside every figure, so a reader can tell which
code on which hardware gave it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "gymnasium", "minari", "mujoco", "numpy")


def machine_info() -> dict:
    import jax

    device = jax.devices()[0]
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "device": device.device_kind,
        "jax_version": jax.__version__,
        "python": platform.python_version(),
    }


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def source_commit() -> tuple[str | None, bool | None]:
    """The git commit this code was checked out at, and whether it had local changes
    (None, None outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
