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
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError, check_fields
from utils.hooks import HookedMLPPolicy
from utils.rl.envs import check_agent_config, setup_run


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
                     positive=("lr",), unit=("gamma", "start_eps", "end_eps", "exploration_fraction"))
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


def train_dqn(cfg: DQNConfig, qnet: HookedMLPPolicy | None = None, env=None, progress: bool = True) -> DQNResult:
    env, qnet, device = setup_run(cfg, qnet, env, value_head=False, label="Q-network")
    target = copy.deepcopy(qnet)
    optimizer = torch.optim.Adam(qnet.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)

    # Replay buffer: a ring of tensors.
    B = cfg.buffer_size
    buf_obs = torch.zeros(B, env.obs_dim, device=device)
    buf_next = torch.zeros(B, env.obs_dim, device=device)
    buf_act = torch.zeros(B, dtype=torch.long, device=device)
    buf_rew = torch.zeros(B, device=device)
    buf_term = torch.zeros(B, device=device)
    ptr, full = 0, False

    log = {k: [] for k in ("env_steps", "seconds", "return", "success", "episodes", "sps", "epsilon", "td_loss")}
    recent_success: deque = deque(maxlen=cfg.success_window)
    ep_returns, ep_success, losses = [], [], []
    reached_at = None
    n_vec_steps = max(1, cfg.total_steps // cfg.n_envs)
    log_every = max(1, n_vec_steps // 100)
    last_target_update = 0
    start = time.perf_counter()
    obs = env.reset().to(device)
    bar = tqdm(range(n_vec_steps), desc=f"DQN {cfg.env_id}", disable=not progress, mininterval=1.0)
    for vstep in bar:
        steps = vstep * cfg.n_envs
        # 1. Act epsilon-greedily in every env.
        eps = epsilon_at(steps, cfg)
        with torch.no_grad():
            greedy = qnet(obs).argmax(-1)
        explore = torch.rand(cfg.n_envs, generator=gen) < eps
        action = torch.where(explore, torch.randint(0, env.n_actions, (cfg.n_envs,), generator=gen), greedy.cpu())
        next_obs, reward, term, trunc, info = env.step(action)
        done = term | trunc

        # 2. Store the transitions; a truncated episode still bootstraps from its final observation.
        idx = (torch.arange(cfg.n_envs) + ptr) % B
        buf_obs[idx], buf_act[idx], buf_rew[idx] = obs, action.to(device), reward.to(device)
        buf_next[idx], buf_term[idx] = info["final_obs"].float().to(device), term.float().to(device)
        ptr = (ptr + cfg.n_envs) % B
        full = full or ptr < cfg.n_envs
        if done.any():
            ep_returns += info["episode_return"][done].tolist()
            ep_success += info["success"][done].float().tolist()
            recent_success.extend(info["success"][done].float().tolist())
        obs = next_obs.to(device)

        # 3. Learn from replayed transitions.
        if steps >= cfg.learning_starts:
            size = B if full else ptr
            for _ in range(cfg.grad_steps):
                j = torch.randint(0, size, (cfg.batch_size,), generator=gen).to(device)
                with torch.no_grad():
                    next_q = target(buf_next[j])
                    if cfg.double_q:  # pick a' with the online net, evaluate it with the target net
                        a_star = qnet(buf_next[j]).argmax(-1)
                        next_q = next_q.gather(1, a_star[:, None]).expand_as(next_q)
                    y = td_target(buf_rew[j], next_q, buf_term[j], cfg.gamma)
                q = qnet(buf_obs[j]).gather(1, buf_act[j][:, None]).squeeze(1)
                loss = torch.nn.functional.smooth_l1_loss(q, y)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(qnet.parameters(), cfg.max_grad_norm)
                optimizer.step()
                losses.append(loss.item())
            if steps - last_target_update >= cfg.target_update_every:
                last_target_update = steps
                with torch.no_grad():
                    for tp, p in zip(target.parameters(), qnet.parameters()):
                        tp.mul_(1 - cfg.tau).add_(cfg.tau * p)

        # 4. Log.
        if (vstep + 1) % log_every == 0 or vstep == n_vec_steps - 1:
            elapsed = time.perf_counter() - start
            total = (vstep + 1) * cfg.n_envs
            log["env_steps"].append(total)
            log["seconds"].append(elapsed)
            log["return"].append(float(np.mean(ep_returns)) if ep_returns else float("nan"))
            log["success"].append(float(np.mean(ep_success)) if ep_success else float("nan"))
            log["episodes"].append(len(ep_returns))
            log["sps"].append(total / elapsed)
            log["epsilon"].append(eps)
            log["td_loss"].append(float(np.mean(losses)) if losses else float("nan"))
            ep_returns, ep_success, losses = [], [], []
            if progress:
                bar.set_postfix(ret=f"{log['return'][-1]:.2f}", success=f"{log['success'][-1]:.2f}", eps=f"{eps:.2f}")
        if (cfg.stop_at_success is not None and len(recent_success) == recent_success.maxlen
                and np.mean(recent_success) >= cfg.stop_at_success):
            reached_at = time.perf_counter() - start
            break
    bar.close()
    qnet.eval()
    return DQNResult(qnet.cpu(), log, cfg, time.perf_counter() - start, reached_at)
