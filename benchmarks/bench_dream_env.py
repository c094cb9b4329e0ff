"""Speed of the world model as a gymnasium environment: `DreamVectorEnv` and `DreamEnv`.

    python benchmarks/bench_dream_env.py [--world-model RUN] [--out DIR]   # prints one JSON object

Without ``--world-model``, 30 random Pendulum episodes are recorded and the default
ensemble (7 members, 5 elites, 4 x 200 units) is fitted on them for 250 updates through
the command line: speed depends on the model's size, not on how well it is fitted.
The vector environment is timed at 1, 64 and 4096 environments in transitions per
second (environments x steps / seconds), with the model's uncertainty in the infos
(the default) and without it, and with each environment drawing its own elite
(``draws="per_environment"``); `DreamEnv` in steps per second. Actions are drawn
uniformly in numpy at every step, as a host-side agent would send them. Each figure is
timed after a warm-up (compilation), over as many steps as fill a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from command_line import dreamer_json as run  # noqa: E402
from worldmodel.dream_env import DreamEnv  # noqa: E402
from worldmodel.dream_vector_env import DreamVectorEnv  # noqa: E402
from worldmodel.saving import load_spec  # noqa: E402

NUM_ENVS = (1, 64, 4096)
MIN_SECONDS = 3.0
MIN_STEPS = 50


def timed_steps(env, draw_action, min_seconds: float = MIN_SECONDS, min_steps: int = MIN_STEPS,
                warmup: int = 3) -> tuple[int, float]:
    """Steps taken and seconds spent stepping ``env`` (at least ``min_seconds`` and ``min_steps``) after a warm-up.

    A single environment is reset when its episode ends (inside the timing, as a user
    would); a vector environment resets itself.
    """
    single = isinstance(env, DreamEnv)
    env.reset(seed=0)
    for _ in range(warmup):
        env.step(draw_action())
    steps, started = 0, time.perf_counter()
    while True:
        for _ in range(10):
            result = env.step(draw_action())
            if single and (result[2] or result[3]):
                env.reset()
        steps += 10
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds and steps >= min_steps:
            return steps, elapsed


def action_sampler(space, num_envs: int | None, rng: np.random.Generator):
    """Uniform random actions in numpy, for one environment (None) or a batch."""
    shape = () if num_envs is None else (num_envs,)
    if hasattr(space, "n"):
        return lambda: rng.integers(space.start, space.start + space.n, size=shape)
    return lambda: rng.uniform(space.low, space.high, size=shape + space.shape).astype(space.dtype)


def time_vector(world_model: str, num_envs: int, with_uncertainty: bool, seed: int, draws: str = "shared") -> dict:
    env = DreamVectorEnv(world_model, num_envs=num_envs, with_uncertainty=with_uncertainty, draws=draws)
    steps, seconds = timed_steps(env, action_sampler(env.single_action_space, num_envs, np.random.default_rng(seed)))
    return {
        "num_envs": num_envs,
        "with_uncertainty": with_uncertainty,
        "draws": draws,
        "steps": steps,
        "seconds": seconds,
        "transitions_per_second": num_envs * steps / seconds,
    }


def time_single(world_model: str, with_uncertainty: bool, seed: int) -> dict:
    env = DreamEnv(world_model, with_uncertainty=with_uncertainty)
    steps, seconds = timed_steps(env, action_sampler(env.action_space, None, np.random.default_rng(seed)))
    return {"with_uncertainty": with_uncertainty, "steps": steps, "seconds": seconds,
            "steps_per_second": steps / seconds}


def fit_model(out: Path, seed: int) -> tuple[str, float]:
    """A default-sized ensemble briefly fitted on random Pendulum episodes; its run directory and fit seconds."""
    traces, model = out / "traces-pendulum", out / "wm-pendulum"
    run("collect", "--task", "pendulum", "--episodes", 30, "--seed", seed, "--out", traces)
    fitted = run("fit", "--traces", traces, "--out", model, "--seed", seed,
                 "--fit.max-updates", 250, "--fit.updates-per-call", 250)
    return str(model), fitted["wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", help="run directory of a fitted world model (default: fit one)")
    parser.add_argument("--out", help="folder for the traces and model fitted here (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fit_seconds = None
    if args.world_model:
        world_model = args.world_model
    else:
        world_model, fit_seconds = fit_model(Path(args.out or tempfile.mkdtemp(prefix="dreamer-dream-env-")), args.seed)
    spec = load_spec(world_model)
    load_before = os.getloadavg()
    vector = [time_vector(world_model, n, True, args.seed) for n in NUM_ENVS]
    vector += [time_vector(world_model, n, False, args.seed) for n in NUM_ENVS]
    vector += [time_vector(world_model, n, False, args.seed, draws="per_environment") for n in NUM_ENVS]
    single = [time_single(world_model, flag, args.seed) for flag in (True, False)]
    print(json.dumps({
        "machine": machine_info(),
        # Other work on a shared machine slows every figure; this says how busy it was.
        "load_average_1min_before_and_after": [load_before[0], os.getloadavg()[0]],
        "world_model": world_model,
        "task": spec["task"],
        "model": {"kind": spec["kind"], **spec["config"]},
        "fit_seconds": fit_seconds,
        "vector_env": vector,
        "single_env": single,
    }, indent=2))


if __name__ == "__main__":
    main()
