"""The objectives of the two training stages, written out (TRL computes the same inside its
trainers): the Bradley-Terry loss of the reward model, RLOO's leave-one-out advantages and the
KL-penalised reward of the policy."""
from __future__ import annotations

import torch
from torch import Tensor


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Mean over pairs of -log sigmoid(r_chosen - r_rejected) (TRL RewardTrainer's loss)."""
    return -torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()


def rloo_advantages(rewards: Tensor) -> Tensor:
    """[P, K] -> [P, K]: each sample's reward minus the mean reward of the OTHER K - 1 samples
    of the same prompt (the REINFORCE leave-one-out baseline)."""
    K = rewards.shape[-1]
    others = (rewards.sum(-1, keepdim=True) - rewards) / (K - 1)
    return rewards - others


def kl_penalised_reward(reward: Tensor, logp_policy: Tensor, logp_ref: Tensor, mask: Tensor, beta: float) -> Tensor:
    """[n]: reward - beta * sum over completion tokens (mask) of log pi(token) - log pi_ref(token),
    the sampled estimate of the KL to the reference model (RLOO subtracts it from the reward)."""
    kl = ((logp_policy - logp_ref) * mask).sum(-1)
    return reward - beta * kl
