"""Fitting a world model on the training split, early-stopped on the validation split.

The hot loop is one jitted pure function that runs ``updates_per_call`` updates in a
`lax.scan`, drawing its minibatches on the device; the host only checks validation,
logs, and checkpoints between calls. Each call's key is folded from the seed and the
call's index, so a run resumed from a checkpoint continues exactly as an uninterrupted
one would. Works with any model of the interface; a model with ``validation_loss`` and
``select_elites`` (the ensemble) also gets its elites chosen.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from tasks.config import config, option
from tasks.episodes import Episodes
from tasks.errors import RunFailed
from tasks.run_directory import RunDirectory
from tasks.sampler import SequenceData, window_batch
from worldmodel import hosts
from worldmodel.sharding import (HOST_AXIS, check_batch_divides, data_mesh, host_local, replicate,
                                 sample_global_batch, sharded_sequence_data)
from worldmodel.streaming import StreamedFitData, TraceStream


@config
class FitConfig:
    """How a world model is fitted.

    Attributes:
        batch_size: transitions per ensemble member (or sequences) per update.
        sequence_length: steps per training window.
        learning_rate: Adam step size.
        weight_decay: decoupled weight decay on kernels.
        updates_per_call: updates fused into one jitted call; validation runs between calls.
        max_updates: stop after this many updates even if validation still improves.
        patience: stop after this many validations without a relative improvement of
            ``min_improvement``.
        min_improvement: the relative drop in validation loss that counts as progress.

    A setting left None is the model's own (``model.fit_defaults``, `fit_settings`): the
    ensemble learns from 256 one-step transitions per member at 1e-3, the RSSM from 16
    windows of 32 steps at 3e-4, with fewer updates when it reads camera frames.
    """

    batch_size: int | None = option(None, min=1)
    sequence_length: int | None = option(None, min=1)
    learning_rate: float | None = option(None, min=0)
    weight_decay: float = option(1e-5, min=0)
    updates_per_call: int = option(250, min=1)
    max_updates: int | None = option(None, min=1)
    patience: int = option(5, min=1)
    min_improvement: float = option(0.01, min=0)


# For a model that names no settings of its own (``fit_defaults``): the ensemble's.
FALLBACK_SETTINGS = {"batch_size": 256, "sequence_length": 1, "learning_rate": 1e-3, "max_updates": 20000}


def fit_settings(config: FitConfig, model: nnx.Module) -> FitConfig:
    """``config`` with every setting it leaves None taken from ``model.fit_defaults``
    (a mapping of `FitConfig` fields), or else from `FALLBACK_SETTINGS`."""
    own = {**FALLBACK_SETTINGS, **getattr(model, "fit_defaults", {})}
    return dataclasses.replace(config, **{name: value for name, value in own.items() if getattr(config, name) is None})


class FitDiverged(RunFailed):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What a fit produced and how it went."""

    model: nnx.Module
    updates: int
    validation_loss: float
    stopped_early: bool
    transitions_per_second: float
    wall_seconds: float


