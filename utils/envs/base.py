"""The one environment protocol of the course, and its Gymnasium adapter.

Every environment in `utils.envs` is *batched*: one object holds `n_envs` independent
copies and advances all of them with one call, on torch tensors:

    obs = env.reset(seed=None)                      # [n_envs, *obs_shape]
    obs, reward, terminated, truncated, info = env.step(actions)   # actions [n_envs]

- `reward` [n_envs] float; `terminated` / `truncated` [n_envs] bool (Gymnasium's meanings:
  the task ended / a time limit cut the episode).
- `info` is a dict of tensors with a leading [n_envs] dimension (possibly empty). Where an
  environment auto-resets finished copies, `obs` of a finished copy is the first
  observation of its next episode, and `info["final_obs"]` holds the last one of the episode
  that ended; `info["episode_return"]`, `info["episode_length"]` and `info["success"]` are
  valid where `terminated | truncated`.
- `reset(seed)` starts a new episode in every copy; with a seed it first re-seeds the
  environment's own generator (so two resets with one seed give the same states).
- Attributes: `n_envs`, `n_actions` and either `obs_dim` (flat float observations) or
  `n_obs` (observations are integer indices, e.g. a cell of a grid).

Action constants (`LEFT`, `UP`, ...) are defined once, in the environment's own module.

`GymnasiumEnv` wraps any batched environment built with `n_envs=1` as a single
`gymnasium.Env` (what Stable-Baselines3 and other gym-stepped libraries expect).

Adding an environment: write one module here with a class that subclasses `BatchedEnv`,
validates its actions with `check_actions`, and add its name to `make_env` in
`utils/envs/__init__.py` if PPO/DQN should build it by name.
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from utils.core import CourseError

Step = tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]


class BatchedEnv:
    """Base class documenting the protocol; subclasses implement `reset` and `step`."""

    n_envs: int
    n_actions: int

    def reset(self, seed: int | None = None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def step(self, actions) -> Step:  # pragma: no cover - interface
        raise NotImplementedError


def check_n_envs(n_envs) -> int:
    if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs <= 0:
        raise CourseError(f"n_envs must be a positive int, got {n_envs!r}")
    return int(n_envs)


def check_actions(actions, n_envs: int, n_actions: int, names: str | None = None) -> Tensor:
    """Actions as a long tensor [n_envs]; a one-line CourseError for a wrong shape or range."""
    actions = actions if isinstance(actions, Tensor) else torch.as_tensor(np.asarray(actions))
    if actions.numel() != n_envs:
        raise CourseError(f"expected {n_envs} actions, got shape {tuple(actions.shape)}")
    actions = actions.detach().cpu().reshape(-1).long()
    if len(actions) and (actions.min() < 0 or actions.max() >= n_actions):
        raise CourseError(f"actions must be ints in [0, {n_actions})" + (f": {names}" if names else ""))
    return actions


class GymnasiumEnv(gym.Env):
    """One copy of a batched course environment as a `gymnasium.Env`.

    `make(n_envs=1, seed=...)` builds the batched environment (it must have `obs_dim`).
    `info["is_success"]` is set on the last step of an episode from the batched info's
    `success` when the environment reports one."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, make: Callable[..., Any], render_mode: str | None = None, **kwargs):
        self.env = make(n_envs=1, auto_reset=False, **kwargs)
        if not hasattr(self.env, "obs_dim"):
            raise CourseError(f"{type(self.env).__name__} has index observations; the Gymnasium adapter needs obs_dim")
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.env.obs_dim,), np.float32)
        self.action_space = gym.spaces.Discrete(self.env.n_actions)
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.env.reset(seed=seed)[0].numpy(), {}

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(torch.tensor([int(action)]))
        out = {}
        if (term[0] or trunc[0]) and "success" in info:
            out["is_success"] = bool(info["success"][0])
        return obs[0].numpy(), float(reward[0]), bool(term[0]), bool(trunc[0]), out

    def render(self):
        return self.env.render_rgb(0)
