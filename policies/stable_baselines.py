"""Real-trained baselines that users already trust: Stable-Baselines3 (torch) and SBX (JAX).

``sb3:SAC``, ``sb3:PPO`` and ``sbx:SAC`` train with RL-Zoo's tuned settings for the task
where RL-Zoo has them (copied below, source named) and the library's defaults otherwise,
and are measured through the same protocol as every other arm: the deterministic policy
in force at every grid point, on the same fresh reset seeds. They come from the optional
``[baselines]`` extra; nothing else in the project imports these libraries.

Their policies are not saved: both libraries save with pickle, which this project never
loads. A run's figures (its summary and evaluations) are what a comparison needs.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from policies.protocol import DEFAULT_EVAL_EVERY, on_grid, random_policy_return
from policies.real_training import RealTraining
from tasks.errors import InputError
from tasks.recording import record_episodes
from tasks.registry import Task

LIBRARIES = {"sb3": "stable_baselines3", "sbx": "sbx"}
ALGORITHMS = ("sb3:SAC", "sb3:PPO", "sbx:SAC")


def _linear(initial: float) -> Callable[[float], float]:
    """RL-Zoo's ``lin_X``: X at the start of training, falling linearly to 0 at the end."""
    return lambda progress_remaining: progress_remaining * initial


# RL-Zoo's tuned settings, from rl-baselines3-zoo 2.9.2, rl_zoo3/hyperparams/{sac,ppo}.yml
# (https://github.com/DLR-RM/rl-baselines3-zoo), without n_timesteps (our budget) and
# policy ('MlpPolicy' for all). RL-Zoo trains sbx's SAC with the same sac.yml.
RL_ZOO_SETTINGS: dict[tuple[str, str], dict] = {
    ("SAC", "Pendulum-v1"): {"learning_rate": 1e-3},
    ("PPO", "Pendulum-v1"): {
        "n_envs": 4, "n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10, "ent_coef": 0.0,
        "learning_rate": 1e-3, "clip_range": 0.2, "use_sde": True, "sde_sample_freq": 4,
    },
    ("PPO", "CartPole-v1"): {
        "n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
        "ent_coef": 0.0, "learning_rate": _linear(0.001), "clip_range": _linear(0.2),
    },
}


def is_stable_baselines(algo: str) -> bool:
    return algo in ALGORITHMS


def rl_zoo_settings(algo: str, env_id: str) -> dict:
    """The constructor settings for ``algo`` (``library:ALGO``) on ``env_id`` (empty: library defaults)."""
    return dict(RL_ZOO_SETTINGS.get((algo.split(":", 1)[1], env_id), {}))


def algorithm_class(algo: str):
    """The library's class for ``algo``; an InputError naming the extra when it is not installed."""
    library, name = algo.split(":", 1)
    try:
        module = importlib.import_module(LIBRARIES[library])
    except ImportError:
        raise InputError("--algo", f"{algo} needs {LIBRARIES[library]}: pip install -e \".[baselines]\"") from None
    return getattr(module, name)


class _FirstResetSeed(gym.Wrapper):
    """Resets first from the protocol's training seed, whatever seed the library passes
    (Stable-Baselines3 seeds every environment ``seed + index``); later resets go on
    from the environment's own generator."""

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self._first_seed: int | None = seed

    def reset(self, *, seed=None, options=None):
        if self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        return self.env.reset(seed=seed, options=options)


def train_stable_baselines(
    task: Task,
    algo: str,
    total_steps: int,
    training_seeds: Callable[[int], Sequence[int]],
    evaluation_seeds: Sequence[int],
    eval_every: int = DEFAULT_EVAL_EVERY,
    log: Callable[[int, dict], None] | None = None,
    progress: bool | None = None,
    seed: int = 0,
) -> RealTraining:
    """Train ``algo`` (one of `ALGORITHMS`) on ``task`` for ``total_steps`` real steps.

    Args:
        training_seeds: ``training_seeds(n)`` gives the first reset seed of each of the
            ``n`` training environments (``n`` is RL-Zoo's ``n_envs``, else 1).
        evaluation_seeds, eval_every, log, progress, seed: as `train_on_real` takes them.
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    progress = sys.stderr.isatty() if progress is None else progress
    started = time.perf_counter()
    if algo.startswith("sb3:"):
        import torch

        # Networks this small train about 3x faster on one thread than on two (measured on
        # 2 cores); RL-Zoo's --num-threads does the same.
        torch.set_num_threads(1)
    settings = rl_zoo_settings(algo, task.env_id)
    seeds = [int(s) for s in training_seeds(settings.pop("n_envs", 1))]
    environments = DummyVecEnv([lambda s=s: _FirstResetSeed(task.make_env(), s) for s in seeds])
    model = algorithm_class(algo)("MlpPolicy", environments, seed=seed, verbose=0, **settings)
    random_return, eval_steps = random_policy_return(task, evaluation_seeds, seed)

    def deterministic(observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return model.predict(observations, deterministic=True)[0]

    def evaluate() -> float:
        nonlocal eval_steps
        episodes = record_episodes(task, deterministic, evaluation_seeds, num_envs=len(evaluation_seeds),
                                   progress=False)
        eval_steps += episodes.num_steps
        return float(episodes.returns().mean())

    changes: list[dict] = []
    bar = tqdm(total=total_steps, unit="step", desc=f"train-real {task.name} ({algo})", disable=not progress,
               file=sys.stderr)

    class GridEvaluation(BaseCallback):
        """Evaluates the policy acting when the step count passes a grid point: the one in
        force there (the libraries learn only between environment steps)."""

        def _on_step(self) -> bool:
            bar.update(self.num_timesteps - bar.n)
            point = self.num_timesteps // eval_every * eval_every
            if point > (changes[-1]["real_steps"] if changes else 0):
                mean_return = evaluate()
                changes.append({"real_steps": point, "mean_return": mean_return})
                bar.set_postfix(real_return=f"{mean_return:.1f}")
                if log is not None:
                    log(self.num_timesteps, {"real_return": mean_return, "wall_seconds": time.perf_counter() - started})
            return True

    try:
        model.learn(total_timesteps=total_steps, callback=GridEvaluation())
        final_return = evaluate()  # the policy after the last update, in force from the last step
        changes.append({"real_steps": int(model.num_timesteps), "mean_return": final_return})
    finally:
        bar.close()
        environments.close()
    return RealTraining(on_grid(changes, total_steps, eval_every, random_return), int(model.num_timesteps),
                        eval_steps, final_return)
