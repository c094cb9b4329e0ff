"""Data parallelism with `jax.sharding`, over the devices of one process or of many.

The mesh has two axes: ``hosts``, one entry per process (`worldmodel.hosts` starts
them), and ``data``, the devices each process lends. Parameters, optimiser state and
validation data are replicated on every device; each training batch is split along its
leading axis over all devices, so every device computes its share of the loss and the
compiler inserts the reduction of the gradients (GSPMD), across processes too.

The training episodes are not replicated: they are cut into shards (episode ``i`` in
shard ``i % shards``, by default one shard per process), and each host of the mesh holds
only its own shards, on each of its devices, and draws its part of every batch from them
(`sample_global_batch`). Shard ``s`` draws its windows with the key folded with ``s``,
so a process holding every shard (one machine, any number of devices) draws the very
batches a cluster draws. With one shard nothing is folded: a fit on one process draws
what it drew before there were shards, on one device or many.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tasks.episodes import Episodes
from tasks.errors import InputError
from tasks.sampler import SequenceBatch, SequenceData, sample_sequences, sequence_data

HOST_AXIS = "hosts"
DATA_AXIS = "data"
BATCH_AXES = (HOST_AXIS, DATA_AXIS)
DEVICES_HELP = ("devices of this process to split each batch over (default: all of them); with several "
                "processes each lends this many, and the batch is split over all of them")


def data_mesh(devices: int | None = None, hosts: int | None = None) -> Mesh:
    """A ``hosts x data`` mesh: the first ``devices`` local devices of every process.

    Args:
        devices: devices each process lends (default: all its local devices).
        hosts: the mesh's ``hosts`` axis; None: one per process. On one process a larger
            value cuts its devices into that many simulated hosts (for tests: the layout
            of a cluster on one machine); with several processes it must be their number.

    Raises:
        InputError: more devices are asked for than this machine has, or they cannot be
            cut into ``hosts`` equal groups.
    """
    available = jax.local_devices()
    count = len(available) if devices is None else devices
    if not 1 <= count <= len(available):
        raise InputError("--devices", f"asks for {count} devices, but this machine has {len(available)} "
                                      f"({available[0].platform})")
    processes = jax.process_count()
    if processes == 1:
        hosts = hosts or 1
        if count % hosts:
            raise InputError("--devices", f"{count} devices cannot be cut into {hosts} simulated hosts")
        return Mesh(np.array(available[:count]).reshape(hosts, count // hosts), BATCH_AXES)
    if hosts not in (None, processes):
        raise ValueError(f"a mesh over {processes} processes has {processes} hosts, not {hosts}")
    # Every process takes the same first `count` of its devices, so the rows line up;
    # ordering by process keeps each host's devices (and its episode shards) together.
    by_process = [sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)[:count]
                  for p in range(processes)]
    if min(map(len, by_process)) < count:
        raise InputError("--devices", f"asks for {count} devices per process, but some process has fewer "
                                      f"({min(map(len, by_process))})")
    return Mesh(np.array(by_process), BATCH_AXES)


def check_batch_divides(mesh: Mesh, batch_size: int, what: str, shards: int = 1) -> None:
    """Refuse a batch that the mesh's devices, or the episode shards, cannot share equally."""
    if batch_size % mesh.size:
        raise InputError(what, f"a batch of {batch_size} cannot be split evenly over {mesh.size} devices "
                               f"(choose a multiple of {mesh.size}, or --devices that divides {batch_size})")
    if batch_size % shards:
        raise InputError(what, f"a batch of {batch_size} cannot be drawn evenly from {shards} episode shards "
                               f"(one per process; choose a multiple of {shards})")


