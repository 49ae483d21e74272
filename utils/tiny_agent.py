"""The orientation chapter's tiny agent: a cue corridor and a short actor-critic trainer.

CueCorridor: positions 0..L-1; a cue in the observation says whether the goal is the
left end or the right end. The agent starts at a random inner cell, moves left or
right, and gets +1 at the cued end, -1 at the other end, 0 on timeout. The observation
is [one-hot position (L), one-hot cue (2), n_noise distractor readings] where the
distractors are Gaussian noise the agent must learn to ignore (they also stop a probe
from separating every observation trivially). Batched in torch: one `step` advances
every environment at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError, torch_threads
from utils.hooks import HookedMLPPolicy

LEFT, RIGHT = 0, 1


class CueCorridor:
    def __init__(self, n_envs: int, length: int = 7, max_steps: int = 12, seed: int = 0, n_noise: int = 6):
        if n_envs <= 0:
            raise CourseError(f"n_envs must be positive, got {n_envs}")
        if length < 4:
            raise CourseError(f"length must be at least 4 (two ends and room to move), got {length}")
        self.n, self.length, self.max_steps, self.n_noise = n_envs, length, max_steps, n_noise
        self.g = torch.Generator().manual_seed(seed)
        self.obs_dim = length + 2 + n_noise
        self.pos = torch.zeros(n_envs, dtype=torch.long)
        self.cue = torch.zeros(n_envs, dtype=torch.long)
        self.t = torch.zeros(n_envs, dtype=torch.long)
        self.reset_where(torch.ones(n_envs, dtype=torch.bool))

    def observe(self, pos: Tensor | None = None, cue: Tensor | None = None) -> Tensor:
        pos = self.pos if pos is None else pos
        cue = self.cue if cue is None else cue
        noise = torch.randn(len(pos), self.n_noise, generator=self.g)
        return encode(pos, cue, self.length, noise)

    def reset_where(self, mask: Tensor) -> None:
        k = int(mask.sum())
        self.pos[mask] = torch.randint(1, self.length - 1, (k,), generator=self.g)
        self.cue[mask] = torch.randint(0, 2, (k,), generator=self.g)
        self.t[mask] = 0

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Advance every env; returns (reward, done, observation after auto-reset)."""
        self.pos = (self.pos + torch.where(action == RIGHT, 1, -1)).clamp(0, self.length - 1)
        self.t += 1
        at_left, at_right = self.pos == 0, self.pos == self.length - 1
        goal_right = self.cue == RIGHT
        reward = torch.zeros(self.n)
        reward[(at_right & goal_right) | (at_left & ~goal_right)] = 1.0
        reward[(at_left & goal_right) | (at_right & ~goal_right)] = -1.0
        done = at_left | at_right | (self.t >= self.max_steps)
        self.reset_where(done)
        return reward, done, self.observe()


def encode(pos: Tensor, cue: Tensor, length: int = 7, noise: Tensor | None = None, n_noise: int = 6) -> Tensor:
    """Observations [batch, length + 2 + n_noise] for positions and cues [batch]; the
    distractor readings are `noise` [batch, n_noise] (zeros if None)."""
    pos, cue = torch.as_tensor(pos).long(), torch.as_tensor(cue).long()
    if pos.shape != cue.shape or pos.ndim != 1:
        raise CourseError(f"pos and cue must be 1-D of the same length, got {tuple(pos.shape)} and {tuple(cue.shape)}")
    if (pos < 0).any() or (pos >= length).any() or (cue < 0).any() or (cue > 1).any():
        raise CourseError(f"positions must be in [0, {length}) and cues in {{0, 1}}")
    if noise is None:
        noise = torch.zeros(len(pos), n_noise)
    if noise.ndim != 2 or len(noise) != len(pos):
        raise CourseError(f"noise must have shape [{len(pos)}, n_noise], got {tuple(noise.shape)}")
    onehots = [torch.nn.functional.one_hot(pos, length), torch.nn.functional.one_hot(cue, 2)]
    return torch.cat([*onehots, noise.float()], -1).float()


@dataclass
class TrainConfig:
    n_envs: int = 64
    iterations: int = 150
    rollout_len: int = 16
    lr: float = 3e-3
    gamma: float = 0.9
    entropy_coef: float = 0.01
    hidden: tuple[int, ...] = (32, 32)
    length: int = 7
    n_noise: int = 6
    seed: int = 0

    def __post_init__(self):
        if self.n_envs <= 0 or self.iterations <= 0 or self.rollout_len <= 0:
            raise CourseError("n_envs, iterations and rollout_len must be positive")
        if not (self.lr > 0):
            raise CourseError(f"lr must be positive, got {self.lr}")
        if not (0 <= self.gamma <= 1):
            raise CourseError(f"gamma must be in [0, 1], got {self.gamma}")


