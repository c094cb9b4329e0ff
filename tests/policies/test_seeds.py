"""Many seeds in one call: SAC and PPO seeds that act and learn as one vmapped program
equal the same seeds run one by one, and ``auto`` keeps them apart on a CPU."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from policies.networks import NetworkConfig
from policies.ppo import PPO, PPOConfig
from policies.real_collection import VectorCollector, real_vector_env
from policies.real_training import split_by_seed, train_on_real, train_seeds_on_real
from policies.sac import SAC, SACConfig
from policies.seeds import learner_seeds, one_seed, seeds_in_one_call
from tasks.registry import get_task

SEEDS = (0, 1)
TINY_SAC = SACConfig(batch_size=16, learning_starts=50, updates_per_call=25,
                     network=NetworkConfig(hidden_size=16, hidden_layers=1, min_std=0.01, max_std=2.0))
TINY_PPO = PPOConfig(num_envs=2, steps_per_rollout=16, minibatch_size=16, epochs=2,
                     network=NetworkConfig(hidden_size=16, hidden_layers=1, activation="tanh"))


def assert_trees_close(got, want, rtol=1e-5, atol=1e-6):
    for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(got_leaf), np.asarray(want_leaf), rtol=rtol, atol=atol)


def test_sac_seeds_in_one_call_equal_sac_seeds_one_by_one():
    task, chunks = get_task("pendulum"), 4  # one chunk only stored, three of 25 updates each
    make = lambda seed: SAC(3, task.action_space, TINY_SAC, total_steps=100, seed=seed)  # noqa: E731

    one_by_one = []
    for seed in SEEDS:
        learner, collector = make(seed), VectorCollector(real_vector_env(task, 1), seeds=[100 + seed])
        for _ in range(chunks):
            learner.learn(collector.collect(learner.act, learner.steps_per_chunk))
        collector.close()
        one_by_one.append(learner.state)

    together = learner_seeds([make(seed) for seed in SEEDS])
    collector = VectorCollector(real_vector_env(task, len(SEEDS)), seeds=[100 + seed for seed in SEEDS])
    for _ in range(chunks):
        together.learn(split_by_seed(collector.collect(together.act, together.steps_per_chunk), len(SEEDS)))
    collector.close()

    for index, state in enumerate(one_by_one):
        assert int(state.updates) == 75
        assert_trees_close(one_seed(together.state, index), state)  # networks, optimisers, replay buffer


def test_ppo_seeds_trained_on_real_in_one_call_equal_ppo_seeds_one_by_one():
    task, steps = get_task("cartpole"), 96  # three rollouts of 2 x 16 steps, discrete actions
    make = lambda seed: PPO(4, task.action_space, TINY_PPO, total_steps=steps, seed=seed)  # noqa: E731
    training = [[10 * seed, 10 * seed + 1] for seed in SEEDS]
    evaluation = [[1000 + seed] for seed in SEEDS]

    one_by_one = [(learner, train_on_real(task, learner, steps, training[i], evaluation[i], eval_every=64,
                                          progress=False, seed=seed))
                  for i, (seed, learner) in enumerate((seed, make(seed)) for seed in SEEDS)]
    logged = [[], []]
    together = learner_seeds([make(seed) for seed in SEEDS])
    results = train_seeds_on_real(task, together, steps, training, evaluation, SEEDS, eval_every=64,
                                  logs=[lambda s, m, i=i: logged[i].append(s) for i in range(len(SEEDS))],
                                  progress=False)

    for index, (learner, alone) in enumerate(one_by_one):
        assert_trees_close(one_seed(together.state, index), learner.state)
        assert results[index] == alone  # the same grid, returns and real steps
        assert logged[index] == [32, 64, 96]


def test_auto_runs_seeds_in_one_call_on_an_accelerator_only():
    assert seeds_in_one_call("auto", backend="cpu") is False
    assert seeds_in_one_call("auto", backend="gpu") is seeds_in_one_call("auto", backend="tpu") is True
    assert seeds_in_one_call("auto") is (jax.default_backend() != "cpu")
    assert seeds_in_one_call("always", backend="cpu") and not seeds_in_one_call("never", backend="gpu")
    with pytest.raises(ValueError, match="auto, always or never"):
        seeds_in_one_call("sometimes")
