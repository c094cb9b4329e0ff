import gymnasium as gym
import pytest

from tasks.errors import InputError
from tasks.registry import TASKS, check_spaces_match, get_task, task_for_env_id


@pytest.mark.parametrize("name", ["cartpole", "pendulum", "halfcheetah", "hopper"])
def test_named_tasks_make_their_environment_with_the_task_horizon(name):
    task = get_task(name)
    env = task.make_env()
    try:
        assert env.spec.id == task.env_id
        assert env.spec.max_episode_steps == task.horizon
        assert env.observation_space == task.observation_space
    finally:
        env.close()


def test_any_gymnasium_id_is_a_task_with_its_spec_horizon_and_threshold():
    discrete = get_task("gym:Acrobot-v1")
    assert discrete.env_id == "Acrobot-v1"
    assert discrete.horizon == gym.spec("Acrobot-v1").max_episode_steps
    assert discrete.reward_threshold == gym.spec("Acrobot-v1").reward_threshold
    assert discrete.discrete_actions
    continuous = get_task("gym:MountainCarContinuous-v0")
    assert not continuous.discrete_actions
    assert continuous.observation_kind == "vector"


def test_unknown_task_and_unknown_gym_id_are_input_errors():
    with pytest.raises(InputError, match="unknown task"):
        get_task("pendullum")
    with pytest.raises(InputError, match="not a registered gymnasium environment"):
        get_task("gym:NoSuchEnv-v9")


def test_env_id_maps_back_to_the_registered_task():
    assert task_for_env_id("Pendulum-v1") is TASKS["pendulum"]
    assert task_for_env_id("Acrobot-v1").name == "gym:Acrobot-v1"


def test_space_check_rejects_another_tasks_spaces():
    pendulum, cartpole = get_task("pendulum"), get_task("cartpole")
    check_spaces_match(pendulum, pendulum.observation_space, pendulum.action_space, "here")
    with pytest.raises(InputError, match="observation space"):
        check_spaces_match(pendulum, cartpole.observation_space, pendulum.action_space, "here")
    with pytest.raises(InputError, match="action space"):
        check_spaces_match(pendulum, pendulum.observation_space, cartpole.action_space, "here")
