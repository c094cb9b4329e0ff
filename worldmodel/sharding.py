"""Data parallelism over local devices with `jax.sharding`: one mesh axis, ``data``.

Parameters, optimiser state and the trace data are replicated on every device; each
training batch is split along its leading axis, so every device computes its share of
the loss and the compiler inserts the reduction of the gradients (GSPMD). The same code
runs on one device, where the mesh has one entry and the constraints change nothing.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tasks.errors import InputError

DATA_AXIS = "data"
DEVICES_HELP = "local devices to split each batch over (default: all of them)"


def data_mesh(devices: int | None = None) -> Mesh:
    """A one-axis mesh over the first ``devices`` local devices (default: all).

    Raises:
        InputError: more devices are asked for than this machine has.
    """
    available = jax.local_devices()
    count = len(available) if devices is None else devices
    if not 1 <= count <= len(available):
        raise InputError("--devices", f"asks for {count} devices, but this machine has {len(available)} "
                                      f"({available[0].platform})")
    return Mesh(np.array(available[:count]), (DATA_AXIS,))


def check_batch_divides(mesh: Mesh, batch_size: int, what: str) -> None:
    """Refuse a batch that the mesh's devices cannot share equally."""
    if batch_size % mesh.size:
        raise InputError(what, f"a batch of {batch_size} cannot be split evenly over {mesh.size} devices "
                               f"(choose a multiple of {mesh.size}, or --devices that divides {batch_size})")


def replicate(tree, mesh: Mesh):
    """``tree``'s arrays placed whole on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def split_batch(tree, mesh: Mesh):
    """Inside a jitted function: ``tree``'s arrays split along their leading (batch) axis."""
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)
