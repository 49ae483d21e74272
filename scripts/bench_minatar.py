"""Env steps per second: the course's batched Breakout (numpy over the batch) and MinAtar stepped
in a batch (`MinAtarBatch`) against MinAtar's own one-environment loop, side by side; prints the ratios.

    python scripts/bench_minatar.py [--n-envs 64] [--steps 200]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from minatar import Environment

    from utils.envs.minatar import MinAtarBatch, VecBreakout

    p = argparse.ArgumentParser()
    p.add_argument("--n-envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=200, help="vector steps per batched env")
    a = p.parse_args()
    torch.set_num_threads(1)
    n, T = a.n_envs, a.steps
    rng = np.random.default_rng(0)
    acts = torch.as_tensor(rng.integers(0, 3, (T, n)))
    rates = {}
    # MinAtar's own loop: one Environment, one step at a time (what a user would write)
    env = Environment("breakout")
    env.seed(0)
    env.reset()
    minimal = env.minimal_action_set()
    t = time.perf_counter()
    for i in range(T * n):
        _, done = env.act(minimal[int(acts.view(-1)[i])])
        env.state()
        if done:
            env.reset()
    rates["MinAtar one-env loop"] = T * n / (time.perf_counter() - t)
    for name, e in (("MinAtarBatch (MinAtar objects)", MinAtarBatch("breakout", n)), ("VecBreakout (numpy)", VecBreakout(n))):
        e.reset()
        t = time.perf_counter()
        for i in range(T):
            e.step(acts[i])
        rates[name] = T * n / (time.perf_counter() - t)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    base = rates["MinAtar one-env loop"]
    print(f"Breakout env steps/s, {n} envs, load average {load:.2f}")
    for name, r in rates.items():
        print(f"{name:<34}{r:12,.0f}   ratio to MinAtar loop {r / base:6.2f}x")


if __name__ == "__main__":
    main()
