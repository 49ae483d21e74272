"""A hookable actor-critic MLP, the policy and Q-network of the course's small agents.

The pattern for any small network: subclass `HookedRootModule`, put a `HookPoint` after
every activation you may want to read or change, and call `self.setup()` at the end of
`__init__`. Then `run_with_cache`, `run_with_hooks` and every tool in `utils.interp` work as
they do for a `HookedTransformer`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from utils.core import CourseError


class HookedMLPPolicy(HookedRootModule):
    """An actor-critic MLP whose every layer is hookable.

    Hook names: `hook_obs` (the input), `layers.{i}.hook_pre` (before the nonlinearity),
    `layers.{i}.hook_post` (after it: the "units" of layer i), `hook_logits` (action
    logits) and `hook_value` (the critic's value, shape [batch]).
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), value_head: bool = True):
        super().__init__()
        if obs_dim <= 0 or n_actions <= 0 or any(h <= 0 for h in hidden):
            raise CourseError(f"HookedMLPPolicy needs positive sizes, got obs_dim={obs_dim}, n_actions={n_actions}, hidden={tuple(hidden)}")
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, tuple(hidden)
        self.hook_obs = HookPoint()
        self.layers = nn.ModuleList()
        d = obs_dim
        for h in hidden:
            self.layers.append(_HookedLayer(d, h))
            d = h
        self.actor = nn.Linear(d, n_actions)
        self.critic = nn.Linear(d, 1) if value_head else None
        self.hook_logits = HookPoint()
        self.hook_value = HookPoint()
        self.setup()

    def forward(self, obs: Tensor) -> Tensor:
        """Action logits [batch, n_actions] for observations [batch, obs_dim]."""
        return self.forward_both(obs)[0]

    def forward_both(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        if obs.ndim != 2 or obs.shape[-1] != self.obs_dim:
            raise CourseError(f"observations must have shape [batch, {self.obs_dim}], got {tuple(obs.shape)}")
        x = self.hook_obs(obs.float())
        for layer in self.layers:
            x = layer(x)
        logits = self.hook_logits(self.actor(x))
        value = self.hook_value(self.critic(x).squeeze(-1)) if self.critic is not None else None
        return logits, value


class _HookedLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_post(torch.relu(self.hook_pre(self.linear(x))))


