"""Benchmark: the course's PPO versus Stable-Baselines3 PPO on the colour-goal gridworld.

Both train on the same task (5x5 colour-goal room, same dynamics and observation encoding),
with the same budget of environment steps, the same PPO hyperparameters where they map
(64 envs x 32 steps, 4 epochs, 4 minibatches, lr 2.5e-3, gamma 0.99, GAE 0.95, clip 0.2,
entropy 0.01, two hidden layers of 64 ReLU units), one torch thread each, in one run.
Each stops when the success rate of its last `--window` finished training episodes reaches
`--threshold`. Printed: env steps/s, wall-clock seconds to the threshold, and the ratio.

The course's PPO steps all 64 rooms in one numpy call (utils.gridworld.ColourGoalGrid);
SB3 steps the single-room Gymnasium version (CourseColourGoal-5x5-v0) in a DummyVecEnv,
which is what a user of SB3 would write. Architectures differ slightly: the course policy
shares its trunk between actor and critic, SB3's default MlpPolicy has separate ones.

    python scripts/bench_ppo.py [--budget 300000] [--threshold 0.8] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.core import CourseError  # noqa: E402

N_ENVS, N_STEPS, N_EPOCHS, N_MINIBATCHES, LR = 64, 32, 4, 4, 2.5e-3


def run_course(budget: int, threshold: float, window: int, seed: int) -> dict:
    from utils.rl.ppo import PPOConfig, train_ppo

    t0 = time.perf_counter()
    res = train_ppo(PPOConfig(total_steps=budget, n_envs=N_ENVS, n_steps=N_STEPS, n_epochs=N_EPOCHS, n_minibatches=N_MINIBATCHES,
                              lr=LR, anneal_lr=False, stop_at_success=threshold, success_window=window, seed=seed), progress=False)
    seconds = time.perf_counter() - t0
    steps = res.log["env_steps"][-1]
    return {"name": "course PPO (utils.rl.ppo)", "version": "-", "steps": steps, "seconds": seconds,
            "sps": steps / seconds, "to_threshold": res.reached_threshold_at}


def run_sb3(budget: int, threshold: float, window: int, seed: int) -> dict:
    try:
        import stable_baselines3
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        raise CourseError("stable-baselines3 is not installed: pip install stable-baselines3==2.9.2") from None
    from utils.envs.colour_goal import GYM_ID

    class StopAtSuccess(BaseCallback):
        def __init__(self):
            super().__init__()
            self.recent: deque = deque(maxlen=window)
            self.reached_at = None

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "is_success" in info:
                    self.recent.append(float(info["is_success"]))
            if len(self.recent) == window and np.mean(self.recent) >= threshold:
                self.reached_at = time.perf_counter() - start
                return False
            return True

    start = time.perf_counter()
    env = make_vec_env(GYM_ID, n_envs=N_ENVS, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=N_STEPS, batch_size=N_ENVS * N_STEPS // N_MINIBATCHES, n_epochs=N_EPOCHS,
                learning_rate=LR, gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                policy_kwargs=dict(net_arch=[64, 64], activation_fn=torch.nn.ReLU), seed=seed, device="cpu", verbose=0)
    cb = StopAtSuccess()
    model.learn(total_timesteps=budget, callback=cb)
    seconds = time.perf_counter() - start
    steps = model.num_timesteps
    return {"name": "Stable-Baselines3 PPO", "version": stable_baselines3.__version__, "steps": steps, "seconds": seconds,
            "sps": steps / seconds, "to_threshold": cb.reached_at}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=int, default=300_000, help="environment steps per library")
    p.add_argument("--threshold", type=float, default=0.8, help="success rate of recent training episodes")
    p.add_argument("--window", type=int, default=256, help="number of recent episodes the success rate is over")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.budget < N_ENVS * N_STEPS or not 0 < args.threshold <= 1 or args.window <= 0:
        raise SystemExit(f"bench_ppo: need --budget >= {N_ENVS * N_STEPS}, 0 < --threshold <= 1 and --window > 0")
    torch.set_num_threads(1)
    print(f"colour-goal gridworld 5x5, budget {args.budget} env steps, threshold: success >= {args.threshold} "
          f"over the last {args.window} training episodes, seed {args.seed}, torch threads 1")
    rows = [run_course(args.budget, args.threshold, args.window, args.seed), run_sb3(args.budget, args.threshold, args.window, args.seed)]
    print(f"{'library':<28}{'version':>9}{'env steps':>11}{'seconds':>9}{'steps/s':>10}{'s to threshold':>16}")
    for r in rows:
        reached = f"{r['to_threshold']:.1f}" if r["to_threshold"] is not None else "not reached"
        print(f"{r['name']:<28}{r['version']:>9}{r['steps']:>11}{r['seconds']:>9.1f}{r['sps']:>10.0f}{reached:>16}")
    course, sb3 = rows
    print(f"steps/s ratio (course / SB3): {course['sps'] / sb3['sps']:.1f}x")
    if course["to_threshold"] is not None and sb3["to_threshold"] is not None:
        print(f"time-to-threshold ratio (SB3 / course): {sb3['to_threshold'] / course['to_threshold']:.1f}x faster")
    elif course["to_threshold"] is not None:
        print(f"time-to-threshold ratio (SB3 / course): > {sb3['seconds'] / course['to_threshold']:.1f}x "
              "(SB3 did not reach the threshold within the budget; lower bound from its total time)")
    else:
        print("the course PPO did not reach the threshold within the budget: raise --budget")


if __name__ == "__main__":
    main()
