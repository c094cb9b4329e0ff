"""Shared fixtures: small sets of real recorded episodes, and one compilation cache.

Each fit and each dream builds its own jitted step, so the tests share JAX's persistent
compilation cache (a temporary folder for the session, handed to CLI subprocesses
through the environment): programs of the same shapes then compile once, not once per
test. The cache only stores XLA executables; what runs is the real code either way.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache

from tasks.recording import RandomPolicy, record_episodes, reset_seeds
from tasks.registry import get_task


def record_random(task_name: str, episodes: int, seed: int = 0):
    task = get_task(task_name)
    return record_episodes(task, RandomPolicy(task.action_space), reset_seeds(seed, episodes), progress=False)


@pytest.fixture(scope="session", name="record_random")
def record_random_fixture():
    """`record_random(task_name, episodes, seed=0)`: real random-policy episodes."""
    return record_random


@pytest.fixture(scope="session")
def pendulum_episodes():
    """Six random Pendulum-v1 episodes (200 steps each, all truncated)."""
    return record_random("pendulum", 6)


@pytest.fixture(scope="session")
def cartpole_episodes():
    """Twenty random CartPole-v1 episodes (short, ending in termination)."""
    return record_random("cartpole", 20)


def module_leaves(module) -> dict[str, np.ndarray]:
    """Every array of a module's state (parameters and statistics), by path."""
    flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(module)))[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def assert_same_state(a, b) -> None:
    a, b = module_leaves(a), module_leaves(b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="session", name="module_leaves")
def module_leaves_fixture():
    """`module_leaves(module)`: every array of a module's state, by path."""
    return module_leaves


@pytest.fixture(scope="session", name="assert_same_state")
def assert_same_state_fixture():
    """`assert_same_state(a, b)`: two modules hold bit-identical state (for resume tests)."""
    return assert_same_state


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this session, in a temporary folder."""
    path = tmp_path_factory.mktemp("jax-compilation-cache")
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    yield path
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


@pytest.fixture(scope="session")
def cli_env(jax_compilation_cache):
    """The environment of `python -m dreamer.cli` subprocesses: the same compilation cache."""
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(jax_compilation_cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
