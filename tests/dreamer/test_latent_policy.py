"""A policy trained in a recurrent latent model's dreams acts through that model: `dreamer
run --model rssm` saves it with the model beside it, and every way of using it (evaluate,
collect, the exported `load_policy` callable) filters real observations with the actions
applied, starting over each episode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamer.behaviour import saved_behaviour
from policies import load_policy
from tasks.recording import record_episodes, reset_seeds
from tasks.traces import read_traces

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rssm_run(tmp_path_factory, quietly, run_argv):
    out = tmp_path_factory.mktemp("rssm") / "run"
    quietly(run_argv(out, "pendulum", "--model", "rssm", "--rssm.size", "tiny"))
    return out


def test_the_saved_policy_reads_the_latent_state_of_the_model_saved_beside_it(rssm_run):
    spec = json.loads((rssm_run / "policy.json").read_text())
    model_spec = json.loads((rssm_run / "model.json").read_text())
    assert spec["features"] == "latent"
    assert model_spec["kind"] == "rssm"
    saved = saved_behaviour(rssm_run)
    assert saved.world_model is not None and saved.world_model.kind == "rssm"
    start, stop = spec["deployment"]["action_slot"]
    assert stop - start == 1  # Pendulum's one-dimensional action rides in the carried state


def test_the_exported_policy_starts_over_each_episode_and_acts_as_the_filter_does(rssm_run):
    saved = saved_behaviour(rssm_run)
    seeds = reset_seeds(7, 2)
    filtered = record_episodes(saved.task, saved.behaviour, seeds, num_envs=1, progress=False)
    deployed = load_policy(rssm_run)
    for seed, episode in zip(seeds, filtered):
        env = saved.task.make_env()
        observation, _ = env.reset(seed=int(seed))
        deployed.reset()  # without it, the second episode would be filtered on from the first one's end
        actions = []
        for _ in range(len(episode)):
            action = deployed(observation)
            actions.append(action)
            observation, *_ = env.step(action)
        np.testing.assert_allclose(np.stack(actions), episode.actions, rtol=1e-4, atol=1e-5)


def test_evaluate_and_collect_act_through_the_model(rssm_run, cli, tmp_path):
    code, out, err = cli("evaluate", "--policy", rssm_run, "--episodes", "2", "--json")
    assert code == 0, err
    fresh = json.loads(out)
    assert np.isfinite(fresh["mean_return"]) and fresh["episodes"] == 2

    traces = tmp_path / "recorded"
    code, _, err = cli("collect", "--task", "pendulum", "--policy", rssm_run, "--episodes", "2", "--seed", "3",
                       "--out", traces)
    assert code == 0, err
    recorded = read_traces(traces).episodes
    assert recorded.num_episodes == 2

    # Replayed from their seeds, the held-out form dreams the policy in its own model.
    code, out, err = cli("evaluate", "--policy", rssm_run, "--traces", traces, "--split", "all", "--json")
    assert code == 0, err
    heldout = json.loads(out)
    assert heldout["dream_mean_return"] is not None
    assert heldout["world_model"] == str(rssm_run)
