"""What a benchmark ran on, recorded beside every figure it prints."""

from __future__ import annotations

import os
import platform


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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
