"""A hookable convolutional actor-critic: the policy (and Q-network) of the course's agents that see.

It takes the same flat observations as `HookedMLPPolicy` (`obs_dim = C * H * W`, so the
course's PPO and DQN train it unchanged) and views them as pictures `[B, C, H, W]`.
MinAtar's baseline network (Young and Tian 2019) is one 3x3 convolution with 16 channels
and a 128-unit layer; the default here keeps two padded 3x3 convolutions so that every
convolutional unit sits on a grid cell (position (y, x) of `convs.i.hook_post` looks at
the cells around (y, x)), which is what makes spatial patching readable.

Hook names: `hook_obs` ([B, C, H, W]), `convs.{i}.hook_pre` / `convs.{i}.hook_post`
([B, channels_i, H_i, W_i]), `layers.{j}.hook_pre` / `layers.{j}.hook_post` (the dense
layers), `hook_logits`, `hook_value`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError
from utils.models.mlp_policy import _HookedLayer


class _HookedConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_post(torch.relu(self.hook_pre(self.conv(x))))


class HookedConvPolicy(HookedRootModule):
    """Convolutions, then dense layers, then an actor (and optionally a critic) head."""

    def __init__(self, obs_shape: Sequence[int], n_actions: int, channels: Sequence[int] = (16, 16),
                 hidden: Sequence[int] = (64,), value_head: bool = True, kernels: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, padding: Sequence[int] | None = None):
        super().__init__()
        obs_shape = tuple(int(s) for s in obs_shape)
        if len(obs_shape) != 3 or min(obs_shape) <= 0 or n_actions <= 0 or not channels \
                or any(c <= 0 for c in channels) or any(h <= 0 for h in hidden):
            raise CourseError(f"HookedConvPolicy needs obs_shape (C, H, W) and positive sizes, got obs_shape={obs_shape}, "
                              f"n_actions={n_actions}, channels={tuple(channels)}, hidden={tuple(hidden)}")
        k = list(kernels or [3] * len(channels))
        s = list(strides or [1] * len(channels))
        p = list(padding if padding is not None else [kk // 2 for kk in k])
        if not len(k) == len(s) == len(p) == len(channels):
            raise CourseError("kernels, strides and padding need one entry per conv layer")
        self.obs_shape, self.n_actions = obs_shape, int(n_actions)
        self.obs_dim = obs_shape[0] * obs_shape[1] * obs_shape[2]
        self.channels, self.hidden = tuple(channels), tuple(hidden)
        self.arch = {"obs_shape": obs_shape, "n_actions": int(n_actions), "channels": tuple(channels),
                     "hidden": tuple(hidden), "value_head": value_head, "kernels": k, "strides": s, "padding": p}
        self.hook_obs = HookPoint()
        self.convs = nn.ModuleList()
        c = obs_shape[0]
        for c_out, kk, ss, pp in zip(channels, k, s, p):
            self.convs.append(_HookedConv(c, c_out, kk, ss, pp))
            c = c_out
        with torch.no_grad():
            flat = self._conv_stack(torch.zeros(1, *obs_shape)).shape[1]
        self.layers = nn.ModuleList()
        d = flat
        for h in hidden:
            self.layers.append(_HookedLayer(d, h))
            d = h
        self.actor = nn.Linear(d, n_actions)
        self.critic = nn.Linear(d, 1) if value_head else None
        self.hook_logits = HookPoint()
        self.hook_value = HookPoint()
        self.setup()

    def _conv_stack(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
        return x.flatten(1)

    def forward(self, obs: Tensor) -> Tensor:
        """Action logits (or Q-values) [B, n_actions] for observations [B, obs_dim] or [B, C, H, W]."""
        return self.forward_both(obs)[0]

    def forward_both(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        if obs.ndim == 2 and obs.shape[1] == self.obs_dim:
            obs = obs.reshape(-1, *self.obs_shape)
        if obs.ndim != 4 or tuple(obs.shape[1:]) != self.obs_shape:
            raise CourseError(f"observations must have shape [batch, {self.obs_dim}] or [batch, {', '.join(map(str, self.obs_shape))}], "
                              f"got {tuple(obs.shape)}")
        x = self._conv_stack(self.hook_obs(obs.float()))
        for layer in self.layers:
            x = layer(x)
        logits = self.hook_logits(self.actor(x))
        value = self.hook_value(self.critic(x).squeeze(-1)) if self.critic is not None else None
        return logits, value

    def layer_names(self) -> list[str]:
        """The post-activation hooks, input to output (the layers probed and patched)."""
        return (["hook_obs"] + [f"convs.{i}.hook_post" for i in range(len(self.convs))]
                + [f"layers.{j}.hook_post" for j in range(len(self.layers))] + ["hook_logits"])
