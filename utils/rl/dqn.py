"""DQN, CleanRL-style, on batched environments: one config dataclass, one training function.

The Q-network is a `HookedMLPPolicy` without a value head: its `hook_logits` are the
Q-values, so the same hooks, probes and patching code work on a DQN agent and on a PPO
agent (chapter 01 compares them). Each vector step adds n_envs transitions to a replay
buffer and takes `grad_steps` gradient steps on the TD error against a target network.

    result = train_dqn(DQNConfig(env_id="colour_goal", total_steps=200_000))

Reference: Mnih et al. 2015 (DQN); CleanRL's dqn.py (Huang et al. 2022).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError, check_fields
from utils.models.mlp_policy import HookedMLPPolicy
from utils.rl.common import EpisodeLog, check_agent_config, setup_run


@dataclass
class DQNConfig:
    env_id: str = "colour_goal"
    env_kwargs: dict = field(default_factory=dict)
    total_steps: int = 200_000       # environment steps, summed over envs
    n_envs: int = 32
    buffer_size: int = 50_000
    batch_size: int = 256
    lr: float = 1e-3
    gamma: float = 0.99
    start_eps: float = 1.0
    end_eps: float = 0.05
    exploration_fraction: float = 0.3  # fraction of total_steps over which epsilon decays linearly
    learning_starts: int = 2_000       # env steps of pure exploration before the first update
    grad_steps: int = 2                # gradient steps per vector step
    target_update_every: int = 2_000   # env steps between target-network updates
    tau: float = 1.0                   # 1 = hard copy
    double_q: bool = True
    max_grad_norm: float = 10.0
    hidden: tuple[int, ...] = (64, 64)
    seed: int = 0
    stop_at_success: float | None = None
    success_window: int = 256
    device: str = "cpu"

    def validate(self) -> "DQNConfig":
        check_fields(self, positive_int=("total_steps", "n_envs", "buffer_size", "batch_size", "grad_steps",
                                         "target_update_every", "success_window"),
                     positive=("lr", "max_grad_norm"), unit=("gamma", "start_eps", "end_eps", "exploration_fraction"),
                     nonneg_int=("seed", "learning_starts"))
        if not 0 < self.tau <= 1:
            raise CourseError(f"DQNConfig.tau must be in (0, 1], got {self.tau!r}")
        if self.learning_starts < 0 or self.learning_starts >= self.total_steps:
            raise CourseError(f"DQNConfig.learning_starts must be in [0, total_steps={self.total_steps}), got {self.learning_starts}")
        if self.batch_size > self.buffer_size:
            raise CourseError(f"DQNConfig.batch_size ({self.batch_size}) exceeds buffer_size ({self.buffer_size})")
        check_agent_config(self)
        return self


@dataclass
class DQNResult:
    qnet: HookedMLPPolicy
    log: dict[str, list]
    config: DQNConfig
    seconds: float
    reached_threshold_at: float | None = None


def td_target(rewards: Tensor, next_q: Tensor, terminated: Tensor, gamma: float) -> Tensor:
    """One-step TD targets [B]: r + gamma * max_a' Q_target(s', a'), with no bootstrap where the
    episode terminated. next_q: [B, n_actions] target-network Q-values of the next observations."""
    return rewards + gamma * (1.0 - terminated.float()) * next_q.max(-1).values


def epsilon_at(step: int, cfg: DQNConfig) -> float:
    """Linearly decaying exploration rate."""
    span = max(1.0, cfg.exploration_fraction * cfg.total_steps)
    return max(cfg.end_eps, cfg.start_eps + (cfg.end_eps - cfg.start_eps) * step / span)


class ReplayBuffer:
    """A ring of tensors holding (obs, action, reward, next obs, terminated) transitions."""

    def __init__(self, size: int, obs_dim: int, device: torch.device):
        self.size, self.ptr, self.full = size, 0, False
        self.obs = torch.zeros(size, obs_dim, device=device)
        self.next = torch.zeros(size, obs_dim, device=device)
        self.act = torch.zeros(size, dtype=torch.long, device=device)
        self.rew = torch.zeros(size, device=device)
        self.term = torch.zeros(size, device=device)

    def add(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, term: Tensor) -> None:
        n, dev = len(obs), self.obs.device
        idx = (torch.arange(n) + self.ptr) % self.size
        self.obs[idx], self.act[idx], self.rew[idx] = obs, action.to(dev), reward.to(dev)
        self.next[idx], self.term[idx] = next_obs.float().to(dev), term.float().to(dev)
        self.ptr = (self.ptr + n) % self.size
        self.full = self.full or self.ptr < n

    def sample(self, batch_size: int, gen: torch.Generator) -> Tensor:
        return torch.randint(0, self.size if self.full else self.ptr, (batch_size,), generator=gen).to(self.obs.device)


def dqn_update(qnet: HookedMLPPolicy, target: HookedMLPPolicy, buf: ReplayBuffer, j: Tensor,
               optimizer: torch.optim.Optimizer, cfg: DQNConfig) -> float:
    """One gradient step on the Huber TD error of the replayed transitions `j`; returns the loss."""
    with torch.no_grad():
        next_q = target(buf.next[j])
        if cfg.double_q:  # pick a' with the online net, evaluate it with the target net
            a_star = qnet(buf.next[j]).argmax(-1)
            next_q = next_q.gather(1, a_star[:, None]).expand_as(next_q)
        y = td_target(buf.rew[j], next_q, buf.term[j], cfg.gamma)
    q = qnet(buf.obs[j]).gather(1, buf.act[j][:, None]).squeeze(1)
    loss = torch.nn.functional.smooth_l1_loss(q, y)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(qnet.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def soft_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau online (tau = 1: a hard copy)."""
    for tp, p in zip(target.parameters(), online.parameters()):
        tp.mul_(1 - tau).add_(tau * p)


