"""Speed of the recurrent latent model (RSSM): training and imagination.

    python benchmarks/bench_rssm.py                  # the default preset (tiny), Pendulum's vectors
    python benchmarks/bench_rssm.py --size small     # one JSON object each
    python benchmarks/bench_rssm.py --task pendulum-pixels   # 64 x 64 camera frames

Training is one jitted Adam update of the full objective (filtering 64 steps, then the
reconstruction, reward, continue and KL losses) on a batch of 16 sequences of 64 real
Pendulum steps (vectors, or frames with ``--task pendulum-pixels``), drawn on the device
as `dreamer fit` draws them, timed in sequences and steps per second. Imagination is a 15-step dream from 1024 start states with a 2x64 actor
choosing each action from the latent features, timed in latent transitions per second
(the GRU step, the prior heads, a draw, and the reward and continue heads per transition).
The float32 matmul rate of the same run is printed beside them, as in bench_worldmodel.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_worldmodel import best_seconds, matmul_gflops  # noqa: E402
from machine import machine_info  # noqa: E402

from dreamer.imagination import imagine  # noqa: E402
from policies.networks import Actor, NetworkConfig  # noqa: E402
from tasks.recording import RandomPolicy, record_episodes, reset_seeds  # noqa: E402
from tasks.registry import get_task  # noqa: E402
from tasks.sampler import sample_sequences, sequence_data  # noqa: E402
from worldmodel.rssm import SIZE_PRESETS, RSSMConfig  # noqa: E402
from worldmodel.saving import build_model_for_spaces  # noqa: E402

BATCH, LENGTH = 16, 64
STARTS, HORIZON = 1024, 15


def time_training(model, episodes) -> dict:
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.adam(1e-4)
    data = sequence_data(episodes)

    @jax.jit
    def update(params, opt_state, key):
        batch = sample_sequences(data, key, BATCH, LENGTH)

        def loss(params):
            return nnx.merge(graph, params, rest).loss(batch)[0]

        value, grads = jax.value_and_grad(loss)(params)
        changes, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, changes), opt_state, value

    seconds = best_seconds(update, params, optimizer.init(params), jax.random.key(0), repeats=5, calls=5)
    return {"batch": BATCH, "length": LENGTH, "sequences_per_second": BATCH / seconds,
            "steps_per_second": BATCH * LENGTH / seconds, "seconds_per_update": seconds}


def time_imagination(model, actor, episodes) -> dict:
    model_graph, model_state = nnx.split(model)
    actor_graph, actor_state = nnx.split(actor)

    @jax.jit
    def rollout(model_state, actor_state, start_obs, key):
        world_model, policy = nnx.merge(model_graph, model_state), nnx.merge(actor_graph, actor_state)
        imagined = imagine(world_model, policy.sample, world_model.initial_state(start_obs), HORIZON, key)
        # Every output is reduced into the result, so none of the work can be skipped.
        return imagined.rewards.sum() + imagined.features.sum() + imagined.continues.sum()

    start_obs = episodes.observations[np.random.default_rng(0).integers(0, len(episodes.observations), STARTS)]
    seconds = best_seconds(rollout, model_state, actor_state, start_obs, jax.random.key(1))
    return {"start_states": STARTS, "horizon": HORIZON, "latent_transitions_per_second": STARTS * HORIZON / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZE_PRESETS), default=RSSMConfig().size, help="size preset")
    parser.add_argument("--task", choices=["pendulum", "pendulum-pixels"], default="pendulum",
                        help="Pendulum's state vectors, or its 64 x 64 camera frames")
    args = parser.parse_args()
    task = get_task(args.task)
    episodes = record_episodes(task, RandomPolicy(task.action_space), reset_seeds(0, 20), progress=False)
    model = build_model_for_spaces("rssm", task.observation_space, task.action_space, RSSMConfig(size=args.size))
    model.fit_statistics(episodes)
    feature_size = model.features(model.initial_state(episodes.observations[:1])).shape[-1]
    actor = Actor(feature_size, task.action_space, NetworkConfig(), nnx.Rngs(1))
    peak_before = matmul_gflops()
    training = time_training(model, episodes)
    imagination = time_imagination(model, actor, episodes)
    print(json.dumps({
        "machine": machine_info(),
        "backend": jax.default_backend(),
        "matmul_gflops_float32": max(peak_before, matmul_gflops()),
        "task": args.task,
        "rssm": {"size": args.size, **vars(SIZE_PRESETS[args.size])},
        "training": training,
        "imagination": imagination,
    }, indent=2))


if __name__ == "__main__":
    main()
