"""Attention analysis: how much attention mass heads put on chosen keys, beside chance.

A pattern is [batch, heads, query, key] (e.g. `cache["blocks.{l}.attn.hook_pattern"]`);
masks say which keys are interesting (keys that show a reward, earlier occurrences of the
same state, ...) and which queries to average over.
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.core import CourseError


def attention_to_reward(pattern: Tensor, rewarded: Tensor, query_mask: Tensor | None = None) -> Tensor:
    """Mean attention mass per head [H] that queries put on rewarded keys.

    pattern [B, H, Q, K] (rows sum to 1 over causal keys); rewarded [B, K] bool;
    query_mask [B, Q] bool selects the queries to average over (default: all)."""
    if pattern.ndim != 4 or rewarded.shape != (pattern.shape[0], pattern.shape[3]):
        raise CourseError(f"need pattern [B, H, Q, K] and rewarded [B, K], got {tuple(pattern.shape)} and {tuple(rewarded.shape)}")
    if query_mask is None:
        query_mask = torch.ones(pattern.shape[0], pattern.shape[2], dtype=torch.bool)
    if query_mask.shape != (pattern.shape[0], pattern.shape[2]):
        raise CourseError(f"query_mask must be [B, Q] = {(pattern.shape[0], pattern.shape[2])}, got {tuple(query_mask.shape)}")
    mass = (pattern * rewarded[:, None, None, :].to(pattern.dtype)).sum(-1)  # [B, H, Q]
    w = query_mask[:, None, :].to(pattern.dtype)
    return (mass * w).sum((0, 2)) / w.sum((0, 2)).clamp_min(1)


def uniform_baseline(keys: Tensor, query_mask: Tensor) -> float:
    """The mass a uniform causal head would put on `keys` [B, K] from the queries in query_mask [B, Q]."""
    b, q = query_mask.shape
    causal = torch.tril(torch.ones(q, keys.shape[1]))
    frac = (causal[None] * keys[:, None, :].float()).sum(-1) / causal.sum(-1)  # [B, Q]
    return float((frac * query_mask).sum() / query_mask.sum().clamp_min(1))
