"""Speed of fitting the ensemble and of imagining with it, beside the machine's matmul rate.

    python benchmarks/bench_worldmodel.py        # prints one JSON object

Ensemble of 7 members, 4 hidden layers of 200 units (SiLU), on Pendulum traces. Fitting
is timed in transitions per second. Imagination is timed for 4096, 1024 and 256 start
states over a horizon of 15 with a 2x64 actor choosing the actions, with and without the
per-step disagreement, in imagined transitions per second (the median of 5 timings); its
useful work is the matmul FLOPs of one member per imagined transition plus the actor's
forward pass, shown as GFLOP/s and as a fraction of the float32 matmul rate measured in
the same run. Beside them: the disagreement's cost, and the rate a bare chain of one
hidden layer's matmuls reaches at 256 and 52 rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from dreamer.imagination import imagine  # noqa: E402
from policies.networks import Actor, NetworkConfig  # noqa: E402
from tasks.recording import RandomPolicy, record_episodes, reset_seeds  # noqa: E402
from tasks.registry import get_task  # noqa: E402
from worldmodel.ensemble import EnsembleConfig, EnsembleModel  # noqa: E402
from worldmodel.fit import FitConfig, fit_settings, fit_world_model  # noqa: E402

HORIZON = 15


def best_seconds(function, *args, repeats: int = 5, calls: int = 10) -> float:
    """The fastest of ``repeats`` timings of ``calls`` back-to-back calls, per call."""
    jax.block_until_ready(function(*args))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            result = function(*args)
        jax.block_until_ready(result)
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def median_seconds(function, *args, repeats: int = 5, calls: int = 10) -> float:
    """The median of ``repeats`` timings of ``calls`` back-to-back calls, per call."""
    jax.block_until_ready(function(*args))
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            result = function(*args)
        jax.block_until_ready(result)
        timings.append((time.perf_counter() - started) / calls)
    return float(np.median(timings))


def small_matmul_fraction(rows: int, width: int, peak: float) -> float:
    """The rate of a chain of dependent ``[rows, width] x [width, width]`` matmuls (one
    member's hidden layer at ``rows`` states) as a fraction of ``peak``: the ceiling
    small batches meet before any per-step work of imagination."""
    weights = jax.random.normal(jax.random.key(0), (width, width)) / width**0.5
    chain = jax.jit(lambda w, x: jax.lax.scan(lambda x, _: (x @ w, None), x, None, 60)[0].sum())
    seconds = median_seconds(chain, weights, jax.random.normal(jax.random.key(1), (rows, width)))
    return 60 * 2 * rows * width * width / seconds / 1e9 / peak


def matmul_gflops() -> float:
    """The best float32 matmul rate over a few square sizes (best of several timings)."""
    rates = []
    for size in (1024, 2048):
        a = jax.random.normal(jax.random.key(0), (size, size))
        b = jax.random.normal(jax.random.key(1), (size, size))
        rates.append(2 * size**3 / best_seconds(jax.jit(jnp.matmul), a, b) / 1e9)
    return max(rates)


def member_flops(model: EnsembleModel) -> int:
    """Matmul FLOPs of one member's forward pass for one transition."""
    config = model.config
    sizes = [model._obs_size + model.action_size] + [config.hidden_size] * config.hidden_layers
    dense = sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) + config.hidden_size * 2 * (model._obs_size + 1)
    return 2 * dense


def actor_flops(feature_size: int, action_size: int, network: NetworkConfig) -> int:
    sizes = [feature_size] + [network.hidden_size] * network.hidden_layers + [2 * action_size]
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def time_fit(model: EnsembleModel, episodes) -> dict:
    config = FitConfig(updates_per_call=250, max_updates=1000, patience=1000)
    fit_world_model(model, episodes, episodes, FitConfig(updates_per_call=250, max_updates=250), progress=False)
    result = fit_world_model(model, episodes, episodes, config, progress=False)
    transitions_per_second = result.transitions_per_second
    # Training is about three forward passes' work (forward, and two backward matmuls).
    return {
        "updates": result.updates,
        "batch_per_member": fit_settings(config, model).batch_size,
        "transitions_per_second": transitions_per_second,
        "gflops": transitions_per_second * 3 * member_flops(model) / 1e9,
    }


def time_imagination(model: EnsembleModel, actor: Actor, batch: int, with_uncertainty: bool) -> dict:
    model_graph, model_state = nnx.split(model)
    actor_graph, actor_state = nnx.split(actor)

    @jax.jit
    def rollout(model_state, actor_state, start_obs, key):
        world_model, policy = nnx.merge(model_graph, model_state), nnx.merge(actor_graph, actor_state)
        imagined = imagine(world_model, policy.sample, world_model.initial_state(start_obs), HORIZON, key, with_uncertainty)
        # Every output is reduced into the result, so none of the work can be skipped.
        return imagined.rewards.sum() + imagined.features.sum() + imagined.uncertainties.sum()

    start_obs = jax.random.normal(jax.random.key(0), (batch, *model.observation_shape))
    seconds = median_seconds(rollout, model_state, actor_state, start_obs, jax.random.key(1))
    transitions_per_second = batch * HORIZON / seconds
    useful = member_flops(model) + actor_flops(model._obs_size, model.action_size, actor.config)
    return {
        "batch": batch,
        "horizon": HORIZON,
        "with_uncertainty": with_uncertainty,
        "imagined_transitions_per_second": transitions_per_second,
        "useful_gflops": transitions_per_second * useful / 1e9,
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    task = get_task("pendulum")
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 100), progress=False)
    model = EnsembleModel(task.observation_space.shape, 1, False, EnsembleConfig(), nnx.Rngs(0))
    actor = Actor(task.observation_space.shape[0], task.action_space, NetworkConfig(), nnx.Rngs(1))
    peak_before = matmul_gflops()
    fit = time_fit(model, episodes)
    imagination = [time_imagination(model, actor, batch, uncertainty)
                   for uncertainty in (False, True) for batch in (4096, 1024, 256)]
    # This machine's speed drifts (shared cores); the rate is measured before and after,
    # and the higher taken, so fractions are never flattered by a slow moment.
    peak = max(peak_before, matmul_gflops())
    for entry in imagination:
        entry["fraction_of_matmul_rate"] = entry["useful_gflops"] / peak
    fit["fraction_of_matmul_rate"] = fit["gflops"] / peak
    rate = {(entry["batch"], entry["with_uncertainty"]): entry["imagined_transitions_per_second"]
            for entry in imagination}
    with_over_without = {str(batch): rate[batch, True] / rate[batch, False] for batch in (4096, 1024, 256)}
    ceiling = {str(rows): small_matmul_fraction(rows, 200, peak) for rows in (256, 52)}
    print(json.dumps({
        "machine": machine_info(),
        "matmul_gflops_float32": peak,
    "matmul_gflops_float32_first_measurement": peak_before,
        "ensemble": {"members": 7, "elites": 5, "hidden_layers": 4, "hidden_size": 200},
        "fit": fit,
        "imagination": imagination,
        # The per-step disagreement costs every elite's forward pass (five for one).
        "uncertainty_rate_over_plain_rate": with_over_without,
        # One hidden layer's matmul chain at 256 rows (one member for every state) and at
        # 52 (each of five elites' share of 256 states), as fractions of the rate.
        "hidden_layer_matmul_fraction_by_rows": ceiling,
    }, indent=2))


if __name__ == "__main__":
    main()
