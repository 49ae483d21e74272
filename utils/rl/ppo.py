"""PPO, CleanRL-style: one config dataclass, one training function readable top to bottom.

The policy is a `HookedMLPPolicy` (actor and critic heads on a shared trunk), so every
layer of a trained agent can be cached, patched and steered with utils.hooks.
Environments come from utils.rl.envs.make_env (batched: the gridworld steps all envs in
one numpy call, which is where most of the speed comes from).

    cfg = PPOConfig(env_id="colour_goal", total_steps=200_000)
    result = train_ppo(cfg)
    result.policy, result.log["success"]

References: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), Huang et al. 2022
(CleanRL's "37 implementation details").
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError, check_fields
from utils.hooks import HookedMLPPolicy
from utils.rl.envs import check_agent_config, setup_run


@dataclass
class PPOConfig:
    env_id: str = "colour_goal"
    env_kwargs: dict = field(default_factory=dict)
    total_steps: int = 200_000     # environment steps, summed over envs
    n_envs: int = 64
    n_steps: int = 32               # rollout length per env; batch = n_envs * n_steps
    n_epochs: int = 4
    n_minibatches: int = 4
    lr: float = 2.5e-3
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    hidden: tuple[int, ...] = (64, 64)
    seed: int = 0
    stop_at_success: float | None = None  # stop early once the success rate of the last `success_window` episodes reaches this
    success_window: int = 256
    device: str = "cpu"

    @property
    def batch_size(self) -> int:
        return self.n_envs * self.n_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.n_minibatches

    @property
    def n_iterations(self) -> int:
        return max(1, self.total_steps // self.batch_size)

    def validate(self) -> "PPOConfig":
        """Raise a one-line CourseError for an impossible config (before anything is built)."""
        check_fields(self, positive_int=("total_steps", "n_envs", "n_steps", "n_epochs", "n_minibatches", "success_window"),
                     positive=("lr", "clip_coef"), unit=("gamma", "gae_lambda"), nonneg=("ent_coef", "vf_coef", "max_grad_norm"))
        if self.batch_size % self.n_minibatches:
            raise CourseError(f"n_envs * n_steps = {self.batch_size} is not divisible by n_minibatches = {self.n_minibatches}")
        if self.total_steps < self.batch_size:
            raise CourseError(f"total_steps = {self.total_steps} is less than one rollout (n_envs * n_steps = {self.batch_size})")
        check_agent_config(self)
        return self


@dataclass
class PPOResult:
    policy: HookedMLPPolicy
    log: dict[str, list]     # per iteration: env_steps, seconds, return, success, episodes, sps, losses
    config: PPOConfig
    seconds: float
    reached_threshold_at: float | None = None  # wall seconds when stop_at_success was reached


def compute_gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float,
                gae_lambda: float) -> Tensor:
    """Generalised advantage estimates [T, N] for a rollout of T steps in N envs.

    dones[t] is 1 where the transition at step t ended the episode (then nothing is
    bootstrapped past it); last_value [N] is V(obs after the last step)."""
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        running = delta + gamma * gae_lambda * nonterminal * running
        advantages[t] = running
    return advantages


def clipped_surrogate_loss(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, clip_coef: float) -> Tensor:
    """PPO's clipped policy loss (to minimise): -mean(min(r A, clip(r, 1-eps, 1+eps) A)), r = exp(logp_new - logp_old)."""
    ratio = torch.exp(logp_new - logp_old)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()


