"""Bernoulli bandits, batched over tasks (one vector of arm means per row).

One episode is one pull; the observation is constant (0). Follows the protocol of
`utils.envs.base` with index observations (`n_obs = 1`); every step terminates.
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, Step, check_actions


class BernoulliBandit(BatchedEnv):
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

    @property
    def n_envs(self) -> int:
        return len(self.means)

    def reset(self, seed: int | None = None) -> Tensor:
        if seed is not None:
            self.g.manual_seed(seed)
        return torch.zeros(self.n_tasks, dtype=torch.long)

    def step(self, arms) -> Step:
        """Pull one arm per task: (obs zeros, rewards [n] in {0, 1} (long), terminated (all), truncated (none), {})."""
        arms = check_actions(arms, self.n_tasks, self.n_actions, "one arm index per task")
        p = self.means.gather(1, arms[:, None]).squeeze(1)
        reward = (torch.rand(self.n_tasks, generator=self.g) < p).long()
        done = torch.ones(self.n_tasks, dtype=torch.bool)
        return torch.zeros(self.n_tasks, dtype=torch.long), reward, done, ~done, {}


def random_bandits(n_tasks: int, k: int = 5, seed: int = 0) -> Tensor:
    """Arm means [n_tasks, k], uniform in [0, 1]."""
    if n_tasks <= 0 or k < 2:
        raise CourseError(f"need n_tasks > 0 and k >= 2 arms, got {n_tasks}, {k}")
    return torch.rand(n_tasks, k, generator=torch.Generator().manual_seed(seed))
