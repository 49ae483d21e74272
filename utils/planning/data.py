"""Optimal demonstrations from the BFS solver, and behavioural-cloning pretraining of an agent.

At CPU scale, PPO from scratch on Sokoban is slow to leave the "random walk" phase; the
research notes allow pretraining on BFS solutions first and fine-tuning with RL after
(`utils.planning.train` does both). `solution_episodes(bank)` replays every level's optimal
solution and returns padded sequences of observations, actions and discounted returns;
`pretrain(model, bank)` fits the policy (cross-entropy) and the value head (squared error)
on them, unrolling the recurrent state over each episode as in the rollouts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from utils.core import CourseError, set_seed
from utils.envs.sokoban import LevelBank, Sokoban
from utils.rl.recurrent_ppo import reset_state, unroll


@dataclass
class Demos:
    obs: Tensor       # [T, n, 5, H, W] (zeros after the end)
    actions: Tensor   # [T, n]
    returns: Tensor   # [T, n] discounted return from step t
    mask: Tensor      # [T, n] 1 on real steps
    levels: np.ndarray  # [n] level index in the bank


def solution_episodes(bank: LevelBank, gamma: float = 0.97) -> Demos:
    """Replay every level's optimal (BFS) solution in one batched env: the demonstrations."""
    if any(lv.moves is None for lv in bank.levels):
        raise CourseError("every level needs its optimal solution (generate it with LevelBank, or call solve())")
    n = len(bank)
    T = max(len(lv.moves) for lv in bank.levels)
    env = Sokoban(n, bank, max_steps=T + 1, auto_reset=False)
    obs = env.set_levels(np.arange(n))
    obs_buf = torch.zeros(T, *obs.shape)
    act, rew, mask = torch.full((T, n), 4, dtype=torch.long), torch.zeros(T, n), torch.zeros(T, n)
    lengths = np.array([len(lv.moves) for lv in bank.levels])
    for t in range(T):
        live = torch.from_numpy(t < lengths)
        a = torch.tensor([lv.moves[t] if t < len(lv.moves) else 4 for lv in bank.levels])
        obs_buf[t] = obs * live.view(-1, 1, 1, 1)
        act[t], mask[t] = a, live.float()
        obs, r, term, _, _ = env.step(a)
        rew[t] = r * live
    return Demos(obs_buf, act, discounted_returns(rew, mask, gamma), mask, np.arange(n))


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """[T, n] return from each step, G_t = r_t + gamma * G_{t+1} * mask_t, summed backwards from
    the end (rewards [T, n] are zero and mask [T, n] is 0 after an episode's last step)."""
    if rewards.shape != mask.shape or rewards.ndim != 2:
        raise CourseError(f"rewards and mask must both be [T, n], got {tuple(rewards.shape)} and {tuple(mask.shape)}")
    ret = torch.zeros_like(rewards, dtype=torch.float32)
    running = torch.zeros(rewards.shape[1])
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * running * mask[t]
        ret[t] = running
    return ret


def with_solutions(levels) -> LevelBank:
    """A bank of hand-made levels, each checked (one-line error if malformed) and solved by BFS
    (one-line error naming the first unsolvable one), with its optimal solution attached."""
    from dataclasses import replace

    from utils.envs.sokoban import check_level, solve

    out = []
    for i, lv in enumerate(levels):
        check_level(lv)
        moves = solve(lv)
        if moves is None:
            raise CourseError(f"level {i} is unsolvable (BFS found no solution): fix it or leave it out")
        out.append(replace(lv, moves=moves))
    return LevelBank.from_levels(out)


def pretrain(model: nn.Module, bank: LevelBank, epochs: int = 4, batch: int = 64, lr: float = 2e-3,
             vf_coef: float = 0.5, seed: int = 0, progress: bool = True, reset_fn=reset_state) -> list[float]:
    """Behavioural cloning of the BFS solutions (and a value fit to their returns), episodes
    unrolled from the zero state (`reset_fn`: the state reset the unroll uses). Returns the mean
    loss per epoch."""
    set_seed(seed)
    demos = solution_episodes(bank)
    n = demos.obs.shape[1]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    bar = tqdm(range(epochs * ((n + batch - 1) // batch)), desc="pretrain (BFS demos)", disable=not progress,
               mininterval=1.0)
    it = iter(bar)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for idx in perm.split(batch):
            m = demos.mask[:, idx]
            T = int(m.sum(0).max())
            starts = torch.zeros(T, len(idx))
            starts[0] = 1
            logits, values, _ = unroll(model, demos.obs[:T, idx], starts, model.initial_state(len(idx)), reset_fn)
            ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), demos.actions[:T, idx].reshape(-1),
                                             reduction="none")
            mm = m[:T].reshape(-1)
            v = (values - demos.returns[:T, idx]).pow(2).reshape(-1)
            loss = ((ce + vf_coef * v) * mm).sum() / mm.sum()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += loss.item() * len(idx)
            next(it, None)
        losses.append(tot / n)
    bar.close()
    model.eval()
    return losses
