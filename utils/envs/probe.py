"""Probe environments: tiny tasks whose optimal values are known exactly.

The "probe environment" technique for debugging RL code: each environment isolates one
piece of the algorithm, so a failure points at that piece.

| name                       | tests                         | optimal value / policy                      |
| -------------------------- | ----------------------------- | ------------------------------------------- |
| probe_constant             | the value loss at all         | V = 1 (one step, reward 1)                   |
| probe_obs_reward           | the value net reads its input | V(obs) = obs, obs in {-1, +1}               |
| probe_delayed              | discounting / bootstrapping   | V(first step) = gamma, V(second step) = 1   |
| probe_action_reward        | the policy gradient           | always action 1 (reward +1, else -1)        |
| probe_obs_action_reward    | policy and value together     | action 1 if obs = +1 else 0; V = 1          |

All follow the batched protocol of `utils.envs.base`, with auto-reset.
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError
from utils.envs.base import BatchedEnv, check_actions, check_n_envs

PROBE_ENVS = ("probe_constant", "probe_obs_reward", "probe_delayed", "probe_action_reward", "probe_obs_action_reward")


class ProbeEnv(BatchedEnv):
    def __init__(self, kind: str, n_envs: int, seed: int = 0):
        if kind not in PROBE_ENVS:
            raise CourseError(f"unknown probe environment {kind!r}: use one of {', '.join(PROBE_ENVS)}")
        self.kind, self.n_envs = kind, check_n_envs(n_envs)
        self.obs_dim = 2 if kind == "probe_delayed" else 1
        self.n_actions = 2 if kind in ("probe_action_reward", "probe_obs_action_reward") else 1
        self.g = torch.Generator().manual_seed(seed)
        self.t = torch.zeros(self.n_envs, dtype=torch.long)
        self.sign = torch.ones(self.n_envs)
        self.ep_return = torch.zeros(self.n_envs)

    def _new(self, mask: Tensor) -> None:
        self.t[mask] = 0
        self.ep_return[mask] = 0
        self.sign[mask] = torch.randint(0, 2, (int(mask.sum()),), generator=self.g).float() * 2 - 1

    def observe(self) -> Tensor:
        if self.kind == "probe_constant":
            return torch.ones(self.n_envs, 1)
        if self.kind == "probe_delayed":
            return torch.nn.functional.one_hot(self.t.clamp(max=1), 2).float()
        if self.kind == "probe_action_reward":
            return torch.zeros(self.n_envs, 1)
        return self.sign[:, None].clone()

    def reset(self, seed: int | None = None) -> Tensor:
        if seed is not None:
            self.g.manual_seed(seed)
        self._new(torch.ones(self.n_envs, dtype=torch.bool))
        return self.observe()

    def step(self, actions):
        actions = check_actions(actions, self.n_envs, self.n_actions)
        terminated = torch.ones(self.n_envs, dtype=torch.bool)
        if self.kind == "probe_constant":
            reward = torch.ones(self.n_envs)
        elif self.kind == "probe_obs_reward":
            reward = self.sign.clone()
        elif self.kind == "probe_delayed":
            terminated = self.t == 1
            reward = terminated.float()
        elif self.kind == "probe_action_reward":
            reward = (actions == 1).float() * 2 - 1
        else:
            reward = (actions == (self.sign > 0).long()).float() * 2 - 1
        self.t += 1
        self.ep_return += reward
        info = {"episode_return": self.ep_return.clone(), "episode_length": self.t.clone(),
                "success": terminated & (reward > 0), "final_obs": self.observe()}
        self._new(terminated)
        return self.observe(), reward, terminated, torch.zeros(self.n_envs, dtype=torch.bool), info