def train_cue_agent(cfg: TrainConfig, progress: bool = True) -> tuple[HookedMLPPolicy, dict[str, list[float]]]:
    """Advantage actor-critic (n-step returns) on CueCorridor. Returns the policy and a log
    with the mean episode return per iteration."""
    with torch_threads(1):  # a tiny network: one thread is fastest
        return _train(cfg, progress)


def _train(cfg: TrainConfig, progress: bool) -> tuple[HookedMLPPolicy, dict[str, list[float]]]:
    torch.manual_seed(cfg.seed)
    env = CueCorridor(cfg.n_envs, cfg.length, seed=cfg.seed, n_noise=cfg.n_noise)
    policy = HookedMLPPolicy(env.obs_dim, 2, cfg.hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    obs = env.observe()
    ep_ret = torch.zeros(cfg.n_envs)
    log: dict[str, list[float]] = {"episode_return": [], "success_rate": []}
    for _ in tqdm(range(cfg.iterations), desc="training", disable=not progress):
        logps, ents, values, rewards, dones = [], [], [], [], []
        finished, successes = [], []
        for _ in range(cfg.rollout_len):
            logits, value = policy.forward_both(obs)
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            reward, done, obs = env.step(action)
            logps.append(dist.log_prob(action)); ents.append(dist.entropy()); values.append(value)
            rewards.append(reward); dones.append(done.float())
            ep_ret += reward
            finished += ep_ret[done].tolist(); successes += (reward[done] > 0).float().tolist()
            ep_ret[done] = 0
        with torch.no_grad():
            _, ret = policy.forward_both(obs)
        returns = []
        for r, d in zip(reversed(rewards), reversed(dones)):
            ret = r + cfg.gamma * ret * (1 - d)
            returns.append(ret)
        returns = torch.stack(returns[::-1])
        values, logps, ents = torch.stack(values), torch.stack(logps), torch.stack(ents)
        adv = (returns - values).detach()
        loss = -(logps * adv).mean() + 0.5 * (returns - values).pow(2).mean() - cfg.entropy_coef * ents.mean()
        opt.zero_grad(); loss.backward(); opt.step()
        if finished:
            log["episode_return"].append(sum(finished) / len(finished))
            log["success_rate"].append(sum(successes) / len(successes))
    policy.eval()
    return policy, log


@torch.no_grad()
def evaluate(policy: HookedMLPPolicy, n_episodes: int = 500, length: int = 7, seed: int = 123, greedy: bool = True,
             fwd_hooks=None, n_noise: int = 6) -> dict[str, float]:
    """Outcomes over `n_episodes` run in parallel (optionally with hooks): the fraction that
    reached the cued end ("success"), the other end ("wrong_end") and neither ("timeout")."""
    env = CueCorridor(n_episodes, length, seed=seed, n_noise=n_noise)
    active = torch.ones(n_episodes, dtype=torch.bool)
    success = torch.zeros(n_episodes, dtype=torch.bool)
    wrong = torch.zeros(n_episodes, dtype=torch.bool)
    obs = env.observe()
    for _ in range(env.max_steps):
        logits = policy.run_with_hooks(obs, fwd_hooks=fwd_hooks or [])
        action = logits.argmax(-1) if greedy else torch.distributions.Categorical(logits=logits).sample()
        reward, done, obs = env.step(action)
        success |= active & done & (reward > 0)
        wrong |= active & done & (reward < 0)
        active &= ~done
        if not active.any():
            break
    s, w = success.float().mean().item(), wrong.float().mean().item()
    return {"success": s, "wrong_end": w, "timeout": 1.0 - s - w}


def random_policy_success(n_episodes: int = 2000, length: int = 7, seed: int = 7) -> float:
    """Chance level: the success rate of a policy that moves left or right at random."""
    g = torch.Generator().manual_seed(seed)
    env = CueCorridor(n_episodes, length, seed=seed, n_noise=0)
    active = torch.ones(n_episodes, dtype=torch.bool)
    success = torch.zeros(n_episodes, dtype=torch.bool)
    for _ in range(env.max_steps):
        reward, done, _ = env.step(torch.randint(0, 2, (n_episodes,), generator=g))
        success |= active & done & (reward > 0)
        active &= ~done
    return success.float().mean().item()
