"""Benchmark: environment steps per second of the batched Sokoban (chapter 08) against the same
levels stepped one environment at a time, the way a Gymnasium-style single-env loop runs them.
gym-sokoban is not a peer here: it depends on legacy `gym` and downloads Boxoban levels at run
time, which this course's machines cannot do.

    python scripts/bench_sokoban.py [--n-envs 256] [--steps 200]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.envs.sokoban import LevelBank, Sokoban  # noqa: E402


def steps_per_second(env: Sokoban, n_steps: int, rng: np.random.Generator) -> float:
    env.reset(seed=0)
    t = time.perf_counter()
    for _ in range(n_steps):
        env.step(rng.integers(env.n_actions, size=env.n_envs))
    return env.n_envs * n_steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-envs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    bank = LevelBank(128, split="train", seed=0, size=7, n_boxes=1)
    rng = np.random.default_rng(0)
    batched = steps_per_second(Sokoban(args.n_envs, bank, max_steps=60), args.steps, rng)
    singles = [Sokoban(1, bank, max_steps=60, seed=i) for i in range(16)]
    for env in singles:
        env.reset(seed=0)
    t = time.perf_counter()
    n = 0
    for _ in range(args.steps):
        for env in singles:
            env.step(rng.integers(env.n_actions, size=1))
            n += 1
    one = n / (time.perf_counter() - t)
    print(f"batched Sokoban ({args.n_envs} envs): {batched:,.0f} env steps/s")
    print(f"one environment at a time:        {one:,.0f} env steps/s")
    print(f"ratio: {batched / one:.1f}x")


if __name__ == "__main__":
    main()
