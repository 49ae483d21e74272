"""Tabular Q-learning, batched over independent tasks (one Q-table per row).

`q_update` is the one-step update Q(s, a) += alpha (r + gamma max_a' Q(s', a') - Q(s, a));
`eps_greedy` picks actions. Chapter 02 uses them to produce the learning histories that
Algorithm Distillation imitates (`utils.ad.sources.q_learning_histories`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from utils.core import CourseError, check_fields


@dataclass
class QLearningConfig:
    n_episodes: int = 60
    alpha: float = 0.5          # step size
    gamma: float = 0.9
    q_init: float = 1.0         # optimistic initial value: drives systematic exploration
    eps_start: float = 0.3      # epsilon-greedy, decayed geometrically per episode
    eps_end: float = 0.02
    eps_decay: float = 0.9
    replay_sweeps: int = 1      # backward sweeps over the finished episode (propagates reward in one episode)

    def validate(self) -> None:
        check_fields(self, positive_int=("n_episodes",), positive=("alpha",), unit=("alpha", "gamma", "eps_start", "eps_end",
                     "eps_decay"), finite=("q_init",), nonneg_int=("replay_sweeps",))
        if self.gamma >= 1:
            raise CourseError(f"QLearningConfig.gamma must be below 1 (tabular values would not converge), got {self.gamma}")
        if not 0 <= self.eps_end <= self.eps_start <= 1:
            raise CourseError(f"need 0 <= eps_end <= eps_start <= 1, got {self.eps_start}, {self.eps_end}")


def eps_greedy(q_s: Tensor, eps: float | Tensor, g: torch.Generator) -> Tensor:
    """Epsilon-greedy actions [n] from Q-values [n, n_actions], ties broken at random."""
    n, a = q_s.shape
    greedy = (q_s + 1e-6 * torch.rand(n, a, generator=g)).argmax(-1)  # random tie-break
    rand = torch.randint(0, a, (n,), generator=g)
    eps = torch.as_tensor(eps, dtype=torch.float).expand(n)
    return torch.where(torch.rand(n, generator=g) < eps, rand, greedy)


def q_update(q: Tensor, s: Tensor, a: Tensor, r: Tensor, s2: Tensor, alpha: float, gamma: float) -> None:
    """In place, for every task i: Q[i, s_i, a_i] += alpha (r_i + gamma max_a' Q[i, s2_i, a'] - Q[i, s_i, a_i]).
    q: [n, n_states, n_actions]; s, a, r, s2: [n]."""
    ar = torch.arange(len(q))
    q[ar, s, a] += alpha * (r + gamma * q[ar, s2].max(-1).values - q[ar, s, a])
