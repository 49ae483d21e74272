"""A tiny hookable conv actor-critic for grid observations (the maze, Monster Gridworld, CoinRun).

Observations arrive flat ([batch, C * H * W], the env protocol's `obs_dim`) and are reshaped
to `obs_shape`; two 3x3 convolutions (padding 1, so a channel stays a map of the grid) feed a
hidden layer shared by the actor and the critic. It has `obs_dim`, `n_actions` and
`forward_both`, so `utils.rl.ppo.train_ppo(cfg, policy=ConvPolicy(...), env=...)` trains it.

Hook names: `hook_obs` [b, C, H, W], `conv.0.hook_post`, `conv.1.hook_post` [b, channels, H, W]
(the maps channel patching and the cheese vector act on), `fc_hook_post` [b, hidden],
`hook_logits`, `hook_value`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_post(torch.relu(self.conv(x)))


class ConvPolicy(HookedRootModule):
    """Conv actor-critic: conv(channels[0]) -> conv(channels[1]) -> linear(hidden) -> actor, critic."""

    def __init__(self, obs_shape: Sequence[int], n_actions: int, channels: Sequence[int] = (16, 16), hidden: int = 64):
        super().__init__()
        obs_shape = tuple(int(s) for s in obs_shape)
        if len(obs_shape) != 3 or min(obs_shape) <= 0 or n_actions <= 0 or not channels or min(channels) <= 0 or hidden <= 0:
            raise CourseError(f"ConvPolicy needs obs_shape (C, H, W) and positive sizes, got obs_shape={obs_shape}, "
                              f"n_actions={n_actions}, channels={tuple(channels)}, hidden={hidden}")
        self.obs_shape, self.n_actions, self.channels, self.hidden = obs_shape, int(n_actions), tuple(channels), int(hidden)
        self.obs_dim = obs_shape[0] * obs_shape[1] * obs_shape[2]
        self.hook_obs = HookPoint()
        self.conv = nn.ModuleList()
        c = obs_shape[0]
        for ch in self.channels:
            self.conv.append(_ConvBlock(c, ch))
            c = ch
        self.fc = nn.Linear(c * obs_shape[1] * obs_shape[2], hidden)
        self.fc_hook_post = HookPoint()
        self.actor = nn.Linear(hidden, n_actions)
        self.critic = nn.Linear(hidden, 1)
        self.hook_logits = HookPoint()
        self.hook_value = HookPoint()
        self.setup()

    def config(self) -> dict:
        return {"obs_shape": list(self.obs_shape), "n_actions": self.n_actions, "channels": list(self.channels),
                "hidden": self.hidden}

    def forward(self, obs: Tensor) -> Tensor:
        """Action logits [batch, n_actions] for flat observations [batch, obs_dim]."""
        return self.forward_both(obs)[0]

    def forward_both(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        if obs.ndim != 2 or obs.shape[-1] != self.obs_dim:
            raise CourseError(f"observations must have shape [batch, {self.obs_dim}] (flat {self.obs_shape}), got {tuple(obs.shape)}")
        x = self.hook_obs(obs.float().reshape(-1, *self.obs_shape))
        for block in self.conv:
            x = block(x)
        h = self.fc_hook_post(torch.relu(self.fc(x.flatten(1))))
        return self.hook_logits(self.actor(h)), self.hook_value(self.critic(h).squeeze(-1))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
