"""Several processes as one JAX job (`jax.distributed`), started before any device is used.

A command calls `start` first; what it does is decided in this order:

1. ``--hosts.start never``: one process, whatever the environment says.
2. Explicit settings: ``--hosts.coordinator HOST:PORT``, ``--hosts.num-processes N`` and
   ``--hosts.process-id I``, each falling back to ``DREAMER_COORDINATOR``,
   ``DREAMER_NUM_PROCESSES`` and ``DREAMER_PROCESS_ID`` when its flag is not given (so
   one command line can serve every process of a launcher that sets the variables).
   Either all three are given or, with one process, none is needed.
3. A launcher that started several tasks: SLURM's ``srun`` (``SLURM_STEP_NUM_TASKS``),
   Open MPI's ``mpirun`` (``OMPI_COMM_WORLD_SIZE``), a TPU slice whose workers are listed
   in ``TPU_WORKER_HOSTNAMES``. `jax.distributed.initialize` then finds the coordinator,
   the count and this process's index itself.
4. ``--hosts.start always``: `jax.distributed.initialize` with no arguments, for clusters
   JAX detects but this module does not (a Cloud TPU VM slice, whose workers only its
   metadata server knows).
5. Otherwise one process, and nothing is started: a single machine behaves as before.

Once started, every process sees every process's devices (`jax.devices()`); process 0
is the one that writes (`writes_outputs`). On CPU the processes' collectives go through
gloo, JAX's default for CPU; what native libraries print goes to stderr from then on, so
that stdout keeps only what the command prints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Literal

import jax
import numpy as np
from jax.experimental import multihost_utils

from tasks.config import config, option
from tasks.errors import InputError, RunFailed

COORDINATOR_VARIABLE = "DREAMER_COORDINATOR"
NUM_PROCESSES_VARIABLE = "DREAMER_NUM_PROCESSES"
PROCESS_ID_VARIABLE = "DREAMER_PROCESS_ID"


@config
class HostsConfig:
    """How the processes of a job on several hosts find each other.

    Attributes:
        start: auto: start when the settings below, SLURM, Open MPI or a TPU slice say
            there are several processes; always: let `jax.distributed.initialize` detect
            the cluster; never: one process.
        coordinator: ``HOST:PORT`` where process 0 serves the others; default
            ``$DREAMER_COORDINATOR``.
        num_processes: processes in the job; default ``$DREAMER_NUM_PROCESSES``.
        process_id: this process's index, 0 to ``num_processes - 1``; default
            ``$DREAMER_PROCESS_ID``.
        timeout: seconds to wait for every process to join.
    """

    start: Literal["auto", "always", "never"] = option(
        "auto", help="auto: start a multi-process job when the settings below, SLURM (srun), Open MPI (mpirun) or "
                     "a TPU slice say so; always: let jax.distributed.initialize detect the cluster; never: one process")
    coordinator: str | None = option(None, help=f"HOST:PORT of process 0, which the others join "
                                                f"(default ${COORDINATOR_VARIABLE})")
    num_processes: int | None = option(None, min=1, help=f"processes in the job (default ${NUM_PROCESSES_VARIABLE})")
    process_id: int | None = option(None, min=0, help=f"this process's index, 0 to num-processes - 1 "
                                                      f"(default ${PROCESS_ID_VARIABLE})")
    timeout: int = option(300, min=1, help="seconds to wait for every process to join")


def start(settings: HostsConfig = HostsConfig(), environment: Mapping[str, str] = os.environ) -> None:
    """Join this process to the job ``settings`` and ``environment`` describe, if any.

    Does nothing for one process, or when JAX's distributed system is already running
    (a caller started it). Must run before anything touches a device.

    Raises:
        InputError: the settings are incomplete or contradict each other.
        RunFailed: the processes could not join (a wrong address, a process missing).
    """
    if settings.start == "never" or jax.distributed.is_initialized():
        return
    coordinator, count, index = _explicit_settings(settings, environment)
    if count is not None:
        if count == 1:
            return
        arguments = {"coordinator_address": coordinator, "num_processes": count, "process_id": index}
    elif settings.start == "always" or _launcher_started_several(environment):
        arguments = {}
    else:
        return
    from jax._src import xla_bridge  # no public way to ask whether a device was used yet

    if xla_bridge.backends_are_initialized():
        raise RuntimeError("worldmodel.hosts.start must run before anything uses a device")
    try:
        jax.distributed.initialize(**arguments, initialization_timeout=settings.timeout)
    except (RuntimeError, ValueError) as error:  # XLA's errors are RuntimeErrors
        where = f"at {coordinator}" if coordinator else "found by jax.distributed"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunFailed(f"could not join the job {where}: {first_line} (check --hosts.coordinator, "
                        f"--hosts.num-processes and --hosts.process-id, and that every process was started)") from None
    _native_output_to_stderr()


def _native_output_to_stderr() -> None:
    """Point file descriptor 1 at stderr, keeping Python's ``sys.stdout`` on the real stdout.

    Gloo announces every connection it makes on the process's stdout (from C++), which
    would break the promise that ``--json`` leaves one JSON object there and nothing else.
    """
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(real_stdout, "w", buffering=1)


def writes_outputs() -> bool:
    """Whether this process writes the run's files: process 0 of the job (or the only one)."""
    return jax.process_index() == 0


