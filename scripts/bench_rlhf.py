"""Benchmark: chapter 10's reward-model training (TRL RewardTrainer) versus a plain PyTorch loop.

The chapter trains its reward models with TRL's `RewardTrainer` (utils.rlhf.train), and a learner
waits on it once per seed plus once per shuffled control. The alternative a user would write
first is a hand-rolled loop: tokenise each pair, run chosen and rejected through the same
`GPT2ForSequenceClassification`, take the Bradley-Terry loss, one AdamW step. Both take the same
number of steps of the same batch size and learning rate on the same pairs, on one torch thread,
in one run; printed: seconds, steps/s, held-out preference accuracy and the speed ratio (best of
`--repeats` alternating runs). Then, for scale, the seconds per RLOO step of the policy stage.

    python scripts/bench_rlhf.py [--pairs 200] [--epochs 1] [--batch 16] [--repeats 2] [--rloo-steps 4]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from utils.core import set_seed, torch_threads  # noqa: E402
from utils.lm import load_model  # noqa: E402
from utils.rlhf.objectives import bradley_terry_loss  # noqa: E402
from utils.rlhf.preferences import PreferenceConfig, make_preferences  # noqa: E402
from utils.rlhf.train import (PolicyConfig, RewardModel, RMConfig, init_reward_model, pair_correct,  # noqa: E402
                              train_policy, train_reward_model)


def plain_loop(lm, rows, steps: int, batch: int, lr: float, seed: int) -> RewardModel:
    """The loop most people write: the same model, loss, optimiser and batch size, no Trainer."""
    model = init_reward_model(lm, seed).train()
    rm = RewardModel(model, lm.tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        order = torch.randperm(len(rows), generator=g).tolist()
        for i in range(0, len(order) - batch + 1, batch):
            b = [rows[j] for j in order[i: i + batch]]
            ids, mask = rm.encode([r["prompt"] + r["chosen"] for r in b] + [r["prompt"] + r["rejected"] for r in b])
            r = model(input_ids=ids, attention_mask=mask).logits[:, 0]
            loss = bradley_terry_loss(r[:batch], r[batch:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            done += 1
            if done >= steps:
                break
    model.eval()
    return RewardModel(model, lm.tokenizer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rloo-steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    set_seed(a.seed)
    lm = load_model("tiny-reviews")
    pairs = make_preferences(lm, PreferenceConfig(n_train=a.pairs, n_heldout=80, n_decorrelated=20, seed=a.seed))
    steps = int(a.epochs * (a.pairs // a.batch))
    best = {"TRL RewardTrainer": float("inf"), "plain PyTorch loop": float("inf")}
    acc = {}
    with torch_threads(1):
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            rm, _ = train_reward_model(lm, pairs["train"], RMConfig(epochs=a.epochs, lr=a.lr, batch_size=a.batch,
                                                                    seed=a.seed))
            best["TRL RewardTrainer"] = min(best["TRL RewardTrainer"], time.perf_counter() - t0)
            acc["TRL RewardTrainer"] = pair_correct(rm, pairs["heldout"]).mean()
            t0 = time.perf_counter()
            rm2 = plain_loop(lm, pairs["train"], steps, a.batch, a.lr, a.seed)
            best["plain PyTorch loop"] = min(best["plain PyTorch loop"], time.perf_counter() - t0)
            acc["plain PyTorch loop"] = pair_correct(rm2, pairs["heldout"]).mean()
    print(f"reward model: {steps} steps of {a.batch} pairs, {a.pairs} training pairs, best of {a.repeats}")
    for k, s in best.items():
        print(f"  {k:<20}{s:7.2f} s  {steps / s:7.1f} steps/s  held-out accuracy {acc[k]:.3f}")
    print(f"  ratio (plain loop / TRL time): {best['plain PyTorch loop'] / best['TRL RewardTrainer']:.2f}")
    t0 = time.perf_counter()
    train_policy(lm, rm, PolicyConfig(steps=a.rloo_steps, seed=a.seed))
    dt = time.perf_counter() - t0
    print(f"policy: {a.rloo_steps} RLOO steps (4 prompts x 4 samples, 24 tokens) in {dt:.1f} s, "
          f"{dt / a.rloo_steps:.2f} s per step (including TRL's set-up)")


if __name__ == "__main__":
    main()
