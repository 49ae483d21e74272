"""Benchmark: the batched maze (chapter 06) against the same maze stepped one environment at a time
through Gymnasium.

A learner waits on maze rollouts (PPO training, every evaluation in the chapter). The loop a user
would otherwise write is one `gymnasium.Env` stepped in Python; here that is the same `MazeEnv`
behind the course's Gymnasium adapter (`utils.envs.maze.make_gym_env`, one copy), so both sides
generate and step identical mazes. Both take uniformly random actions, with auto-reset
(the Gymnasium loop calls `reset()` itself at the end of an episode). Printed: steps per second
of each (best of `--repeats`), and the ratio. procgen's own Maze is timed too when it imports
(procgen has no build for Python 3.11; the line says so when it is missing).

    python scripts/bench_maze.py [--n-envs 64] [--steps 200] [--gym-steps 5000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from utils.envs.maze import MazeEnv, make_gym_env  # noqa: E402


def batched_sps(n_envs: int, steps: int, seed: int) -> float:
    env = MazeEnv(n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    env.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step_np(rng.integers(0, 4, n_envs))
    return n_envs * steps / (time.perf_counter() - t0)


def gym_sps(steps: int, seed: int) -> float:
    env = make_gym_env(seed=seed)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(int(rng.integers(0, 4)))
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def procgen_sps(steps: int) -> str:
    try:
        from procgen import ProcgenGym3Env  # noqa: F401
    except Exception as e:  # no wheel for Python 3.11 (see the research notes)
        return f"procgen maze: not available here ({type(e).__name__}: procgen does not install on this Python)"
    env = ProcgenGym3Env(num=64, env_name="maze")
    t0 = time.perf_counter()
    for _ in range(steps):
        env.act(np.random.randint(0, 15, 64))
    return f"procgen maze (64 envs): {64 * steps / (time.perf_counter() - t0):,.0f} steps/s"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--gym-steps", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if min(a.n_envs, a.steps, a.gym_steps, a.repeats) <= 0:
        p.error("--n-envs, --steps, --gym-steps and --repeats must be positive")
    batched = max(batched_sps(a.n_envs, a.steps, a.seed + r) for r in range(a.repeats))
    single = max(gym_sps(a.gym_steps, a.seed + r) for r in range(a.repeats))
    print(f"batched MazeEnv ({a.n_envs} envs): {batched:,.0f} steps/s")
    print(f"Gymnasium loop (1 env, same maze): {single:,.0f} steps/s")
    print(f"ratio batched / gymnasium: {batched / single:.1f}x")
    print(procgen_sps(a.steps))
    return {"batched": batched, "gym": single, "ratio": batched / single}


if __name__ == "__main__":
    main()
