"""A memory corridor: a cue seen at the first step decides which arm pays at the end.

Cells 0..length-1; the agent starts in cell 0, where it observes a cue (0 or 1); later cells
show only the cell. Actions: LEFT, RIGHT, FORWARD. FORWARD moves one cell (and does nothing at
the junction, the last cell); LEFT/RIGHT do nothing in the corridor, and at the junction end
the episode: reward +1 if the arm matches the cue (LEFT for cue 0, RIGHT for cue 1), -1
otherwise. `max_steps` cuts an episode with return 0. So the return is -1, 0 or +1, and
getting +1 needs the cue REMEMBERED from the first step (the task of a decision transformer
that must attend back to it).

Observations are indices [n_envs] (n_obs = length + 1): the cue cell is state 0 or 1 (its cue),
cell k >= 1 is state k + 1. Batched in torch (see `utils.envs.base`), WITHOUT auto-reset: a
finished copy stays done until `reset`. `reset(seed, cues=...)` can fix every copy's cue.
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, Step, check_actions, check_n_envs

LEFT, RIGHT, FORWARD = 0, 1, 2
ACTION_NAMES = ("left", "right", "forward")


class MemoryCorridor(BatchedEnv):
    n_actions = 3

    def __init__(self, n_envs: int, length: int = 4, max_steps: int = 8, seed: int = 0):
        self.n_envs = check_n_envs(n_envs)
        if length < 2 or max_steps < length:
            raise CourseError(f"need length >= 2 and max_steps >= length, got length={length}, max_steps={max_steps}")
        self.length, self.max_steps = length, max_steps
        self.n_obs = length + 1
        self.junction_state = length  # the state index of the last cell
        self.g = torch.Generator().manual_seed(seed)
        self.cell = torch.zeros(self.n_envs, dtype=torch.long)
        self.cue = torch.zeros(self.n_envs, dtype=torch.long)
        self.t = torch.zeros(self.n_envs, dtype=torch.long)
        self.done = torch.zeros(self.n_envs, dtype=torch.bool)

    def observe(self) -> Tensor:
        return torch.where(self.cell == 0, self.cue, self.cell + 1)

    def reset(self, seed: int | None = None, cues: Tensor | None = None) -> Tensor:
        if seed is not None:
            self.g.manual_seed(seed)
        drawn = torch.randint(0, 2, (self.n_envs,), generator=self.g)
        self.cue = drawn if cues is None else torch.as_tensor(cues, dtype=torch.long).reshape(-1).clone()
        if self.cue.shape != (self.n_envs,) or not ((self.cue == 0) | (self.cue == 1)).all():
            raise CourseError(f"cues must be {self.n_envs} values in {{0, 1}}")
        self.cell = torch.zeros(self.n_envs, dtype=torch.long)
        self.t = torch.zeros(self.n_envs, dtype=torch.long)
        self.done = torch.zeros(self.n_envs, dtype=torch.bool)
        return self.observe()

    def step(self, actions) -> Step:
        a = check_actions(actions, self.n_envs, self.n_actions, "LEFT=0, RIGHT=1, FORWARD=2")
        live = ~self.done
        at_junction = self.cell == self.length - 1
        self.cell = torch.where(live & (a == FORWARD) & ~at_junction, self.cell + 1, self.cell)
        arm = live & at_junction & (a != FORWARD)
        reward = torch.where(arm, torch.where(a == self.cue, 1.0, -1.0), torch.zeros(self.n_envs))
        self.t = self.t + live.long()
        terminated = arm
        truncated = live & ~arm & (self.t >= self.max_steps)
        self.done = self.done | terminated | truncated
        info = {"success": arm & (reward > 0), "episode_length": self.t.clone()}
        return self.observe(), reward, terminated, truncated, info


def noisy_expert_policy(env: MemoryCorridor, eps: Tensor, g: torch.Generator):
    """policy(obs) for each copy: with probability eps[i] a random action, else FORWARD in the
    corridor and the cued arm at the junction (the expert reads env.cue: it never forgets)."""
    eps = torch.as_tensor(eps, dtype=torch.float).reshape(-1)

    def policy(obs: Tensor) -> Tensor:
        expert = torch.where(env.cell == env.length - 1, env.cue, torch.full_like(env.cue, FORWARD))
        rand = torch.randint(0, 3, expert.shape, generator=g)
        return torch.where(torch.rand(expert.shape, generator=g) < eps, rand, expert)

    return policy