def train_dqn(cfg: DQNConfig, qnet: HookedMLPPolicy | None = None, env=None, progress: bool = True) -> DQNResult:
    env, qnet, device = setup_run(cfg, qnet, env, value_head=False, label="Q-network")
    target = copy.deepcopy(qnet)
    optimizer = torch.optim.Adam(qnet.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    buf = ReplayBuffer(cfg.buffer_size, env.obs_dim, device)
    episodes = EpisodeLog(("epsilon", "td_loss"), cfg.success_window, cfg.stop_at_success)
    losses, reached_at, last_target_update = [], None, 0
    n_vec_steps = max(1, cfg.total_steps // cfg.n_envs)
    log_every = max(1, n_vec_steps // 100)
    obs = env.reset().to(device)
    bar = tqdm(range(n_vec_steps), desc=f"DQN {cfg.env_id}", disable=not progress, mininterval=1.0)
    for vstep in bar:
        steps = vstep * cfg.n_envs
        # 1. Act epsilon-greedily in every env; store the transitions (a truncated episode still
        #    bootstraps from its final observation).
        eps = epsilon_at(steps, cfg)
        with torch.no_grad():
            greedy = qnet(obs).argmax(-1)
        explore = torch.rand(cfg.n_envs, generator=gen) < eps
        action = torch.where(explore, torch.randint(0, env.n_actions, (cfg.n_envs,), generator=gen), greedy.cpu())
        next_obs, reward, term, trunc, info = env.step(action)
        buf.add(obs, action, reward, info["final_obs"], term)
        episodes.add_episodes(info, term | trunc)
        obs = next_obs.to(device)
        # 2. Learn from replayed transitions; move the target network now and then.
        if steps >= cfg.learning_starts:
            losses += [dqn_update(qnet, target, buf, buf.sample(cfg.batch_size, gen), optimizer, cfg)
                       for _ in range(cfg.grad_steps)]
            if steps - last_target_update >= cfg.target_update_every:
                last_target_update = steps
                soft_update(target, qnet, cfg.tau)
        # 3. Log.
        if (vstep + 1) % log_every == 0 or vstep == n_vec_steps - 1:
            episodes.row((vstep + 1) * cfg.n_envs, epsilon=eps, td_loss=float(np.mean(losses)) if losses else float("nan"))
            losses = []
            if progress:
                bar.set_postfix(**episodes.postfix(), eps=f"{eps:.2f}")
        if episodes.reached():
            reached_at = time.perf_counter() - episodes.start
            break
    bar.close()
    qnet.eval()
    return DQNResult(qnet.cpu(), episodes.log, cfg, time.perf_counter() - episodes.start, reached_at)
