"""The Control RL agent: a categorical policy over SAE features and a critic, both MLPs
on the token's residual vector, plus the pieces PPO needs.

Adaptive Feature Masking, as this course reads it (the paper never defined it):
**AFM-active** restricts the choice at each token to the SAE features that are active at
that token (encoder activation > 0), so the steering amplifies something the model is
already representing instead of injecting an arbitrary direction. `masked_categorical`
builds the distribution; the *same* function (with the same mask) gives the old log-prob
at rollout time and the new one in the PPO update, so the ratio compares like with like.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.core import CourseError

MASK_MODES = ("none", "active")   # "active" = AFM-active


def masked_categorical(logits: Tensor, mask: Tensor | None) -> torch.distributions.Categorical:
    """Categorical over features with logits [B, F]; features where mask [B, F] is False get
    probability exactly 0. A row with no allowed feature falls back to all features."""
    if mask is None:
        return torch.distributions.Categorical(logits=logits)
    if mask.shape != logits.shape:
        raise CourseError(f"mask must have the logits' shape {tuple(logits.shape)}, got {tuple(mask.shape)}")
    mask = mask.bool() | ~mask.bool().any(-1, keepdim=True)
    return torch.distributions.Categorical(logits=logits.masked_fill(~mask, float("-inf")))


def ppo_ratio(logits_new: Tensor, mask: Tensor | None, actions: Tensor, logp_old: Tensor) -> Tensor:
    """pi_new(a|s) / pi_old(a|s) for the actions taken, with pi_new the same masked categorical
    that produced logp_old at rollout time."""
    return torch.exp(masked_categorical(logits_new, mask).log_prob(actions) - logp_old)


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> nn.Sequential:
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.Tanh()]
        d = h
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class FeaturePolicy(nn.Module):
    """logits over the d_sae features from the residual vector [B, d_model] (layer-normed
    without parameters, so the scale of the residual stream does not matter)."""

    def __init__(self, d_model: int, d_sae: int, hidden: tuple[int, ...] = (128,)):
        super().__init__()
        self.d_model, self.d_sae = d_model, d_sae
        self.net = _mlp(d_model, hidden, d_sae)
        nn.init.zeros_(self.net[-1].weight)   # start uniform over the (allowed) features
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, resid: Tensor) -> Tensor:
        if resid.shape[-1] != self.d_model:
            raise CourseError(f"the policy expects residual vectors of size {self.d_model}, got {resid.shape[-1]}")
        return self.net(F.layer_norm(resid.float(), (self.d_model,)))


class Critic(nn.Module):
    """V(resid) [B]."""

    def __init__(self, d_model: int, hidden: tuple[int, ...] = (128,)):
        super().__init__()
        self.d_model = d_model
        self.net = _mlp(d_model, hidden, 1)

    def forward(self, resid: Tensor) -> Tensor:
        return self.net(F.layer_norm(resid.float(), (self.d_model,)))[..., 0]
