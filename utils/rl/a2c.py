"""Advantage actor-critic with n-step returns: the orientation chapter's short trainer.

Kept beside PPO for teaching (one loss, no clipping, one update per rollout); the update is
`a2c_loss`, tested once. `train_cue_agent` trains the cue-corridor agent of chapter 00.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import check_fields, torch_threads
from utils.envs.cue_corridor import CUE_NOISE, LENGTH, N_NOISE, CueCorridor
from utils.models.mlp_policy import HookedMLPPolicy


@dataclass
class A2CConfig:
    n_envs: int = 64
    iterations: int = 150
    rollout_len: int = 16
    lr: float = 3e-3
    gamma: float = 0.9
    entropy_coef: float = 0.01
    hidden: tuple[int, ...] = (32, 32)
    length: int = LENGTH         # the corridor's length
    n_noise: int = N_NOISE       # distractor inputs
    cue_noise: float = CUE_NOISE  # noise on the cue reading (one draw per episode)
    seed: int = 0

    def __post_init__(self):
        check_fields(self, positive_int=("n_envs", "iterations", "rollout_len", "length"), positive=("lr",),
                     unit=("gamma",), nonneg=("entropy_coef", "n_noise", "seed"))


def nstep_returns(rewards: Tensor, dones: Tensor, bootstrap: Tensor, gamma: float) -> Tensor:
    """Discounted n-step returns [T, N]: R_t = r_t + gamma R_{t+1} (1 - done_t), R_T = bootstrap [N]."""
    ret, out = bootstrap, []
    for r, d in zip(reversed(rewards), reversed(dones)):
        ret = r + gamma * ret * (1 - d)
        out.append(ret)
    return torch.stack(out[::-1])


def a2c_loss(logps: Tensor, entropies: Tensor, values: Tensor, returns: Tensor, entropy_coef: float) -> Tensor:
    """Policy gradient with the critic as baseline, plus value regression and an entropy bonus
    (all [T, N]): -mean(logp * (R - V).detach()) + 0.5 mean((R - V)^2) - c * mean(entropy)."""
    adv = (returns - values).detach()
    return -(logps * adv).mean() + 0.5 * (returns - values).pow(2).mean() - entropy_coef * entropies.mean()


def train_a2c(cfg: A2CConfig, env, policy: HookedMLPPolicy, progress: bool = True) -> dict[str, list[float]]:
    """Train `policy` on the batched `env` in place; returns the mean episode return and the
    success rate of the episodes finished in each iteration."""
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    obs = env.reset()
    log: dict[str, list[float]] = {"episode_return": [], "success_rate": []}
    for _ in tqdm(range(cfg.iterations), desc="training", disable=not progress):
        logps, ents, values, rewards, dones = [], [], [], [], []
        finished, successes = [], []
        for _ in range(cfg.rollout_len):
            logits, value = policy.forward_both(obs)
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            obs, reward, term, trunc, info = env.step(action)
            done = term | trunc
            logps.append(dist.log_prob(action)); ents.append(dist.entropy()); values.append(value)
            rewards.append(reward); dones.append(done.float())
            finished += info["episode_return"][done].tolist(); successes += info["success"][done].float().tolist()
        with torch.no_grad():
            bootstrap = policy.forward_both(obs)[1]
        returns = nstep_returns(rewards, dones, bootstrap, cfg.gamma)
        loss = a2c_loss(torch.stack(logps), torch.stack(ents), torch.stack(values), returns, cfg.entropy_coef)
        opt.zero_grad(); loss.backward(); opt.step()
        if finished:
            log["episode_return"].append(sum(finished) / len(finished))
            log["success_rate"].append(sum(successes) / len(successes))
    policy.eval()
    return log


def train_cue_agent(cfg: A2CConfig, progress: bool = True) -> tuple[HookedMLPPolicy, dict[str, list[float]]]:
    """The orientation agent: A2C on the cue corridor. Returns the policy and its training log."""
    with torch_threads(1):  # a tiny network: one thread is fastest
        torch.manual_seed(cfg.seed)
        env = CueCorridor(cfg.n_envs, cfg.length, seed=cfg.seed, n_noise=cfg.n_noise, cue_noise=cfg.cue_noise)
        policy = HookedMLPPolicy(env.obs_dim, 2, cfg.hidden)
        return policy, train_a2c(cfg, env, policy, progress)
