"""Benchmark: the course's distillation loop versus the loop a user would write first.

Chapter 09 distils a PPO teacher into fresh students (utils.dynamics.cloning.distil), and a
learner waits on it several times per run. The course's loop computes the teacher's logits once
for all states and draws each minibatch by indexing one tensor with a seeded generator. The
obvious alternative is a `torch.utils.data.DataLoader` over a `TensorDataset` of states, with the
teacher run on every minibatch. Both take the same number of Adam steps of the same size with
the same loss, on one torch thread, in one run; printed: seconds, steps/s, the final agreement
with the teacher on held-out states, and the speed ratio (best of `--repeats` alternating runs).

    python scripts/bench_distil.py [--steps 1500] [--states 5000] [--batch 512] [--seed 0] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from utils.core import set_seed  # noqa: E402
from utils.dynamics import action_agreement, collect_states, distil, distillation_loss  # noqa: E402
from utils.models.mlp_policy import HookedMLPPolicy  # noqa: E402
from utils.rl.ppo import PPOConfig, train_ppo  # noqa: E402


def dataloader_distil(teacher, states, hidden, steps, batch_size, lr, seed):
    """The loop most people write: DataLoader batches, the teacher evaluated per batch."""
    set_seed(seed)
    student = HookedMLPPolicy(teacher.obs_dim, teacher.n_actions, hidden, value_head=False)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(states), batch_size=batch_size, shuffle=True, drop_last=True)
    done = 0
    while done < steps:
        for (batch,) in loader:
            with torch.no_grad():
                target = teacher(batch)
            loss = distillation_loss(student(batch), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return student.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--states", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("training a teacher (chapter 01's PPO agent, 110k env steps) ...")
    teacher = train_ppo(PPOConfig(total_steps=110_000, seed=args.seed), progress=False).policy
    states = collect_states(teacher, args.states, seed=args.seed)["obs"]
    held = collect_states(teacher, 2000, seed=args.seed + 1)["obs"]
    results = {}
    # alternate the two loops and keep each one's best of `--repeats` (a shared machine's load drifts)
    for name in ("course distil", "DataLoader loop") * args.repeats:
        t0 = time.perf_counter()
        if name == "course distil":
            student, _ = distil(teacher, states, hidden=(64, 64), steps=args.steps, batch_size=args.batch,
                                lr=3e-3, seed=args.seed)
        else:
            student = dataloader_distil(teacher, states, (64, 64), args.steps, args.batch, 3e-3, args.seed)
        secs = time.perf_counter() - t0
        with torch.no_grad():
            agree = action_agreement(teacher(held), student(held))["agreement"]
        results[name] = min(secs, results.get(name, float("inf")))
        print(f"{name:<16} {secs:7.2f} s  {args.steps / secs:8.0f} steps/s  agreement with teacher {agree:.3f}")
    print(f"speed ratio, best of {args.repeats} each (DataLoader loop / course distil): "
          f"{results['DataLoader loop'] / results['course distil']:.2f}x")


if __name__ == "__main__":
    main()
