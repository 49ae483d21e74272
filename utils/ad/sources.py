"""Source algorithms whose learning histories Algorithm Distillation imitates, and the
non-RL histories used as controls.

A `History` stores, for n tasks, E episodes of L steps: the observation each action was
taken in, the action, and the reward that followed. Dark Room histories come from tabular
Q-learning (the RL source), from an expert (for the expert-distillation baseline) or from
an expert whose noise is annealed away (AD-epsilon, no RL at all). Bandit histories come
from Thompson sampling or UCB1 and are one long episode per task.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from utils.core import CourseError
from utils.envs.bandits import BernoulliBandit
from utils.envs.dark_room import DarkRoom, next_cell
from utils.rl.qlearning import QLearningConfig, eps_greedy, q_update


@dataclass
class History:
    obs: Tensor       # [n_tasks, n_episodes, episode_len] observation the action was taken in
    actions: Tensor   # [n_tasks, n_episodes, episode_len]
    rewards: Tensor   # [n_tasks, n_episodes, episode_len] reward that followed the action
    tasks: Tensor     # [n_tasks] goal cells (Dark Room) or [n_tasks, k] arm means (bandits)

    def __post_init__(self):
        if not (self.obs.shape == self.actions.shape == self.rewards.shape) or self.obs.ndim != 3:
            raise CourseError(f"History needs obs, actions, rewards of one shape [tasks, episodes, steps], got "
                              f"{tuple(self.obs.shape)}, {tuple(self.actions.shape)}, {tuple(self.rewards.shape)}")

    @property
    def returns(self) -> Tensor:
        """Return of every episode [n_tasks, n_episodes] (float)."""
        return self.rewards.float().sum(-1)

    def __len__(self) -> int:
        return self.obs.shape[0]

    def select(self, idx) -> "History":
        return History(self.obs[idx], self.actions[idx], self.rewards[idx], self.tasks[idx])

    @staticmethod
    def cat(histories: list["History"]) -> "History":
        return History(*(torch.cat([getattr(h, f) for h in histories]) for f in ("obs", "actions", "rewards", "tasks")))


def q_learning_histories(goals: Tensor, cfg: QLearningConfig = QLearningConfig(), size: int = 9, episode_len: int = 20,
                         seed: int = 0, progress: bool = False, prefix: History | None = None) -> History:
    """Run tabular Q-learning from scratch on every task (one independent learner per row)
    and record its whole learning history.

    goals: [n] one goal per task, or [n, n_episodes] a goal per episode (to move the
    rewarded cell). prefix: episodes the learner first learns from (as if it had lived
    them) before it starts acting; they are not part of the returned history."""
    cfg.validate()
    goals = torch.as_tensor(goals, dtype=torch.long)
    schedule = goals if goals.ndim == 2 else None
    if schedule is not None and schedule.shape[1] != cfg.n_episodes:
        raise CourseError(f"a goal schedule needs one goal per episode: shape [n, {cfg.n_episodes}], got {tuple(schedule.shape)}")
    env = DarkRoom(goals[:, 0] if schedule is not None else goals, size, episode_len)
    g = torch.Generator().manual_seed(seed)
    n, ar = env.n_tasks, torch.arange(env.n_tasks)
    q = torch.full((n, env.n_obs, env.n_actions), cfg.q_init)

    def update(s_, a_, r_, s2_):
        q_update(q, s_, a_, r_, s2_, cfg.alpha, cfg.gamma)

    def sweep(o, a, r, nx):
        for _ in range(cfg.replay_sweeps):
            for t in reversed(range(episode_len)):
                update(o[:, t], a[:, t], r[:, t], nx[:, t])

    n_pre = 0
    if prefix is not None:
        if prefix.obs.shape[0] != n or prefix.obs.shape[2] != episode_len:
            raise CourseError(f"prefix must have shape [{n}, episodes, {episode_len}], got {tuple(prefix.obs.shape)}")
        n_pre = prefix.obs.shape[1]
        for e in range(n_pre):
            o, a, r = prefix.obs[:, e], prefix.actions[:, e], prefix.rewards[:, e]
            nx = torch.cat([o[:, 1:], next_cell(o[:, -1], a[:, -1], size)[:, None]], 1)
            for t in range(episode_len):
                update(o[:, t], a[:, t], r[:, t], nx[:, t])
            sweep(o, a, r, nx)
    shape = (n, cfg.n_episodes, episode_len)
    obs, acts, rews = (torch.zeros(shape, dtype=torch.long) for _ in range(3))
    nxt = torch.zeros(shape, dtype=torch.long)
    for e in tqdm(range(cfg.n_episodes), desc="Q-learning", disable=not progress):
        eps = max(cfg.eps_end, cfg.eps_start * cfg.eps_decay ** (e + n_pre))
        if schedule is not None:
            env.goals = schedule[:, e].clone()
        s = env.reset()
        for t in range(episode_len):
            a = eps_greedy(q[ar, s], eps, g)
            s2, r, *_ = env.step(a)
            obs[:, e, t], acts[:, e, t], rews[:, e, t], nxt[:, e, t] = s, a, r, s2
            update(s, a, r, s2)
            s = s2
        sweep(obs[:, e], acts[:, e], rews[:, e], nxt[:, e])
    return History(obs, acts, rews, env.goals if schedule is None else schedule[:, 0])


def expert_action(pos: Tensor, goals: Tensor, size: int, g: torch.Generator | None = None) -> Tensor:
    """A shortest-path action towards the goal (a random one of the useful moves), 'stay' on it."""
    dr = goals // size - pos // size
    dc = goals % size - pos % size
    vert = torch.where(dr > 0, torch.tensor(2), torch.tensor(1))
    horiz = torch.where(dc > 0, torch.tensor(4), torch.tensor(3))
    coin = torch.rand(len(pos), generator=g) < 0.5
    a = torch.where((dr != 0) & ((dc == 0) | coin), vert, horiz)
    return torch.where((dr == 0) & (dc == 0), torch.tensor(0), a)


def annealed_expert_histories(goals: Tensor, n_episodes: int, eps_start: float = 1.0, eps_end: float = 0.0,
                              size: int = 9, episode_len: int = 20, seed: int = 0) -> History:
    """Histories of an expert whose actions are replaced by random ones with probability
    epsilon, annealed linearly from eps_start (first episode) to eps_end (last episode).
    With eps_start = eps_end = 0 this is the expert-distillation data; with 1 -> 0 it is the
    AD-epsilon control (Zisman et al. 2023): an improving history with no RL learner behind it."""
    if n_episodes < 1 or not (0 <= eps_end <= 1 and 0 <= eps_start <= 1):
        raise CourseError(f"need n_episodes >= 1 and epsilons in [0, 1], got {n_episodes}, {eps_start}, {eps_end}")
    env = DarkRoom(goals, size, episode_len)
    g = torch.Generator().manual_seed(seed)
    n = env.n_tasks
    shape = (n, n_episodes, episode_len)
    obs, acts, rews = (torch.zeros(shape, dtype=torch.long) for _ in range(3))
    eps = torch.linspace(eps_start, eps_end, n_episodes) if n_episodes > 1 else torch.tensor([eps_end])
    for e in range(n_episodes):
        s = env.reset()
        for t in range(episode_len):
            a = expert_action(s, env.goals, size, g)
            a = torch.where(torch.rand(n, generator=g) < eps[e], torch.randint(0, 5, (n,), generator=g), a)
            s2, r, *_ = env.step(a)
            obs[:, e, t], acts[:, e, t], rews[:, e, t] = s, a, r
            s = s2
    return History(obs, acts, rews, env.goals)


def shuffle_episodes(history: History, seed: int = 0) -> History:
    """The same episodes with their order permuted inside every task's history: the context
    still says where the goal is, but no longer shows an agent improving."""
    g = torch.Generator().manual_seed(seed)
    n, e, _ = history.obs.shape
    perm = torch.argsort(torch.rand(n, e, generator=g), dim=1)[..., None].expand_as(history.obs)
    return History(history.obs.gather(1, perm), history.actions.gather(1, perm), history.rewards.gather(1, perm), history.tasks)


def bandit_histories(means: Tensor, n_pulls: int, algo: str = "thompson", seed: int = 0) -> History:
    """Learning histories of Thompson sampling (Beta(1, 1) priors) or UCB1 on every bandit in
    `means` [n_tasks, k]; one episode of `n_pulls` steps per task."""
    if algo not in ("thompson", "ucb", "random"):
        raise CourseError(f"unknown bandit algorithm {algo!r}: use 'thompson', 'ucb' or 'random'")
    if n_pulls < 1:
        raise CourseError(f"n_pulls must be positive, got {n_pulls}")
    env = BernoulliBandit(means, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    n, k = env.n_tasks, env.n_actions
    wins, pulls = torch.zeros(n, k), torch.zeros(n, k)
    acts, rews = torch.zeros(n, 1, n_pulls, dtype=torch.long), torch.zeros(n, 1, n_pulls, dtype=torch.long)
    for t in range(n_pulls):
        if algo == "thompson":
            a = torch.distributions.Beta(1 + wins, 1 + pulls - wins).sample().argmax(-1)
        elif algo == "ucb":
            bonus = torch.sqrt(2 * torch.log(torch.tensor(t + 1.0)) / pulls.clamp_min(1))
            score = torch.where(pulls == 0, torch.full_like(pulls, 1e9), wins / pulls.clamp_min(1) + bonus)
            a = (score + 1e-6 * torch.rand(n, k, generator=g)).argmax(-1)
        else:
            a = torch.randint(0, k, (n,), generator=g)
        r = env.step(a)[1]
        acts[:, 0, t], rews[:, 0, t] = a, r
        pulls[torch.arange(n), a] += 1
        wins[torch.arange(n), a] += r.float()
    return History(torch.zeros_like(acts), acts, rews, env.means)
