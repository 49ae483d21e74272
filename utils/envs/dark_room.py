"""Dark Room, the Algorithm Distillation chapter's gridworld, batched over tasks.

The environment holds a batch of *tasks* (one goal cell per row) and advances all of them
with one `step` (the protocol of `utils.envs.base`; observations are cell indices, so it
has `n_obs` instead of `obs_dim`, and episodes end by time limit only, without auto-reset).

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
from utils.envs.base import BatchedEnv, Step, check_actions

STAY, UP, DOWN, LEFT, RIGHT = range(5)
MOVES = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
ACTION_NAMES = ("stay", "up", "down", "left", "right")


class DarkRoom(BatchedEnv):
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

    @property
    def n_envs(self) -> int:
        return len(self.goals)

    def reset(self, seed: int | None = None) -> Tensor:  # noqa: ARG002 - deterministic dynamics
        """Start a new episode in every task; returns the observations [n_tasks]."""
        self.pos = torch.full((self.n_tasks,), self.start, dtype=torch.long)
        self.t = 0
        return self.pos.clone()

    def step(self, actions) -> Step:
        """Move every task's agent; returns (observations [n], rewards [n] in {0, 1} (long),
        terminated (never), truncated (at episode_len), info {})."""
        actions = check_actions(actions, self.n_tasks, self.n_actions, "0 stay, 1 up, 2 down, 3 left, 4 right")
        self.pos = next_cell(self.pos, actions, self.size)
        self.t += 1
        truncated = torch.full((self.n_tasks,), self.t >= self.episode_len)
        return self.pos.clone(), (self.pos == self.goals).long(), torch.zeros_like(truncated), truncated, {}

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