def fit_world_model(
    model: nnx.Module,
    train: Episodes | TraceStream,
    validation: Episodes | None,
    config: FitConfig,
    seed: int | jax.Array = 0,
    run: RunDirectory | None = None,
    resume: bool = False,
    progress: bool = True,
    metric_prefix: str = "world_model/",
    mesh: Mesh | None = None,
    shards: int | None = None,
) -> FitResult:
    """Fit ``model`` in place on ``train``, early-stopped on ``validation``.

    Args:
        model: any world model; its current parameters are the starting point, so a
            model fitted earlier is warm-started.
        train: the training episodes, or a `worldmodel.streaming.TraceStream`: a trace
            file's training and validation episodes read from disk in blocks while fitting
            (for files larger than memory; then ``validation`` is not used).
        validation: the validation episodes; None falls back to the training episodes
            for elite choice and stops only at ``max_updates``.
        config: fitting settings.
        seed: seed (or a JAX key) of minibatch draws.
        run: where metrics and checkpoints go; None keeps nothing on disk.
        resume: continue from the run's last checkpoint.
        progress: show a progress bar on stderr.
        metric_prefix: prefix of the logged metric names.
        mesh: devices to split each training batch over (`worldmodel.sharding`);
            None: all local devices (of every process, in a job of several).
        shards: parts the training episodes are dealt into, each drawn from by one host
            of the mesh (`worldmodel.sharding.sample_global_batch`); None: one per host.
            A process holding every shard draws the batches a job of that many
            processes draws.

    With several processes (`worldmodel.hosts`) every process passes the whole training
    and validation split (normalisers are fitted on all of it) but puts only its own
    shard of the training episodes on its devices; only the process given ``run``
    writes, and a resumed run continues on every process from that one's checkpoint.

    Raises:
        FitDiverged: the loss became NaN or infinite.
    """
    started = time.perf_counter()
    members = getattr(getattr(model, "config", None), "members", 1)
    config = fit_settings(config, model)
    mesh = mesh or data_mesh()
    shards = shards or mesh.shape[HOST_AXIS]
    check_batch_divides(mesh, config.batch_size * members,
                        "--fit.batch-size" + (" x --ensemble.members" if members > 1 else ""), shards)
    if isinstance(train, TraceStream):
        source = StreamedFitData(train, config.sequence_length, shards, mesh, _seed_number(seed))
    else:
        source = FitDataInMemory(train, validation, config.sequence_length, shards, mesh)
    try:
        return _fit(model, source, config, members, seed, run, resume, progress, metric_prefix, mesh, started)
    finally:
        source.close()


class FitDataInMemory:
    """What `fit_world_model` fits from, held whole on the mesh: the training episodes and
    one batch of every validation window (`worldmodel.streaming.StreamedFitData` reads
    a trace file in blocks instead)."""

    def __init__(self, train: Episodes, validation: Episodes | None, sequence_length: int, shards: int, mesh: Mesh):
        self.statistics = train
        self.has_validation = validation is not None
        self._data = sharded_sequence_data(train, shards, mesh)
        self._validation = replicate(window_batch(validation if validation is not None else train, sequence_length), mesh)

    def training_data(self, call: int) -> SequenceData:
        return self._data

    def validation_batches(self):
        yield self._validation, 1.0

    def close(self) -> None:
        pass


