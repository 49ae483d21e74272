"""Vectorised environments for Algorithm Distillation: Dark Room and Bernoulli bandits.

Every environment holds a batch of *tasks* (one goal cell, or one vector of arm means, per
row) and advances all of them with one `step`. Tensors live on the CPU; the sizes are tiny.

Dark Room (Laskin et al. 2022): a `size` x `size` grid, the agent starts in the centre, 5
actions (0 stay, 1 up, 2 down, 3 left, 4 right), episodes of `episode_len` steps. The
observation is only the agent's own cell index (row * size + col); the goal is never
observed. Reward is 1 on every step that ends on the goal cell, so the best return for a
goal at Manhattan distance d from the start is episode_len + 1 - max(d, 1).
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError

STAY, UP, DOWN, LEFT, RIGHT = range(5)
MOVES = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
ACTION_NAMES = ("stay", "up", "down", "left", "right")


class DarkRoom:
    """A batch of Dark Room tasks, one goal cell per row."""

    n_actions = 5

    def __init__(self, goals: Tensor, size: int = 9, episode_len: int = 20):
        if size < 3 or size % 2 == 0:
            raise CourseError(f"Dark Room size must be an odd number >= 3 (so there is a centre), got {size}")
        if episode_len < 1:
            raise CourseError(f"episode_len must be positive, got {episode_len}")
        goals = torch.as_tensor(goals, dtype=torch.long).reshape(-1)
        if len(goals) == 0 or goals.min() < 0 or goals.max() >= size * size:
            raise CourseError(f"goals must be cell indices in [0, {size * size}), got {goals.tolist()[:8]}...")
        self.size, self.episode_len, self.goals = size, episode_len, goals.clone()
        self.n_obs = size * size
        self.start = (size // 2) * size + size // 2
        self.pos = torch.full((len(goals),), self.start, dtype=torch.long)
        self.t = 0

    @property
    def n_tasks(self) -> int:
        return len(self.goals)

    def reset(self) -> Tensor:
        """Start a new episode in every task; returns the observations [n_tasks]."""
        self.pos = torch.full((self.n_tasks,), self.start, dtype=torch.long)
        self.t = 0
        return self.pos.clone()

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Move every task's agent; returns (observations [n], rewards [n] in {0, 1})."""
        actions = torch.as_tensor(actions, dtype=torch.long)
        if actions.shape != (self.n_tasks,) or actions.min() < 0 or actions.max() >= self.n_actions:
            raise CourseError(f"actions must be {self.n_tasks} ints in [0, 5), got shape {tuple(actions.shape)}")
        self.pos = next_cell(self.pos, actions, self.size)
        self.t += 1
        return self.pos.clone(), (self.pos == self.goals).long()

    def optimal_return(self) -> Tensor:
        """The best achievable return per task [n_tasks] (float)."""
        return optimal_return(self.goals, self.size, self.episode_len)


def next_cell(pos: Tensor, actions: Tensor, size: int) -> Tensor:
    """Deterministic Dark Room dynamics: move, clipped at the walls."""
    rc = torch.stack([pos // size, pos % size], -1) + MOVES[actions]
    rc = rc.clamp(0, size - 1)
    return rc[..., 0] * size + rc[..., 1]


def distance_from_start(cells: Tensor, size: int = 9) -> Tensor:
    c = size // 2
    cells = torch.as_tensor(cells)
    return (cells // size - c).abs() + (cells % size - c).abs()


def optimal_return(goals: Tensor, size: int = 9, episode_len: int = 20) -> Tensor:
    d = distance_from_start(goals, size).clamp_min(1)
    return (episode_len + 1 - d).clamp_min(0).float()


def split_goals(size: int = 9, n_test: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(train goals, held-out goals): a random split of the cells other than the start cell."""
    cells = torch.arange(size * size)
    cells = cells[cells != (size // 2) * size + size // 2]
    if not 0 < n_test < len(cells):
        raise CourseError(f"n_test must be between 1 and {len(cells) - 1} for a {size}x{size} room, got {n_test}")
    perm = torch.randperm(len(cells), generator=torch.Generator().manual_seed(seed))
    return cells[perm[n_test:]].sort().values, cells[perm[:n_test]].sort().values


class BernoulliBandit:
    """A batch of k-armed Bernoulli bandits, one vector of arm means per row. One 'episode' is
    one pull; the observation is constant (0)."""

    n_obs = 1

    def __init__(self, means: Tensor, seed: int = 0):
        means = torch.as_tensor(means, dtype=torch.float)
        if means.ndim != 2 or means.shape[1] < 2 or means.min() < 0 or means.max() > 1:
            raise CourseError(f"bandit means must be [n_tasks, k>=2] in [0, 1], got shape {tuple(means.shape)}")
        self.means = means
        self.n_actions = means.shape[1]
        self.g = torch.Generator().manual_seed(seed)

    @property
    def n_tasks(self) -> int:
        return len(self.means)

    def pull(self, arms: Tensor) -> Tensor:
        arms = torch.as_tensor(arms, dtype=torch.long)
        if arms.shape != (self.n_tasks,) or arms.min() < 0 or arms.max() >= self.n_actions:
            raise CourseError(f"arms must be {self.n_tasks} ints in [0, {self.n_actions}), got shape {tuple(arms.shape)}")
        p = self.means.gather(1, arms[:, None]).squeeze(1)
        return (torch.rand(self.n_tasks, generator=self.g) < p).long()


def random_bandits(n_tasks: int, k: int = 5, seed: int = 0) -> Tensor:
    """Arm means [n_tasks, k], uniform in [0, 1]."""
    if n_tasks <= 0 or k < 2:
        raise CourseError(f"need n_tasks > 0 and k >= 2 arms, got {n_tasks}, {k}")
    return torch.rand(n_tasks, k, generator=torch.Generator().manual_seed(seed))