def process_zero_says(answer: bool) -> bool:
    """Process 0's ``answer``, on every process: how the others learn that process 0
    could not go on (for instance, it could not open the run directory), instead of
    waiting for it at the next collective until the job times out."""
    if jax.process_count() == 1:
        return answer
    return bool(multihost_utils.broadcast_one_to_all(np.int32(answer)))


def from_process_zero(tree):
    """``tree`` as process 0 holds it, on every process, as arrays on this process's
    default device (one process: ``tree`` itself). Every process passes a tree of the
    same structure, shapes and dtypes."""
    if jax.process_count() == 1:
        return tree
    return jax.device_put(multihost_utils.broadcast_one_to_all(tree))


def savable(tree):
    """``tree`` as one process alone can hand it to orbax: in a job of several processes
    orbax refuses `jax.Array` leaves (it expects each process to save its own part of
    them), so they become this process's numpy copies; on one process, ``tree`` as it is."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(lambda leaf: np.asarray(leaf) if isinstance(leaf, jax.Array) else leaf, tree)


def _explicit_settings(settings: HostsConfig, environment: Mapping[str, str]
                       ) -> tuple[str | None, int | None, int | None]:
    """The coordinator, process count and index that flags or DREAMER_* variables give."""
    coordinator = settings.coordinator or environment.get(COORDINATOR_VARIABLE) or None
    count = settings.num_processes if settings.num_processes is not None else _whole_number(
        environment, NUM_PROCESSES_VARIABLE, minimum=1)
    index = settings.process_id if settings.process_id is not None else _whole_number(
        environment, PROCESS_ID_VARIABLE, minimum=0)
    given = {"--hosts.coordinator": coordinator, "--hosts.num-processes": count, "--hosts.process-id": index}
    if all(value is None for value in given.values()):
        return None, None, None
    if count == 1 and index in (None, 0):
        return coordinator, 1, 0
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise InputError(missing[0], f"is needed too: a job of several processes needs "
                                     f"{', '.join(given)} (or the DREAMER_* variables)")
    if not index < count:
        raise InputError("--hosts.process-id", f"is {index}, but a job of {count} processes numbers them "
                                               f"0 to {count - 1}")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError("--hosts.coordinator", f"is {coordinator!r}; expected HOST:PORT, such as node001:1234")
    return coordinator, count, index


def _whole_number(environment: Mapping[str, str], name: str, minimum: int) -> int | None:
    text = environment.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < minimum:
        raise InputError(f"${name}", f"is {text!r}; expected a whole number of at least {minimum}")
    return int(text)


def _launcher_started_several(environment: Mapping[str, str]) -> bool:
    """Whether srun, mpirun or a TPU slice started this process as one of several."""
    def count(name: str) -> int:
        text = environment.get(name, "")
        return int(text) if text.isdigit() else 1

    workers = [name for name in environment.get("TPU_WORKER_HOSTNAMES", "").split(",") if name.strip()]
    return count("SLURM_STEP_NUM_TASKS") > 1 or count("OMPI_COMM_WORLD_SIZE") > 1 or len(workers) > 1