def _fit(model, source, config: FitConfig, members: int, seed, run, resume, progress, metric_prefix, mesh,
         started) -> FitResult:
    """`fit_world_model` once its data source is open."""
    if hasattr(model, "fit_statistics"):
        model.fit_statistics(source.statistics)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # Replicas that differed would train different models without a word: every process
    # starts from process 0's weights and normalisers.
    params, rest = hosts.from_process_zero((params, rest))
    train_calls, validate, optimizer = _compiled_functions(graphdef, config, members, mesh)
    opt_state = optimizer.init(params)

    progress_state = {"call": 0, "updates": 0, "best_loss": math.inf, "stale": 0, "best_call": -1}
    best_params = params
    manager = run.checkpoint_manager("world_model") if run is not None else None
    if resume and manager is not None:
        if manager.latest_step() is not None:
            params, opt_state, best_params, progress_state = _restore(manager, params, opt_state, rest)
        # Lines logged after the last checkpoint are logged again as the work is redone.
        run.truncate_metrics(progress_state["updates"])
    if resume and jax.process_count() > 1:  # only process 0 has the checkpoint
        params, opt_state, best_params, progress_state = _from_process_zero(params, opt_state, best_params,
                                                                            progress_state)
    fresh = best_params is params
    # The optimiser's step count is replicated too, or the second call recompiles.
    params, rest, opt_state = replicate((params, rest, opt_state), mesh)
    best_params = params if fresh else replicate(best_params, mesh)

    calls = math.ceil(config.max_updates / config.updates_per_call)
    key = seed if isinstance(seed, jax.Array) else jax.random.key(seed)
    bar = tqdm(total=calls * config.updates_per_call, initial=progress_state["updates"], unit="upd",
               desc="fit world model", disable=not progress, file=sys.stderr, leave=False)
    try:
        # A resumed run that had already stopped early stays stopped.
        stopped_early = source.has_validation and progress_state["stale"] >= config.patience
        while progress_state["call"] < calls and not stopped_early:
            call = progress_state["call"]
            data = source.training_data(call)
            params, opt_state, metrics = train_calls(params, opt_state, rest, data, jax.random.fold_in(key, call))
            del data  # a streamed block's memory goes before the next is read
            updates = (call + 1) * config.updates_per_call
            train_loss = float(metrics["loss"])
            if not math.isfinite(train_loss):
                last = manager.latest_step() if manager is not None else None
                kept = f"the last good checkpoint (update {last}) is kept in {run.checkpoint_path}" if last else "no checkpoint was written yet"
                raise FitDiverged(f"world-model loss became {train_loss} by update {updates}; {kept}")
            validation_loss, validation_metrics = _validate_all(validate, params, rest, source)
            improved = validation_loss < progress_state["best_loss"] - config.min_improvement * abs(progress_state["best_loss"])
            if improved or not math.isfinite(progress_state["best_loss"]):
                best_params = params
                progress_state.update(best_loss=validation_loss, stale=0, best_call=call)
            else:
                progress_state["stale"] += 1
            progress_state.update(call=call + 1, updates=updates)
            logged = {f"{metric_prefix}train_{k}": v for k, v in metrics.items()}
            logged.update({f"{metric_prefix}validation_{k}": v for k, v in validation_metrics.items() if np.ndim(v) == 0})
            logged[f"{metric_prefix}validation_loss"] = validation_loss
            bar.update(config.updates_per_call)
            bar.set_postfix(train=f"{train_loss:.3f}", validation=f"{validation_loss:.4f}")
            if run is not None:
                run.log(updates, logged)
            if manager is not None:
                _save(run, manager, graphdef, *hosts.savable((params, opt_state, best_params, rest)), progress_state)
            stopped_early = source.has_validation and progress_state["stale"] >= config.patience
    finally:
        bar.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()

    # The model leaves the mesh as this process's copy, usable beside arrays of its own.
    nnx.update(model, host_local(best_params))
    if hasattr(model, "select_elites") and hasattr(model, "validation_loss"):
        _, final_metrics = _validate_all(validate, best_params, rest, source)
        model.select_elites(final_metrics["member_mse"])
    seconds = time.perf_counter() - started
    transitions = progress_state["updates"] * config.batch_size * members * config.sequence_length
    return FitResult(
        model=model,
        updates=progress_state["updates"],
        validation_loss=progress_state["best_loss"],
        stopped_early=stopped_early,
        transitions_per_second=transitions / seconds,
        wall_seconds=seconds,
    )


@functools.lru_cache(maxsize=8)
def _compiled_functions(graphdef, config: FitConfig, members: int, mesh: Mesh):
    """The jitted training and validation functions, built once per model structure.

    The online loop refits the same model every round; keeping the same jitted functions
    means a round only compiles again when the data outgrows its padded capacity.
    """
    optimizer = _optimizer(config)
    return _make_train_calls(graphdef, optimizer, config, members, mesh), _make_validate(graphdef, mesh), optimizer


def _seed_number(seed: int | jax.Array) -> int:
    """An integer for numpy's draws (block order) from a seed or a JAX key."""
    if isinstance(seed, jax.Array):
        return int(np.asarray(jax.random.key_data(seed)).ravel()[-1])
    return int(seed)


def _optimizer(config: FitConfig) -> optax.GradientTransformation:
    decay_kernels_only = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: any(getattr(key, "key", None) == "kernel" for key in path), params
    )
    return optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.adamw(config.learning_rate, weight_decay=config.weight_decay, mask=decay_kernels_only),
    )


