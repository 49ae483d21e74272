"""An actor-critic with SEPARATE networks: the policy and the value function share nothing.

`HookedMLPPolicy` puts both heads on one trunk, so "what does the value function represent?"
and "what does the policy use?" are questions about the same units. Here each has its own
trunk, so they can be probed, compared and stitched over training (chapter 09, problem 8.20).
It has the interface `utils.rl.ppo.train_ppo` needs (`obs_dim`, `n_actions`, `forward`,
`forward_both`), so PPO trains it unchanged.

Hook names: `actor.hook_obs`, `actor.layers.{i}.hook_post`, `actor.hook_logits` for the policy;
`critic.layers.{i}.hook_post`, `critic.hook_logits` (the value, shape [batch, 1]) for the value
network.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor
from transformer_lens import HookedRootModule

from utils.core import CourseError
from utils.models.mlp_policy import HookedMLPPolicy


class SeparateActorCritic(HookedRootModule):
    """Policy network `actor` and value network `critic`, two MLPs of the same hidden sizes."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, tuple(hidden)
        self.actor = HookedMLPPolicy(obs_dim, n_actions, hidden, value_head=False)
        self.critic = HookedMLPPolicy(obs_dim, 1, hidden, value_head=False)
        self.setup()

    def forward(self, obs: Tensor) -> Tensor:
        """Action logits [batch, n_actions] (the policy network alone)."""
        return self.actor(obs)

    def forward_both(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(logits [batch, n_actions], value [batch])."""
        if obs.ndim != 2 or obs.shape[-1] != self.obs_dim:
            raise CourseError(f"observations must have shape [batch, {self.obs_dim}], got {tuple(obs.shape)}")
        return self.actor(obs), self.critic(obs).squeeze(-1)