def replicate(tree, mesh: Mesh):
    """``tree``'s arrays placed whole on every device of ``mesh``.

    With several processes each one passes its own copy, which must hold the same values
    (the fit broadcasts process 0's first); it is taken as this process's part as it is,
    with no check that costs a round trip per array.
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def place(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(place, tree)


def split_batch(tree, mesh: Mesh):
    """Inside a jitted function: ``tree``'s arrays split along their leading (batch) axis
    over every device of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def host_local(tree):
    """``tree`` with arrays that span other processes' devices replaced by this process's
    copy (they are replicated): what code outside the mesh, and checkpoints, can use.
    Arrays this process holds whole are returned as they are."""
    def local(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree.map(local, tree)


def episode_shards(episodes: Episodes, shards: int) -> list[np.ndarray]:
    """Which episodes each of ``shards`` parts holds: episode ``i`` goes to part ``i % shards``.

    Dealing (rather than cutting into runs) keeps the parts within one episode of each
    other in size, and an episode appended later never moves an old one to another part.

    Raises:
        InputError: there are fewer episodes than shards.
    """
    if episodes.num_episodes < shards:
        raise InputError("the training split", f"has {episodes.num_episodes} episodes, too few to give each of "
                                               f"{shards} episode shards one (record more episodes)")
    return [np.arange(s, episodes.num_episodes, shards) for s in range(shards)]


def sharded_sequence_data(episodes: Episodes, shards: int, mesh: Mesh, step_capacity: int | None = None,
                          episode_capacity: int | None = None) -> SequenceData:
    """The training episodes as `SequenceData` with a leading shard axis, split over the
    mesh's hosts: this process copies out and puts on its devices only the shards its
    hosts draw from (`episode_shards`).

    Every shard is padded to the same capacities (by default the next powers of two
    above the largest shard's), so the shards stack and a growing trace set recompiles
    only when the largest shard outgrows them; blocks read in turn (`worldmodel.streaming`)
    pass capacities that hold any block, so they never recompile.
    """
    hosts = mesh.shape[HOST_AXIS]
    if shards % hosts:
        raise ValueError(f"{shards} episode shards cannot be shared by {hosts} hosts")
    parts = episode_shards(episodes, shards)
    step_capacity = step_capacity or _next_power_of_two(max(int(episodes.lengths[part].sum()) for part in parts))
    episode_capacity = episode_capacity or _next_power_of_two(max(len(part) for part in parts))
    per_host = shards // hosts
    mine = [s for h in range(hosts) if mesh.devices[h, 0].process_index == jax.process_index()
            for s in range(h * per_host, (h + 1) * per_host)]
    # Built on the host's CPU: the arrays go to the mesh's devices from there, not through
    # the default accelerator and back.
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        local = [jax.tree.map(np.asarray, sequence_data(episodes if shards == 1 else episodes.select(parts[s]),
                                                        step_capacity, episode_capacity))
                 for s in mine]
    stacked = jax.tree.map(lambda *fields: np.stack(fields), *local)
    sharding = NamedSharding(mesh, PartitionSpec(HOST_AXIS))
    return jax.tree.map(
        lambda field: jax.make_array_from_process_local_data(sharding, field, (shards, *field.shape[1:])), stacked,
    )


def sample_global_batch(data: SequenceData, key: jax.Array, batch_size: int, length: int,
                        mesh: Mesh) -> SequenceBatch:
    """Inside a jitted function: one training batch of ``batch_size`` windows of
    ``length`` steps, drawn from sharded data (`sharded_sequence_data`) and split over
    every device of the mesh.

    Shard ``s`` of ``S`` draws ``batch_size / S`` windows with
    ``sample_sequences(shard, fold_in(key, s), ...)`` (with ``key`` itself when S is 1)
    on its own host, and the batch's row ``i * S + s`` is shard ``s``'s ``i``-th window:
    interleaved, so that each run of rows (an ensemble member's share) holds windows of
    every shard. Pure and jittable, with ``batch_size``, ``length`` and ``mesh`` static.
    """
    shards = data.num_steps.shape[0]
    per_shard = batch_size // shards

    def draw(local: SequenceData, key: jax.Array) -> SequenceBatch:
        count = local.num_steps.shape[0]
        if shards == 1:
            return jax.vmap(lambda shard: sample_sequences(shard, key, per_shard, length))(local)
        first = jax.lax.axis_index(HOST_AXIS) * count
        keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(first + np.arange(count))
        return jax.vmap(lambda shard, k: sample_sequences(shard, k, per_shard, length))(local, keys)

    # shard_map keeps every draw on the host that holds its shard: GSPMD left alone might
    # gather another host's episodes to draw them. A host's devices all draw its whole
    # part (a gather, cheap beside the model) and the constraint below keeps their slices.
    by_shard = jax.shard_map(draw, mesh=mesh, in_specs=(PartitionSpec(HOST_AXIS), PartitionSpec()),
                             out_specs=PartitionSpec(HOST_AXIS))(data, key)
    interleaved = jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(batch_size, *x.shape[2:]), by_shard)
    return split_batch(interleaved, mesh)


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())
