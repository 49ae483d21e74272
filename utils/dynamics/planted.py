"""A planted vestigial organ: the positive control of chapter 09's vestigial-unit count.

`HintedMLPPolicy` is chapter 01's MLP with one extra input, a HINT computed from the colour-goal
observation. While `phase == "hint"` it is the answer to the left/right question (+1 when the goal
tile is left of the agent, -1 when right, 0 in the same column), so early in training the network
comes to lean on the units that read it. Switched to `phase == "noise"` (half-way through training,
by a `train_ppo` callback), the hint becomes a fixed hash of the layout: it still varies from state
to state, so the units that read it keep firing, but it says nothing about where to go, so RL has to
stop using them. Those units are vestigial by construction: a vestigial-unit rule that cannot find
them cannot be trusted when it finds none in an ordinary run.

Hook names are those of HookedMLPPolicy (`layers.{i}.hook_post`, ...), so every chapter-09 metric
runs on it unchanged; it takes the ordinary 77-value observation (the hint is computed inside).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from utils.core import CourseError
from utils.models.mlp_policy import HookedMLPPolicy

PHASES = ("hint", "noise")


def goal_hint(obs: Tensor, size: int = 5) -> Tensor:
    """[n] in {-1, 0, 1}: +1 when the goal tile (the tile of the cued colour) is left of the agent,
    -1 when right of it, 0 in the same column. obs [n, 3 * size**2 + 2] (colour-goal layout)."""
    cells = size * size
    agent = obs[:, :cells].argmax(-1)
    red, blue = obs[:, cells:2 * cells].argmax(-1), obs[:, 2 * cells:3 * cells].argmax(-1)
    goal = torch.where(obs[:, 3 * cells] > 0.5, red, blue)
    return torch.sign(agent % size - goal % size).float()


def layout_hash(obs: Tensor, size: int = 5) -> Tensor:
    """[n] in {-1, 0, 1}: a fixed hash of the layout (agent, both tiles, cue) that varies from state to
    state but carries no usable information about the goal's direction."""
    cells = size * size
    a, r, b = (obs[:, k * cells:(k + 1) * cells].argmax(-1) for k in range(3))
    cue = (obs[:, 3 * cells] > 0.5).long()
    return ((a * 5 + r * 11 + b * 7 + cue * 3) % 3 - 1).float()


class HintedMLPPolicy(HookedMLPPolicy):
    """HookedMLPPolicy over the observation plus one hint input (see the module docstring)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), size: int = 5):
        super().__init__(obs_dim + 1, n_actions, hidden)
        self.obs_dim, self.size, self.phase = obs_dim, size, "hint"

    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise CourseError(f"phase must be one of {PHASES}, got {phase!r}")
        self.phase = phase

    def forward_both(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        if obs.ndim != 2 or obs.shape[-1] != self.obs_dim:
            raise CourseError(f"observations must have shape [batch, {self.obs_dim}], got {tuple(obs.shape)}")
        obs = obs.float()
        hint = goal_hint(obs, self.size) if self.phase == "hint" else layout_hash(obs, self.size)
        x = self.hook_obs(torch.cat([obs, hint[:, None]], -1))
        for layer in self.layers:
            x = layer(x)
        logits = self.hook_logits(self.actor(x))
        value = self.hook_value(self.critic(x).squeeze(-1)) if self.critic is not None else None
        return logits, value


class PhaseSwitch:
    """A `train_ppo` callback: `policy.set_phase("noise")` once `n_updates >= switch_at`, then the
    wrapped callback (e.g. a CheckpointRecorder) sees the network."""

    def __init__(self, switch_at: int, then=None):
        self.switch_at, self.then = int(switch_at), then

    def __call__(self, n_updates: int, policy, log: dict) -> None:
        if n_updates >= self.switch_at:
            policy.set_phase("noise")
        if self.then is not None:
            self.then(n_updates, policy, log)
