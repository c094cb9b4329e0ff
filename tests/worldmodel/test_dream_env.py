"""The world model as a gymnasium environment: `DreamEnv`, `DreamVectorEnv`, their functional core.

Everything runs on the tiny fitted ensembles of the session fixtures. Where N vector
environments must equal N lone ones step for step, the model is a one-elite ensemble
fitted on the same traces: a model whose step draws nothing (see
`worldmodel.dream_functional` on why a stochastic ensemble shares its draw over a batch).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import warnings

import gymnasium as gym
import jax
import numpy as np
import pytest
from flax import nnx
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from dreamer.cli import main
from tasks.errors import InputError
from tasks.splits import fitting_episodes
from tasks.traces import read_traces
from worldmodel import dream_functional as dream
from worldmodel.dream_env import DreamEnv
from worldmodel.dream_vector_env import DreamVectorEnv
from worldmodel.ensemble import EnsembleConfig
from worldmodel.registration import DREAM_ENV_ID, register_environments
from worldmodel.saving import build_model


@pytest.fixture(scope="module")
def one_elite_cartpole_run(tmp_path_factory, cartpole_traces, fit_argv):
    """A CartPole ensemble fitted like `cartpole_run` but imagining with a single elite."""
    out = tmp_path_factory.mktemp("runs") / "cartpole-one-elite"
    argv = fit_argv(cartpole_traces, out, 25, "--ensemble.elites", "1")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(argv) == 0, err.getvalue()
    return out


def rollout(env: DreamEnv, actions, seed: int) -> list[tuple]:
    """(obs, reward, terminated, truncated, info) of each step after ``reset(seed=seed)``."""
    steps = [(env.reset(seed=seed)[0], 0.0, False, False, {})]
    return steps + [env.step(action) for action in actions]


# -- the single environment --------------------------------------------------------------


@pytest.mark.parametrize("run", ["pendulum_run", "cartpole_run"])
def test_dream_env_passes_gymnasiums_environment_checker(run, request):
    env = gym.make(DREAM_ENV_ID, world_model=str(request.getfixturevalue(run)), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CartPole's unbounded velocities are warned about
        check_env(env.unwrapped)
    assert env.observation_space == env.unwrapped.task.observation_space
    assert env.action_space == env.unwrapped.task.action_space


def test_the_same_seed_gives_the_same_episode_and_other_seeds_other_starts(pendulum_run):
    env, other = DreamEnv(str(pendulum_run)), DreamEnv(str(pendulum_run))
    actions = np.random.default_rng(0).uniform(-2, 2, size=(25, 1)).astype(np.float32)
    first, again = rollout(env, actions, seed=3), rollout(other, actions, seed=3)
    for (obs, *rest), (obs2, *rest2) in zip(first, again):
        np.testing.assert_array_equal(obs, obs2)
        assert rest == rest2
    assert {"uncertainty", "continue_prob"} <= set(first[1][4])

    starts = {env.reset(seed=seed)[0].tobytes() for seed in range(10)}
    assert len(starts) > 1  # 7 training episodes to start from
    anywhere = DreamEnv(str(pendulum_run), start="any")
    assert anywhere.reset(seed=0)[0].tobytes() != anywhere.reset(seed=1)[0].tobytes()
    # The constructor's seed is the first reset's when that reset names none.
    seeded = DreamEnv(str(pendulum_run), start="any", seed=1)
    assert seeded.reset()[0].tobytes() == anywhere.reset(seed=1)[0].tobytes()


def test_leaving_out_the_uncertainty_changes_nothing_else(pendulum_run):
    with_it, without = DreamEnv(str(pendulum_run)), DreamEnv(str(pendulum_run), with_uncertainty=False)
    actions = np.random.default_rng(1).uniform(-2, 2, size=(10, 1)).astype(np.float32)
    for first, second in zip(rollout(with_it, actions, 0)[1:], rollout(without, actions, 0)[1:]):
        np.testing.assert_allclose(first[0], second[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(first[1], second[1], rtol=1e-6, atol=1e-6)
        assert first[2:4] == second[2:4] and "uncertainty" in first[4] and "uncertainty" not in second[4]
        np.testing.assert_allclose(first[4]["continue_prob"], second[4]["continue_prob"], rtol=1e-6)


def test_episodes_start_from_the_training_split(pendulum_run, pendulum_traces):
    train, _ = fitting_episodes(read_traces(pendulum_traces).episodes, split_seed=0)
    initial = train.observations[train.step_offsets[:-1] + np.arange(train.num_episodes)]
    env, anywhere = DreamEnv(str(pendulum_run)), DreamEnv(str(pendulum_run), start="any")
    np.testing.assert_array_equal(np.asarray(env.dream.params.start_observations), initial)
    assert len(anywhere.dream.params.start_observations) == train.num_steps
    for seed in range(5):
        assert np.any(np.all(env.reset(seed=seed)[0] == initial, axis=1))
        assert np.any(np.all(anywhere.reset(seed=seed)[0] == train.observations, axis=1))


def test_episodes_are_truncated_exactly_at_the_horizon(pendulum_run):
    env = DreamEnv(str(pendulum_run), termination="threshold")
    assert env.horizon == 200  # Pendulum's
    env.reset(seed=0)
    ends = [env.step(np.array([0.0], dtype=np.float32))[2:4] for _ in range(200)]
    assert ends[:-1] == [(False, False)] * 199
    assert ends[-1] == (False, True)

    short = DreamEnv(str(pendulum_run), termination="threshold", horizon=3)
    short.reset(seed=0)
    assert [short.step(np.array([1.0], dtype=np.float32))[3] for _ in range(3)] == [False, False, True]


def test_observations_are_always_inside_the_observation_space(cartpole_run):
    env = DreamEnv(str(cartpole_run), horizon=50)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    for _ in range(150):
        assert obs in env.observation_space
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()


# -- the vector environment --------------------------------------------------------------


def assert_vector_env_matches_single_envs(vector: DreamVectorEnv, singles: list[DreamEnv]) -> None:
    """Step both through 20 steps (episodes of at most 6) with the same seeds and actions."""
    num_envs = len(singles)
    vector.action_space.seed(1)
    actions = [vector.action_space.sample() for _ in range(20)]
    observations, _ = vector.reset(seed=10)
    expected = np.stack([env.reset(seed=10 + i)[0] for i, env in enumerate(singles)])
    np.testing.assert_array_equal(observations, expected)
    ended = np.zeros(num_envs, dtype=bool)
    endings = np.zeros(num_envs, dtype=int)
    for action in actions:
        obs, rewards, terminations, truncations, infos = vector.step(action)
        for i, env in enumerate(singles):
            if ended[i]:  # next-step autoreset: the reset observation, reward 0, no ending
                single = (env.reset()[0], 0.0, False, False)
            else:
                single = env.step(action[i])[:4]
            np.testing.assert_allclose(obs[i], single[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(rewards[i], single[1], rtol=1e-5, atol=1e-6)
            assert (terminations[i], truncations[i]) == single[2:4]
            assert infos["_uncertainty"][i] == (not ended[i])
        ended = terminations | truncations
        endings += ended
    assert (endings >= 2).all()  # every environment was autoreset at least twice


@pytest.mark.parametrize("num_envs", [1, 3])
def test_vector_env_matches_single_envs_with_the_same_seeds(num_envs, one_elite_cartpole_run, pendulum_run):
    # One environment equals one DreamEnv even with the stochastic two-elite ensemble.
    run = pendulum_run if num_envs == 1 else one_elite_cartpole_run
    vector = DreamVectorEnv(str(run), num_envs=num_envs, horizon=6)
    assert_vector_env_matches_single_envs(vector, [DreamEnv(str(run), horizon=6) for _ in range(num_envs)])


def test_per_environment_draws_make_each_vector_env_its_single_env(pendulum_run):
    # The two-elite ensemble draws its elites: shared draws would tie the rows together.
    vector = DreamVectorEnv(str(pendulum_run), num_envs=3, horizon=6, draws="per_environment")
    assert_vector_env_matches_single_envs(vector, [DreamEnv(str(pendulum_run), horizon=6) for _ in range(3)])
    with pytest.raises(ValueError, match="per_environment"):
        DreamVectorEnv(str(pendulum_run), num_envs=2, draws="each")


@pytest.mark.parametrize("dream_noise", [False, True])
def test_the_ensembles_row_steps_equal_steps_of_batches_of_one(dream_noise):
    model = build_model("ensemble", (3,), 1, False, EnsembleConfig(members=4, elites=3, hidden_size=16,
                                                                    hidden_layers=1, dream_noise=dream_noise))
    states = jax.random.normal(jax.random.key(1), (7, 3))
    actions = jax.random.uniform(jax.random.key(2), (7, 1), minval=-2, maxval=2)
    keys = jax.random.split(jax.random.key(3), 7)

    rows = model.step_rows(states, actions, keys)

    for i in range(7):
        alone = model.step(states[i:i + 1], actions[i:i + 1], keys[i])
        for together, single in zip(rows, alone):
            np.testing.assert_allclose(together[i], single[0], rtol=1e-5, atol=1e-6)
    # the rows do not all share one elite: the step is not the batch's shared draw
    shared = model.step(states, actions, keys[0])[0]
    assert not np.allclose(rows[0], shared)


def test_vector_env_spaces_and_autoreset_mode_are_gymnasiums(cartpole_run):
    vector = DreamVectorEnv(str(cartpole_run), num_envs=4)
    assert vector.metadata["autoreset_mode"] is gym.vector.AutoresetMode.NEXT_STEP
    assert vector.single_observation_space == vector.task.observation_space
    assert vector.observation_space == gym.vector.utils.batch_space(vector.single_observation_space, 4)
    assert vector.action_space == gym.spaces.MultiDiscrete([2, 2, 2, 2])
    observations, infos = vector.reset(seed=0)
    assert observations in vector.observation_space and infos == {}
    observations, rewards, terminations, truncations, infos = vector.step(vector.action_space.sample())
    assert observations in vector.observation_space
    assert rewards.shape == terminations.shape == truncations.shape == (4,)
    assert terminations.dtype == truncations.dtype == np.bool_
    assert set(infos) == {"uncertainty", "_uncertainty", "continue_prob", "_continue_prob"}


def test_same_step_autoreset_shows_the_new_start_and_keeps_the_final_observation(one_elite_cartpole_run):
    """Same-step mode steps as next-step mode does, and an ending step already shows a new start."""
    same = DreamVectorEnv(str(one_elite_cartpole_run), num_envs=3, horizon=6, autoreset_mode="same_step")
    nxt = DreamVectorEnv(str(one_elite_cartpole_run), num_envs=3, horizon=6)
    assert same.metadata["autoreset_mode"] is gym.vector.AutoresetMode.SAME_STEP
    assert nxt.metadata["autoreset_mode"] is gym.vector.AutoresetMode.NEXT_STEP
    np.testing.assert_array_equal(same.reset(seed=4)[0], nxt.reset(seed=4)[0])
    ends = 0
    for _ in range(6):  # every episode is truncated at step 6 at the latest
        action = np.ones(3, dtype=np.int64)
        obs, rewards, terminations, truncations, infos = same.step(action)
        expected = nxt.step(action)
        np.testing.assert_allclose(rewards, expected[1], rtol=1e-6)
        ended = terminations | truncations
        np.testing.assert_array_equal(infos["_final_obs"], ended)
        np.testing.assert_allclose(infos["final_obs"][ended], expected[0][ended], rtol=1e-6)
        np.testing.assert_allclose(obs[~ended], expected[0][~ended], rtol=1e-6)
        if ended.any():
            ends += ended.sum()
            starts = np.asarray(same.dream.params.start_observations)
            for start in obs[ended]:
                assert np.isclose(starts, start).all(axis=1).any()
            break
    assert ends >= 1
    with pytest.raises(ValueError, match="next_step"):
        DreamVectorEnv(str(one_elite_cartpole_run), num_envs=2, autoreset_mode="never")


def test_vector_env_resets_only_the_masked_environments(pendulum_run):
    vector = DreamVectorEnv(str(pendulum_run), num_envs=3, start="any")
    vector.reset(seed=0)
    stepped, *_ = vector.step(np.zeros((3, 1), dtype=np.float32))
    mask = np.array([False, True, False])
    observations, _ = vector.reset(seed=[None, 7, None], options={"reset_mask": mask})
    np.testing.assert_array_equal(observations[~mask], stepped[~mask])
    np.testing.assert_array_equal(observations[1], DreamEnv(str(pendulum_run), start="any").reset(seed=7)[0])


def test_record_episode_statistics_reports_episode_returns_and_lengths(pendulum_run):
    envs = RecordEpisodeStatistics(DreamVectorEnv(str(pendulum_run), num_envs=3, termination="threshold", horizon=4))
    envs.reset(seed=0)
    returns, reported = np.zeros(3), []
    for step in range(10):
        _, rewards, terminations, truncations, infos = envs.step(np.full((3, 1), 0.5, dtype=np.float32))
        returns += rewards
        if "episode" in infos:
            assert infos["_episode"].all() and truncations.all() and not terminations.any()
            np.testing.assert_allclose(infos["episode"]["r"], returns)
            np.testing.assert_array_equal(infos["episode"]["l"], [4, 4, 4])
            reported.append(step)
            returns[:] = 0
    assert reported == [3, 8]  # step 4 of each episode; the step after an end is the reset
    assert len(envs.return_queue) == 6 and set(envs.length_queue) == {4}


# -- the registry --------------------------------------------------------------------------


def test_importing_worldmodel_registers_the_dream_without_loading_jax():
    code = ("import sys, gymnasium, worldmodel; spec = gymnasium.spec('dreamer/Dream-v0'); "
            "print(spec.entry_point, spec.vector_entry_point, [m for m in ('jax', 'orbax') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["worldmodel.dream_env:DreamEnv", "worldmodel.dream_vector_env:DreamVectorEnv", "[]"]


def test_gym_make_and_make_vec_build_the_dream_from_the_registry(pendulum_run):
    register_environments()  # again: does nothing
    env = gym.make(DREAM_ENV_ID, world_model=str(pendulum_run), seed=5, termination="threshold", horizon=30)
    assert isinstance(env.unwrapped, DreamEnv) and env.unwrapped.horizon == 30
    rebuilt = gym.make(gym.envs.registration.EnvSpec.from_json(env.spec.to_json()))
    actions = np.linspace(-2, 2, 8, dtype=np.float32)[:, None]
    for (obs, *rest), (obs2, *rest2) in zip(rollout(env.unwrapped, actions, 5), rollout(rebuilt.unwrapped, actions, 5)):
        np.testing.assert_array_equal(obs, obs2)
        assert rest == rest2
    # The spec keeps the constructor's seed: a fresh copy's first reset is reset(seed=5).
    np.testing.assert_array_equal(gym.make(env.spec).reset()[0], rollout(env.unwrapped, [], 5)[0][0])

    vector = gym.make_vec(DREAM_ENV_ID, num_envs=3, world_model=str(pendulum_run), seed=2)
    assert isinstance(vector, DreamVectorEnv) and vector.num_envs == 3
    again = gym.make_vec(gym.envs.registration.EnvSpec.from_json(vector.spec.to_json()))
    assert isinstance(again, DreamVectorEnv) and again.num_envs == 3
    np.testing.assert_array_equal(vector.reset()[0], again.reset()[0])


def test_max_episode_steps_cuts_episodes_in_make_and_make_vec(pendulum_run):
    env = gym.make(DREAM_ENV_ID, world_model=str(pendulum_run), termination="threshold", max_episode_steps=3)
    env.reset(seed=0)
    assert [env.step(np.zeros(1, dtype=np.float32))[3] for _ in range(3)] == [False, False, True]
    assert gym.make(gym.envs.registration.EnvSpec.from_json(env.spec.to_json())).spec.max_episode_steps == 3

    vector = gym.make_vec(DREAM_ENV_ID, num_envs=2, world_model=str(pendulum_run), termination="threshold",
                          max_episode_steps=3)
    assert vector.horizon == 3
    vector.reset(seed=0)
    truncations = [vector.step(np.zeros((2, 1), dtype=np.float32))[3].tolist() for _ in range(3)]
    assert truncations == [[False, False], [False, False], [True, True]]


# -- bad input -------------------------------------------------------------------------------


def test_a_folder_without_a_model_is_an_input_error(tmp_path):
    for make in (lambda: DreamEnv(str(tmp_path)), lambda: DreamVectorEnv(str(tmp_path), num_envs=2),
                 lambda: gym.make(DREAM_ENV_ID, world_model=str(tmp_path))):
        with pytest.raises(InputError, match="no fitted world model"):
            make()


@pytest.mark.parametrize(
    "argument, allowed",
    [({"termination": "never"}, "'sample', 'threshold'"), ({"start": "middle"}, "'initial', 'any'")],
)
def test_bad_start_or_termination_names_the_allowed_values(argument, allowed, pendulum_run):
    with pytest.raises(ValueError, match=allowed):
        DreamEnv(str(pendulum_run), **argument)


# -- the functional form ---------------------------------------------------------------------


def test_the_functional_form_dreams_inside_jit_and_scan(pendulum_run):
    loaded = dream.load_dream(pendulum_run, termination="threshold", horizon=5)
    graphdef, model_state = nnx.split(loaded.world_model)
    space = loaded.task.observation_space

    @jax.jit
    def episodes(model_state, keys):
        model = nnx.merge(graphdef, model_state)
        state, first = dream.reset(model, loaded.params, keys)

        def one_step(state, step_keys):
            state, shown = dream.autoreset_step(model, loaded.params, state, jax.numpy.ones((4, 1)), step_keys)
            return state, shown

        _, shown = jax.lax.scan(one_step, state, jax.vmap(lambda k: jax.random.split(k, 12), out_axes=1)(keys))
        return first, shown

    first, shown = episodes(model_state, jax.random.split(jax.random.key(0), 4))
    assert shown.observation.shape == (12, 4, 3) and shown.reward.shape == (12, 4)
    assert all(observation in space for observation in np.asarray(shown.observation).reshape(-1, 3))
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(shown.truncated).all(axis=1)), [4, 10])
    assert not np.asarray(shown.terminated).any()
    np.testing.assert_array_equal(np.asarray(shown.reward[5]), 0.0)  # the autoreset step


def test_bounds_keep_values_inside_any_box_or_discrete_space():
    wide = gym.spaces.Box(low=-0.1, high=0.1, shape=(2,), dtype=np.float64)
    low, high = dream.jax_bounds(wide)
    inside = np.asarray(dream.into_bounds(jax.numpy.array([[-1.0, 1.0]]), low, high), dtype=np.float64)
    assert inside[0] in wide
    frames = gym.spaces.Box(low=0, high=255, shape=(2,), dtype=np.uint8)
    pixels = dream.into_bounds(jax.numpy.array([[-3.0, 254.6]]), *dream.jax_bounds(frames))
    assert pixels.dtype == np.uint8 and pixels.tolist() == [[0, 255]]
    choice = dream.into_bounds(jax.numpy.array([7]), *dream.jax_bounds(gym.spaces.Discrete(3, start=1)))
    assert choice.tolist() == [3]