def _make_train_calls(graphdef, optimizer, config: FitConfig, members: int, mesh: Mesh):
    """One jitted call running ``updates_per_call`` updates in a scan, each batch split
    over ``mesh``'s devices (the same batch is drawn whatever their number)."""

    def loss_fn(params, rest, batch):
        model = nnx.merge(graphdef, params, rest)
        return model.loss(batch)

    def update(carry, key):
        params, opt_state, rest, data = carry
        batch = sample_global_batch(data, key, config.batch_size * members, config.sequence_length, mesh)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, rest, data), {"loss": loss, **metrics}

    # Outputs replicated, so every process can read the metrics and the weights whole.
    @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, PartitionSpec()))
    def train_calls(params, opt_state, rest, data, key):
        keys = jax.random.split(key, config.updates_per_call)
        (params, opt_state, _, _), metrics = jax.lax.scan(update, (params, opt_state, rest, data), keys)
        return params, opt_state, jax.tree.map(jnp.mean, metrics)

    return train_calls


def _make_validate(graphdef, mesh: Mesh):
    @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, PartitionSpec()))
    def validate(params, rest, batch):
        model = nnx.merge(graphdef, params, rest)
        evaluate = getattr(model, "validation_loss", model.loss)
        return evaluate(batch)

    return validate


def _validate_all(validate, params, rest, source) -> tuple[float, dict]:
    """The validation loss and metrics over every validation batch of ``source``: one
    batch's as they are, several batches' averaged weighted by their real steps."""
    results = [(host_local(validate(params, rest, batch)), weight) for batch, weight in source.validation_batches()]
    if len(results) == 1:
        (loss, metrics), _ = results[0]
        return float(loss), {name: np.asarray(value) for name, value in metrics.items()}
    weights = np.array([weight for _, weight in results]) / sum(weight for _, weight in results)
    loss = float(sum(w * float(loss) for w, ((loss, _), _) in zip(weights, results)))
    metrics = {name: sum(w * np.asarray(metrics[name], dtype=np.float64) for w, ((_, metrics), _) in zip(weights, results))
               for name in results[0][0][1]}
    return loss, metrics


# -- checkpoints ----------------------------------------------------------------------


def _save(run, manager, graphdef, params, opt_state, best_params, rest, progress_state) -> None:
    best_model = nnx.merge(graphdef, best_params, rest)
    run.save(
        manager,
        progress_state["updates"],
        args=ocp.args.Composite(
            model=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(best_model))),
            train=ocp.args.StandardSave({"params": params, "opt_state": opt_state, "best_params": best_params}),
            progress=ocp.args.JsonSave(progress_state),
        ),
    )


def _from_process_zero(params, opt_state, best_params, progress_state):
    """Process 0's training state (restored from its checkpoint) on every process."""
    # The progress numbers travel as float32 (JAX's default); the best loss (a float32
    # loss, or inf) and counts below 2**24 survive that exactly.
    numbers = {name: np.float32(value) for name, value in progress_state.items()}
    params, opt_state, best_params, numbers = hosts.from_process_zero((params, opt_state, best_params, numbers))
    progress_state = {name: float(value) if name == "best_loss" else int(value) for name, value in numbers.items()}
    return params, opt_state, best_params, progress_state


def _restore(manager, params, opt_state, rest):
    target = {"params": params, "opt_state": opt_state, "best_params": params}
    # In a job of several processes this one restores alone, as numpy (`hosts.savable`).
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target) if jax.process_count() == 1 else hosts.savable(target)
    restored = manager.restore(
        manager.latest_step(),
        args=ocp.args.Composite(train=ocp.args.StandardRestore(target), progress=ocp.args.JsonRestore()),
    )
    train = restored["train"]
    return train["params"], train["opt_state"], train["best_params"], dict(restored["progress"])
