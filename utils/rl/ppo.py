"""PPO, CleanRL-style: one config dataclass, one training function readable top to bottom.

The policy is a `HookedMLPPolicy` (actor and critic heads on a shared trunk), so every
layer of a trained agent can be cached, patched and steered with utils.hooks.
Environments come from utils.envs.make_env (batched: the gridworld steps all envs in
one numpy call, which is where most of the speed comes from).

The update (`ppo_update`) takes any policy through an `evaluate(minibatch index)` function,
so the discrete-action PPO here, Control RL's masked categorical policy and AutoSteer's
Gaussian policy (utils.steering) share one tested implementation.

    cfg = PPOConfig(env_id="colour_goal", total_steps=200_000)
    result = train_ppo(cfg)
    result.policy, result.log["success"]

References: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), Huang et al. 2022
(CleanRL's "37 implementation details").
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError, check_fields
from utils.models.mlp_policy import HookedMLPPolicy
from utils.rl.common import EpisodeLog, check_agent_config, setup_run


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
                     positive=("lr", "clip_coef"), unit=("gamma", "gae_lambda"), nonneg=("ent_coef", "vf_coef", "max_grad_norm"),
                     nonneg_int=("seed",))
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


def ppo_update(evaluate: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]], logp_old: Tensor, advantages: Tensor,
               returns: Tensor, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], *, n_epochs: int,
               minibatch_size: int, clip_coef: float, vf_coef: float, ent_coef: float, max_grad_norm: float,
               norm_adv: bool = True) -> dict[str, float]:
    """Several epochs of minibatch updates on PPO's clipped objective, for any policy.

    `evaluate(idx)` returns (log-prob of the taken actions [m], mean entropy [], value [m]) for
    the flat-batch rows `idx` under the current parameters; `logp_old`, `advantages`,
    `returns` are flat [n]. Advantages are normalised per minibatch (`norm_adv`). Returns the
    last minibatch's losses and the mean entropy and clip fraction over all minibatches."""
    params = list(params)
    n = len(logp_old)
    ents, clip_fracs = [], []
    for _ in range(n_epochs):
        for mb in torch.randperm(n, device=logp_old.device).split(minibatch_size):
            logp_new, entropy, value = evaluate(mb)
            mb_adv = advantages[mb]
            if norm_adv and len(mb) > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            pg_loss = clipped_surrogate_loss(logp_new, logp_old[mb], mb_adv, clip_coef)
            v_loss = 0.5 * ((value - returns[mb]) ** 2).mean()
            loss = pg_loss + vf_coef * v_loss - ent_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                clip_fracs.append(float(((logp_new - logp_old[mb]).exp().sub(1).abs() > clip_coef).float().mean()))
                ents.append(float(entropy))
    return {"policy_loss": pg_loss.item(), "value_loss": v_loss.item(), "entropy": ents[-1],
            "mean_entropy": float(np.mean(ents)), "clip_frac": float(np.mean(clip_fracs))}


@dataclass
class Rollout:
    obs: Tensor        # [T, N, obs_dim]
    actions: Tensor    # [T, N]
    logp: Tensor       # [T, N]
    values: Tensor     # [T, N]
    rewards: Tensor    # [T, N]
    dones: Tensor      # [T, N] 1.0 where the episode ended at that step
    last_value: Tensor  # [N] V(observation after the last step)
    next_obs: Tensor   # [N, obs_dim] where the next rollout starts


@torch.no_grad()
def collect_rollout(policy: HookedMLPPolicy, env, obs: Tensor, n_steps: int, episodes: EpisodeLog | None = None) -> Rollout:
    """Roll out the current policy for `n_steps` in every env of the batched `env`, starting at `obs`."""
    device = obs.device
    T, N = n_steps, obs.shape[0]
    obs_buf = torch.zeros(T, N, obs.shape[1], device=device)
    act_buf = torch.zeros(T, N, dtype=torch.long, device=device)
    logp_buf, rew_buf, done_buf, val_buf = (torch.zeros(T, N, device=device) for _ in range(4))
    for t in range(T):
        logits, value = policy.forward_both(obs)
        dist = torch.distributions.Categorical(logits=logits)
        action = dist.sample()
        next_obs, reward, term, trunc, info = env.step(action)
        done = term | trunc  # time-limit truncation is treated as an end too (as CleanRL does)
        obs_buf[t], act_buf[t], logp_buf[t], val_buf[t] = obs, action, dist.log_prob(action), value
        rew_buf[t], done_buf[t] = reward.to(device), done.float().to(device)
        if episodes is not None:
            episodes.add_episodes(info, done)
        obs = next_obs.to(device)
    last_value = policy.forward_both(obs)[1]
    return Rollout(obs_buf, act_buf, logp_buf, val_buf, rew_buf, done_buf, last_value, obs)


def train_ppo(cfg: PPOConfig, policy: HookedMLPPolicy | None = None, env=None, progress: bool = True,
              callback: Callable[[int, HookedMLPPolicy, dict], None] | None = None) -> PPOResult:
    """Train a HookedMLPPolicy with PPO. Pass `env` to reuse a batched env (else make_env(cfg.env_id)).

    `callback(n_updates, policy, log)`, if given, is called once before the first update
    (n_updates = 0, the initial network) and after every update (n_updates = 1, 2, ...), with
    the training log so far: the hook for saving checkpoints over training
    (utils.dynamics). It must not change the policy; it draws no random numbers of its own
    here, so a run with a callback reproduces the run without one."""
    env, policy, device = setup_run(cfg, policy, env, value_head=True, label="policy")
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)
    episodes = EpisodeLog(("policy_loss", "value_loss", "entropy"), cfg.success_window, cfg.stop_at_success)
    reached_at = None
    obs = env.reset().to(device)
    if callback is not None:
        callback(0, policy, episodes.log)
    bar = tqdm(range(cfg.n_iterations), desc=f"PPO {cfg.env_id}", disable=not progress, mininterval=1.0)
    for it in bar:
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.lr * (1.0 - it / cfg.n_iterations)
        ro = collect_rollout(policy, env, obs, cfg.n_steps, episodes)
        obs = ro.next_obs
        advantages = compute_gae(ro.rewards, ro.values, ro.dones, ro.last_value, cfg.gamma, cfg.gae_lambda)
        b_obs, b_act = ro.obs.reshape(cfg.batch_size, -1), ro.actions.reshape(-1)

        def evaluate(mb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            logits, value = policy.forward_both(b_obs[mb])
            dist = torch.distributions.Categorical(logits=logits)
            return dist.log_prob(b_act[mb]), dist.entropy().mean(), value

        stats = ppo_update(evaluate, ro.logp.reshape(-1), advantages.reshape(-1), (advantages + ro.values).reshape(-1),
                           optimizer, policy.parameters(), n_epochs=cfg.n_epochs, minibatch_size=cfg.minibatch_size,
                           clip_coef=cfg.clip_coef, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef,
                           max_grad_norm=cfg.max_grad_norm, norm_adv=cfg.norm_adv)
        elapsed = episodes.row((it + 1) * cfg.batch_size, policy_loss=stats["policy_loss"],
                               value_loss=stats["value_loss"], entropy=stats["entropy"])
        if callback is not None:
            callback(it + 1, policy, episodes.log)
        if progress:
            bar.set_postfix(**episodes.postfix(), sps=f"{episodes.log['sps'][-1]:.0f}")
        if episodes.reached():
            reached_at = elapsed
            break
    bar.close()
    policy.eval()
    return PPOResult(policy.cpu(), episodes.log, cfg, time.perf_counter() - episodes.start, reached_at)
