"""An actor-critic with SEPARATE networks: the policy and the value function share nothing.

`HookedMLPPolicy` puts both heads on one trunk, so "what does the value function represent?"
and "what does the policy use?" are questions about the same units. Here each has its own
trunk, so they can be probed, compared and stitched over training (chapter 09, problem 8.20).
It has the interface `utils.rl.ppo.train_ppo` needs (`obs_dim`, `n_actions`, `forward`,
`forward_both`), so PPO trains it unchanged.

Hooks: `.actor` and `.critic` are each a `HookedMLPPolicy`, so cache, patch and probe them
separately with their own hook names (`layers.{i}.hook_post`, `hook_logits`; the critic's
`hook_logits` is the value, shape [batch, 1]). The wrapper itself is a plain `nn.Module`: one
HookedRootModule around two would rename their hooks ("actor.layers.0.hook_post"), and the
tools that read a sub-network's cache by its own names would no longer find them.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from utils.core import CourseError
from utils.models.mlp_policy import HookedMLPPolicy


class SeparateActorCritic(nn.Module):
    """Policy network `actor` and value network `critic`, two MLPs of the same hidden sizes."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, tuple(hidden)
        self.actor = HookedMLPPolicy(obs_dim, n_actions, hidden, value_head=False)
        self.critic = HookedMLPPolicy(obs_dim, 1, hidden, value_head=False)

    def forward(self, obs: Tensor) -> Tensor:
        """Action logits [batch, n_actions] (the policy network alone)."""
        return self.actor(obs)

    def forward_both(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(logits [batch, n_actions], value [batch])."""
        if obs.ndim != 2 or obs.shape[-1] != self.obs_dim:
            raise CourseError(f"observations must have shape [batch, {self.obs_dim}], got {tuple(obs.shape)}")
        return self.actor(obs), self.critic(obs).squeeze(-1)