def train_ppo(cfg: PPOConfig, policy: HookedMLPPolicy | None = None, env=None, progress: bool = True) -> PPOResult:
    """Train a HookedMLPPolicy with PPO. Pass `env` to reuse a batched env (else make_env(cfg.env_id))."""
    env, policy, device = setup_run(cfg, policy, env, value_head=True, label="policy")
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)

    T, N = cfg.n_steps, cfg.n_envs
    obs_buf = torch.zeros(T, N, env.obs_dim, device=device)
    act_buf = torch.zeros(T, N, dtype=torch.long, device=device)
    logp_buf, rew_buf, done_buf, val_buf = (torch.zeros(T, N, device=device) for _ in range(4))

    log = {k: [] for k in ("env_steps", "seconds", "return", "success", "episodes", "sps", "policy_loss", "value_loss", "entropy")}
    recent_success: deque = deque(maxlen=cfg.success_window)
    reached_at = None
    start = time.perf_counter()
    obs = env.reset().to(device)
    bar = tqdm(range(cfg.n_iterations), desc=f"PPO {cfg.env_id}", disable=not progress, mininterval=1.0)
    for it in bar:
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.lr * (1.0 - it / cfg.n_iterations)

        # 1. Roll out the current policy for T steps in every env.
        ep_returns, ep_success = [], []
        with torch.no_grad():
            for t in range(T):
                logits, value = policy.forward_both(obs)
                dist = torch.distributions.Categorical(logits=logits)
                action = dist.sample()
                next_obs, reward, term, trunc, info = env.step(action)
                done = term | trunc  # time-limit truncation is treated as an end too (as CleanRL does)
                obs_buf[t], act_buf[t], logp_buf[t], val_buf[t] = obs, action, dist.log_prob(action), value
                rew_buf[t], done_buf[t] = reward.to(device), done.float().to(device)
                if done.any():
                    ep_returns += info["episode_return"][done].tolist()
                    ep_success += info["success"][done].float().tolist()
                obs = next_obs.to(device)
            last_value = policy.forward_both(obs)[1]

        # 2. Advantages (GAE) and value targets.
        advantages = compute_gae(rew_buf, val_buf, done_buf, last_value, cfg.gamma, cfg.gae_lambda)
        returns = advantages + val_buf

        # 3. Several epochs of minibatch updates on the clipped objective.
        b_obs, b_act, b_logp = obs_buf.reshape(T * N, -1), act_buf.reshape(-1), logp_buf.reshape(-1)
        b_adv, b_ret = advantages.reshape(-1), returns.reshape(-1)
        for _ in range(cfg.n_epochs):
            perm = torch.randperm(T * N, device=device)
            for mb in perm.split(cfg.minibatch_size):
                logits, value = policy.forward_both(b_obs[mb])
                dist = torch.distributions.Categorical(logits=logits)
                mb_adv = b_adv[mb]
                if cfg.norm_adv and len(mb) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = clipped_surrogate_loss(dist.log_prob(b_act[mb]), b_logp[mb], mb_adv, cfg.clip_coef)
                v_loss = 0.5 * ((value - b_ret[mb]) ** 2).mean()
                entropy = dist.entropy().mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()

        # 4. Log episode returns and success of the episodes that ended in this rollout.
        recent_success.extend(ep_success)
        elapsed = time.perf_counter() - start
        steps = (it + 1) * cfg.batch_size
        log["env_steps"].append(steps)
        log["seconds"].append(elapsed)
        log["return"].append(float(np.mean(ep_returns)) if ep_returns else float("nan"))
        log["success"].append(float(np.mean(ep_success)) if ep_success else float("nan"))
        log["episodes"].append(len(ep_returns))
        log["sps"].append(steps / elapsed)
        log["policy_loss"].append(pg_loss.item())
        log["value_loss"].append(v_loss.item())
        log["entropy"].append(entropy.item())
        if progress:
            bar.set_postfix(ret=f"{log['return'][-1]:.2f}", success=f"{log['success'][-1]:.2f}", sps=f"{log['sps'][-1]:.0f}")
        if (cfg.stop_at_success is not None and len(recent_success) == recent_success.maxlen
                and np.mean(recent_success) >= cfg.stop_at_success):
            reached_at = elapsed
            break
    bar.close()
    policy.eval()
    return PPOResult(policy.cpu(), log, cfg, time.perf_counter() - start, reached_at)


def config_dict(cfg) -> dict:
    """A JSON-friendly dict of a config (for checkpoint manifests)."""
    d = asdict(cfg)
    d["hidden"] = list(d["hidden"])
    return d
