"""Shared fixtures: small sets of real recorded episodes."""

from __future__ import annotations

import pytest

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
